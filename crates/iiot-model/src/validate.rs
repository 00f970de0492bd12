//! Stateless validation (SPEC §4): bytes in, a checked [`Reading`] or a typed [`Invalid`] out.
//!
//! Stateful checks (duplicate `seq`) live with the processor, which reports them with the same
//! [`InvalidReason`] type so every dead letter carries one vocabulary of reasons.

use std::fmt;

use crate::reading::{Parameter, Reading, SwitchState};

/// Limits applied by [`decode`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest accepted message, in bytes (SPEC §4: 64 KiB).
    pub max_message_bytes: usize,
    /// How far in the future an event timestamp may be, in milliseconds (SPEC §4: 5 minutes).
    pub max_future_ms: i64,
    /// Earliest accepted event timestamp, Unix ms (older values are clock bugs, not history).
    pub min_timestamp_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_future_ms: 5 * 60 * 1000,
            // 2000-01-01T00:00:00Z
            min_timestamp_ms: 946_684_800_000,
        }
    }
}

/// Why a message was rejected. The snake_case names are the `reason` of dead letters and of the
/// `reason` metric label: a closed set, so metric cardinality stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidReason {
    /// Larger than [`Limits::max_message_bytes`].
    Oversize,
    /// Not JSON at all (syntax error, truncated, not UTF-8).
    MalformedJson,
    /// JSON, but a field is missing or has the wrong type or an unknown enum value.
    Schema,
    /// `NaN` or `Infinity` where a number was expected.
    NonFinite,
    /// A value outside its plausible range.
    OutOfRange,
    /// A sensor reports a unit other than the one it must use.
    BadUnit,
    /// The device id is empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    BadDeviceId,
    /// The event time is more than the allowed skew in the future.
    FutureTimestamp,
    /// The event time is implausibly old (before [`Limits::min_timestamp_ms`]).
    StaleTimestamp,
    /// The switch's `value` and `status` disagree.
    Inconsistent,
    /// The same (device, seq) was already processed.
    DuplicateSeq,
    /// A new device id arrived while the processor already tracks its maximum number of devices.
    DeviceLimit,
    /// The message's key (the partitioning key, which must be the device id) differs from the
    /// payload's `device_id`: its device's readings could be split across partitions.
    KeyMismatch,
    /// A header of the record (Kafka) whose key or value is not UTF-8: iiot's input carries
    /// text only, so a record that does not is refused whole rather than half read.
    BadHeader,
    /// The device segment of the MQTT topic a reading arrived on names another device than
    /// the reading's `device_id` (judged by the MQTT source, before the input topic).
    TopicMismatch,
    /// A Sparkplug B payload or topic that cannot be read (not protobuf, not a Sparkplug
    /// topic, a metric without name or alias).
    SparkplugMalformed,
    /// A Sparkplug B DATA (or DEATH) from an edge node or device whose BIRTH was not seen.
    SparkplugBeforeBirth,
    /// A Sparkplug B DATA with a metric alias its BIRTH did not declare.
    SparkplugUnknownAlias,
    /// A Sparkplug B BIRTH of a new node or device while the most are tracked already.
    SparkplugLimit,
}

impl InvalidReason {
    /// Every reason, for pre-registering counters.
    pub const ALL: [InvalidReason; 19] = [
        InvalidReason::Oversize,
        InvalidReason::MalformedJson,
        InvalidReason::Schema,
        InvalidReason::NonFinite,
        InvalidReason::OutOfRange,
        InvalidReason::BadUnit,
        InvalidReason::BadDeviceId,
        InvalidReason::FutureTimestamp,
        InvalidReason::StaleTimestamp,
        InvalidReason::Inconsistent,
        InvalidReason::DuplicateSeq,
        InvalidReason::DeviceLimit,
        InvalidReason::KeyMismatch,
        InvalidReason::BadHeader,
        InvalidReason::TopicMismatch,
        InvalidReason::SparkplugMalformed,
        InvalidReason::SparkplugBeforeBirth,
        InvalidReason::SparkplugUnknownAlias,
        InvalidReason::SparkplugLimit,
    ];

    /// The snake_case name used in dead letters, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Oversize => "oversize",
            InvalidReason::MalformedJson => "malformed_json",
            InvalidReason::Schema => "schema",
            InvalidReason::NonFinite => "non_finite",
            InvalidReason::OutOfRange => "out_of_range",
            InvalidReason::BadUnit => "bad_unit",
            InvalidReason::BadDeviceId => "bad_device_id",
            InvalidReason::FutureTimestamp => "future_timestamp",
            InvalidReason::StaleTimestamp => "stale_timestamp",
            InvalidReason::Inconsistent => "inconsistent",
            InvalidReason::DuplicateSeq => "duplicate_seq",
            InvalidReason::DeviceLimit => "device_limit",
            InvalidReason::KeyMismatch => "key_mismatch",
            InvalidReason::BadHeader => "bad_header",
            InvalidReason::TopicMismatch => "topic_mismatch",
            InvalidReason::SparkplugMalformed => "sparkplug_malformed",
            InvalidReason::SparkplugBeforeBirth => "sparkplug_before_birth",
            InvalidReason::SparkplugUnknownAlias => "sparkplug_unknown_alias",
            InvalidReason::SparkplugLimit => "sparkplug_limit",
        }
    }

    /// Whether the MQTT source judges this reason itself, before the input topic (so the
    /// message is never consumed from it).
    pub fn judged_at_source(self) -> bool {
        matches!(
            self,
            InvalidReason::TopicMismatch
                | InvalidReason::SparkplugMalformed
                | InvalidReason::SparkplugBeforeBirth
                | InvalidReason::SparkplugUnknownAlias
                | InvalidReason::SparkplugLimit
        )
    }

    /// Position in [`InvalidReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the reason (for counting) and a human-readable detail (for the dead letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The category.
    pub reason: InvalidReason,
    /// What exactly was wrong, e.g. `sensors.temperature.value 999 outside [-60, 250]`.
    pub detail: String,
}

