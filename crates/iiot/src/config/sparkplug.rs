//! The payload the MQTT source reads (`MQTT_PAYLOAD`) and the Sparkplug B settings
//! (`SPARKPLUG_*`); what they mean is in [`crate::mqtt::sparkplug`].

/// `MQTT_PAYLOAD` and the Sparkplug B settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugSettings {
    /// `MQTT_PAYLOAD`: `json` (SPEC §2 readings) or `sparkplug` (Sparkplug B protobuf).
    pub payload: String,
    /// `SPARKPLUG_DEVICE_ID`: our device id of a Sparkplug device, from `{group}`, `{node}` and
    /// `{device}` (`{device}`); a node's own metrics use the node id as `{device}`.
    pub device_id: String,
    /// `SPARKPLUG_METRICS`: `metric name=field` pairs, comma-separated, `field` one of
    /// temperature, humidity, pressure, current, switch_status, battery, signal_strength or
    /// ignore; other names map by how they end (empty).
    pub metrics: String,
    /// `SPARKPLUG_MAX_DEVICES`: edge nodes and devices tracked together (100000).
    pub max_devices: usize,
}

impl SparkplugSettings {
    /// Whether the MQTT source reads Sparkplug B.
    pub fn enabled(&self) -> bool {
        self.payload == "sparkplug"
    }
}

/// `SPARKPLUG_DEVICE_ID` is a valid template.
pub(super) fn is_device_id_template(s: &str) -> bool {
    crate::mqtt::sparkplug::mapping::DeviceIdTemplate::parse(s).is_some()
}

/// `SPARKPLUG_METRICS` is a valid mapping.
pub(super) fn is_metric_mapping(s: &str) -> bool {
    crate::mqtt::sparkplug::mapping::MetricMapping::parse(s).is_some()
}
