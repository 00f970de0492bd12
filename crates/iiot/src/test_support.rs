//! Builders shared by the library's unit tests (compiled for tests only).

use iiot_model::{Limits, Reading, decode};

/// 2023-11-14T22:13:20Z: the clock of the unit tests.
pub(crate) const T0: i64 = 1_700_000_000_000;

/// A complete, normal reading of `device` as a device sends it (one line of JSON), with the
/// temperature written as given (`25`, not `25.0`).
pub(crate) fn reading(device: &str, seq: u64, ts: i64, temperature: f64) -> Vec<u8> {
    format!(
        r#"{{"device_id":"{device}","seq":{seq},"timestamp":{ts},"location":{{"building":"A栋","floor":3,"room":"301"}},"sensors":{{"temperature":{{"value":{temperature},"unit":"°C","status":"normal"}},"humidity":{{"value":65.2,"unit":"%","status":"normal"}},"pressure":{{"value":1013.25,"unit":"hPa","status":"normal"}},"switch_status":{{"value":true,"status":"on"}},"current":{{"value":2.5,"unit":"A","status":"normal"}}}},"device_info":{{"model":"IOT-SENSOR-V2","firmware":"1.2.3","battery":85,"signal_strength":-45}}}}"#
    )
    .into_bytes()
}

/// The least the hub forwards: a device id and a seq.
pub(crate) fn reading_stub(device: &str, seq: u64) -> Vec<u8> {
    format!(r#"{{"device_id":"{device}","seq":{seq}}}"#).into_bytes()
}

/// `json` decoded as the processor does at `received_ms`, detached from the buffer; fails
/// the test if it is not a valid reading.
pub(crate) fn decode_valid(json: &[u8], received_ms: i64) -> Reading<'static> {
    decode(json, received_ms, &Limits::default())
        .expect("a valid reading")
        .into_owned()
}

/// An active `high` alert of `alert_type` about `device`, raised at [`T0`].
pub(crate) fn alert(device: &str, alert_type: &str) -> iiot_model::Alert {
    use iiot_model::{Alert, AlertStatus, Operator, Severity, Threshold};
    Alert {
        alert_id: format!("alert_{device}_{alert_type}"),
        device_id: device.to_string(),
        alert_type: alert_type.to_string(),
        severity: Severity::High,
        message: format!("{alert_type} on {device}"),
        timestamp: T0,
        status: AlertStatus::Active,
        threshold: Threshold {
            parameter: "temperature".into(),
            operator: Operator::Above,
            value: 80.0,
        },
        current_value: 85.2,
        acknowledged_by: None,
    }
}