impl Invalid {
    /// A rejection with a detail.
    pub fn new(reason: InvalidReason, detail: impl Into<String>) -> Self {
        Invalid {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Invalid {}

/// Whether `id` is an acceptable device id: 1–64 characters of `[A-Za-z0-9_.:-]`.
pub fn device_id_is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Parses and checks one message. `now_ms` is the clock it is judged by (Unix ms), for the
/// future-timestamp check: the receiver's, or the message's broker timestamp capped at the
/// receiver's (see `iiot_transport::Message::judged_at`). Never panics, whatever the bytes.
pub fn decode<'a>(bytes: &'a [u8], now_ms: i64, limits: &Limits) -> Result<Reading<'a>, Invalid> {
    decode_text(bytes, now_ms, limits).map(|(reading, _)| reading)
}

/// [`decode`], also returning the message as the text it was checked to be, so a caller that
/// forwards it (the WebSocket hub embeds it in its frames) need not check its UTF-8 again.
pub fn decode_text<'a>(
    bytes: &'a [u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<(Reading<'a>, &'a str), Invalid> {
    if bytes.len() > limits.max_message_bytes {
        return Err(Invalid::new(
            InvalidReason::Oversize,
            format!(
                "message is {} bytes, limit {}",
                bytes.len(),
                limits.max_message_bytes
            ),
        ));
    }
    // One UTF-8 check of the whole message is cheaper than serde_json's check of every string
    // (keys included) when it reads from bytes; from `&str` it skips those.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Invalid::new(
            InvalidReason::MalformedJson,
            format!("not UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let reading: Reading<'_> = serde_json::from_str(text).map_err(|e| classify(bytes, &e))?;
    check(&reading, now_ms, limits)?;
    Ok((reading, text))
}

fn classify(bytes: &[u8], e: &serde_json::Error) -> Invalid {
    use serde_json::error::Category;
    let reason = match e.classify() {
        Category::Data => InvalidReason::Schema,
        // serde_json rejects NaN/Infinity literals (and 1e999) as syntax errors; name them.
        Category::Syntax if looks_non_finite(bytes) => InvalidReason::NonFinite,
        Category::Syntax | Category::Eof | Category::Io => InvalidReason::MalformedJson,
    };
    Invalid::new(reason, e.to_string())
}

fn looks_non_finite(bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    contains(b"NaN") || contains(b"Infinity") || contains(b"e999") || contains(b"E999")
}

fn check(r: &Reading<'_>, now_ms: i64, limits: &Limits) -> Result<(), Invalid> {
    if !device_id_is_valid(&r.device_id) {
        return Err(Invalid::new(
            InvalidReason::BadDeviceId,
            format!(
                "device_id {:?} must be 1-64 characters of [A-Za-z0-9_.:-]",
                truncate(&r.device_id)
            ),
        ));
    }
    if r.timestamp > now_ms.saturating_add(limits.max_future_ms) {
        return Err(Invalid::new(
            InvalidReason::FutureTimestamp,
            format!(
                "timestamp {} is {} ms ahead of the receiver's clock (allowed {} ms)",
                r.timestamp,
                // The judging clock may be a broker timestamp, i.e. anything: no overflow.
                r.timestamp.saturating_sub(now_ms),
                limits.max_future_ms
            ),
        ));
    }
    if r.timestamp < limits.min_timestamp_ms {
        return Err(Invalid::new(
            InvalidReason::StaleTimestamp,
            format!(
                "timestamp {} is before {}",
                r.timestamp, limits.min_timestamp_ms
            ),
        ));
    }
    for p in Parameter::ALL {
        let v = r.value(p);
        if !v.is_finite() {
            return Err(Invalid::new(
                InvalidReason::NonFinite,
                format!("{p} is {v}"),
            ));
        }
        let (lo, hi) = p.plausible_range();
        if v < lo || v > hi {
            return Err(Invalid::new(
                InvalidReason::OutOfRange,
                format!("{p} {v} outside [{lo}, {hi}]"),
            ));
        }
        if let Some(m) = r.measurement(p)
            && m.unit != p.unit()
        {
            return Err(Invalid::new(
                InvalidReason::BadUnit,
                format!("{p} unit {:?}, expected {:?}", truncate(&m.unit), p.unit()),
            ));
        }
    }
    let sw = r.sensors.switch_status;
    if sw.value != (sw.status == SwitchState::On) {
        return Err(Invalid::new(
            InvalidReason::Inconsistent,
            format!(
                "switch_status value {} disagrees with status {:?}",
                sw.value, sw.status
            ),
        ));
    }
    if !(-1000..=1000).contains(&r.location.floor) {
        return Err(Invalid::new(
            InvalidReason::OutOfRange,
            format!("location.floor {} outside [-1000, 1000]", r.location.floor),
        ));
    }
    Ok(())
}

/// At most 80 characters of untrusted text, for error details.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_640_995_200_000;

