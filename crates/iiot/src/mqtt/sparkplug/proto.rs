//! The Sparkplug B payload (`sparkplug_b.proto` of the Eclipse Tahu project, Sparkplug 3.0),
//! written out for `prost` by hand: only the messages and fields we read or write. Fields left
//! out (metadata, property sets, data sets, templates, extensions) are skipped by the decoder
//! as unknown fields; a metric carrying only those has no value we use.

/// `Payload`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Sender's time of the message, Unix ms.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The edge node's sequence number, 0–255 (absent on NDEATH and on commands).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Optional UUID of the payload's schema.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Optional opaque body.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The metric's name (always in BIRTH; in DATA it may be replaced by the alias).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The alias BIRTH declared for it.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Time of the value, Unix ms.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// The [`datatype`] (always in BIRTH).
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// A historical value (not the current one).
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null.
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<Value>,
}

/// `Payload.Metric.value`: the scalar variants.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8/16/32 (two's complement in 32 bits) and UInt8/16/32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64 and DateTime.
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File.
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Sparkplug datatype numbers (the ones whose value we read).
pub mod datatype {
    /// Int8.
    pub const INT8: u32 = 1;
    /// Int16.
    pub const INT16: u32 = 2;
    /// Int32.
    pub const INT32: u32 = 3;
    /// Int64.
    pub const INT64: u32 = 4;
    /// Double.
    pub const DOUBLE: u32 = 10;
    /// Boolean.
    pub const BOOLEAN: u32 = 11;
}

impl Metric {
    /// The value as a number, read by `datatype` (signed integers are two's complement):
    /// booleans are 0 or 1; strings, bytes, nulls and the rest are `None`.
    pub fn number(&self, datatype: u32) -> Option<f64> {
        if self.is_null == Some(true) {
            return None;
        }
        Some(match self.value.as_ref()? {
            Value::IntValue(v) => match datatype {
                // Truncation is the encoding: the low bits carry the signed value.
                datatype::INT8 => f64::from(*v as u8 as i8),
                datatype::INT16 => f64::from(*v as u16 as i16),
                datatype::INT32 => f64::from(*v as i32),
                _ => f64::from(*v),
            },
            Value::LongValue(v) if datatype == datatype::INT64 => *v as i64 as f64,
            Value::LongValue(v) => *v as f64,
            Value::FloatValue(v) => f64::from(*v),
            Value::DoubleValue(v) => *v,
            Value::BooleanValue(b) => f64::from(u8::from(*b)),
            Value::StringValue(_) | Value::BytesValue(_) => return None,
        })
    }
}

/// The NCMD payload asking an edge node to publish its BIRTH certificates again.
pub fn rebirth_request(now_ms: i64) -> Payload {
    Payload {
        timestamp: Some(now_ms.max(0) as u64),
        metrics: vec![Metric {
            name: Some("Node Control/Rebirth".into()),
            timestamp: Some(now_ms.max(0) as u64),
            datatype: Some(datatype::BOOLEAN),
            value: Some(Value::BooleanValue(true)),
            ..Metric::default()
        }],
        ..Payload::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn signed_integers_read_back_from_their_encoding() {
        let m = |v| Metric {
            value: Some(v),
            ..Metric::default()
        };
        assert_eq!(
            m(Value::IntValue(-5i8 as u8 as u32)).number(datatype::INT8),
            Some(-5.0)
        );
        assert_eq!(
            m(Value::IntValue(-5i32 as u32)).number(datatype::INT32),
            Some(-5.0)
        );
        assert_eq!(m(Value::IntValue(250)).number(5), Some(250.0));
        assert_eq!(
            m(Value::LongValue(-7i64 as u64)).number(datatype::INT64),
            Some(-7.0)
        );
        assert_eq!(
            m(Value::BooleanValue(true)).number(datatype::BOOLEAN),
            Some(1.0)
        );
        assert_eq!(m(Value::StringValue("x".into())).number(12), None);
    }

    #[test]
    fn the_rebirth_request_round_trips() {
        let bytes = rebirth_request(1_700_000_000_000).encode_to_vec();
        let back = Payload::decode(&bytes[..]).expect("test input is valid");
        assert_eq!(
            back.metrics[0].name.as_deref(),
            Some("Node Control/Rebirth")
        );
        assert_eq!(back.metrics[0].value, Some(Value::BooleanValue(true)));
    }
}