    fn spec() -> String {
        r#"{"device_id":"device_001","seq":42,"timestamp":1640995200000,"location":{"building":"A栋","floor":3,"room":"301"},"sensors":{"temperature":{"value":25.6,"unit":"°C","status":"normal"},"humidity":{"value":65.2,"unit":"%","status":"normal"},"pressure":{"value":1013.25,"unit":"hPa","status":"normal"},"switch_status":{"value":true,"status":"on"},"current":{"value":2.5,"unit":"A","status":"normal"}},"device_info":{"model":"IOT-SENSOR-V2","firmware":"1.2.3","battery":85,"signal_strength":-45}}"#.to_string()
    }

    fn reason(msg: &str) -> InvalidReason {
        decode(msg.as_bytes(), NOW, &Limits::default())
            .expect_err("must be rejected")
            .reason
    }

    #[test]
    fn valid_spec_reading_passes() {
        let s = spec();
        let r = decode(s.as_bytes(), NOW, &Limits::default()).expect("valid");
        assert_eq!(r.device_id, "device_001");
    }

    #[test]
    fn each_kind_of_bad_input_gets_its_reason() {
        let s = spec();
        assert_eq!(reason("{\"device_id\":"), InvalidReason::MalformedJson);
        assert_eq!(reason("not json"), InvalidReason::MalformedJson);
        assert_eq!(reason("{}"), InvalidReason::Schema);
        assert_eq!(reason(&s.replace("42", "\"42\"")), InvalidReason::Schema);
        assert_eq!(
            reason(&s.replace("\"normal\"", "\"weird\"")),
            InvalidReason::Schema
        );
        assert_eq!(reason(&s.replace("25.6", "NaN")), InvalidReason::NonFinite);
        assert_eq!(
            reason(&s.replace("25.6", "Infinity")),
            InvalidReason::NonFinite
        );
        assert_eq!(
            reason(&s.replace("25.6", "1e999")),
            InvalidReason::NonFinite
        );
        assert_eq!(
            reason(&s.replace("25.6", "999.0")),
            InvalidReason::OutOfRange
        );
        assert_eq!(reason(&s.replace("65.2", "-3")), InvalidReason::OutOfRange);
        assert_eq!(
            reason(&s.replace("\"battery\":85", "\"battery\":101")),
            InvalidReason::OutOfRange
        );
        assert_eq!(reason(&s.replace("°C", "°F")), InvalidReason::BadUnit);
        assert_eq!(
            reason(&s.replace("device_001", "")),
            InvalidReason::BadDeviceId
        );
        assert_eq!(
            reason(&s.replace("device_001", "dev ice")),
            InvalidReason::BadDeviceId
        );
        assert_eq!(
            reason(&s.replace("\"value\":true", "\"value\":false")),
            InvalidReason::Inconsistent
        );
        let future = (NOW + 5 * 60 * 1000 + 1).to_string();
        assert_eq!(
            reason(&s.replace("1640995200000", &future)),
            InvalidReason::FutureTimestamp
        );
        assert_eq!(
            reason(&s.replace("1640995200000", "1000")),
            InvalidReason::StaleTimestamp
        );
    }

    #[test]
    fn timestamp_exactly_at_the_skew_limit_is_accepted() {
        let at = (NOW + 5 * 60 * 1000).to_string();
        let s = spec().replace("1640995200000", &at);
        assert!(decode(s.as_bytes(), NOW, &Limits::default()).is_ok());
    }

    #[test]
    fn future_timestamp_judged_by_a_clock_at_i64_min_is_rejected_without_overflow() {
        // Found by the proptest property over arbitrary clocks: `timestamp - now` overflowed
        // (a panic in debug builds, a wrapped number in the detail in release builds).
        let s = spec();
        let e = decode(s.as_bytes(), i64::MIN, &Limits::default()).expect_err("future");
        assert_eq!(e.reason, InvalidReason::FutureTimestamp);
        assert!(e.detail.contains(&i64::MAX.to_string()), "{}", e.detail);
    }

    #[test]
    fn oversize_is_rejected_before_parsing() {
        let big = format!("{}{}", spec(), " ".repeat(64 * 1024));
        assert_eq!(reason(&big), InvalidReason::Oversize);
    }

    #[test]
    fn reason_names_are_unique_and_indexed() {
        for (i, r) in InvalidReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = InvalidReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), InvalidReason::ALL.len());
    }
}
