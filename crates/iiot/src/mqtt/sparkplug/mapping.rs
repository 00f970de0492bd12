//! How Sparkplug names become ours: which metric feeds which reading field
//! (`SPARKPLUG_METRICS` plus the default by name), and the device id an edge node or device
//! gets (`SPARKPLUG_DEVICE_ID`).

use hashbrown::HashMap;

/// A reading field a metric can feed (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `sensors.temperature` (°C).
    Temperature,
    /// `sensors.humidity` (%).
    Humidity,
    /// `sensors.pressure` (hPa).
    Pressure,
    /// `sensors.current` (A).
    Current,
    /// `sensors.switch_status` (a boolean, or a number: non-zero is on).
    Switch,
    /// `device_info.battery` (%).
    Battery,
    /// `device_info.signal_strength` (dBm).
    SignalStrength,
}

impl Field {
    /// Every field, in slot order.
    pub const ALL: [Field; 7] = [
        Field::Temperature,
        Field::Humidity,
        Field::Pressure,
        Field::Current,
        Field::Switch,
        Field::Battery,
        Field::SignalStrength,
    ];

    /// Its name in `SPARKPLUG_METRICS` (the reading's field name).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Temperature => "temperature",
            Field::Humidity => "humidity",
            Field::Pressure => "pressure",
            Field::Current => "current",
            Field::Switch => "switch_status",
            Field::Battery => "battery",
            Field::SignalStrength => "signal_strength",
        }
    }

    /// Its slot in a device's values.
    pub fn index(self) -> usize {
        self as usize
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// Name endings the default mapping recognises (after lower-casing and turning spaces and
/// `-` into `_`), longest first so `signal_strength` is not taken for something shorter.
const SUFFIXES: [(&str, Field); 9] = [
    ("signal_strength", Field::SignalStrength),
    ("switch_status", Field::Switch),
    ("temperature", Field::Temperature),
    ("humidity", Field::Humidity),
    ("pressure", Field::Pressure),
    ("current", Field::Current),
    ("battery", Field::Battery),
    ("switch", Field::Switch),
    ("rssi", Field::SignalStrength),
];

/// Metric name → reading field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricMapping {
    /// Exact names from `SPARKPLUG_METRICS`; `None` = ignore this metric.
    explicit: HashMap<String, Option<Field>>,
}

impl MetricMapping {
    /// Parses `SPARKPLUG_METRICS`: comma-separated `metric name=field` pairs, `field` one of
    /// the reading's field names or `ignore`. Names are exact (case and `/` included).
    pub fn parse(text: &str) -> Option<MetricMapping> {
        let mut explicit = HashMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, field) = pair.rsplit_once('=')?;
            let (name, field) = (name.trim(), field.trim());
            if name.is_empty() {
                return None;
            }
            let field = match field {
                "ignore" => None,
                other => Some(Field::parse(other)?),
            };
            explicit.insert(name.to_string(), field);
        }
        Some(MetricMapping { explicit })
    }

    /// The field metric `name` feeds: its explicit mapping, else by how the last level of the
    /// name ends (`Sensors/Boiler Temperature` → temperature), case-insensitively.
    pub fn field(&self, name: &str) -> Option<Field> {
        if let Some(explicit) = self.explicit.get(name) {
            return *explicit;
        }
        let last = name.rsplit('/').next().unwrap_or(name);
        let normal: String = last
            .trim()
            .chars()
            .map(|c| match c {
                ' ' | '-' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        SUFFIXES
            .iter()
            .find(|(suffix, _)| normal.ends_with(suffix))
            .map(|(_, field)| *field)
    }
}

/// `SPARKPLUG_DEVICE_ID`: a template of `{group}`, `{node}`, `{device}` and literal text.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceIdTemplate(String);

impl DeviceIdTemplate {
    /// The template `text`, if it uses only the three placeholders and names a device or node.
    pub fn parse(text: &str) -> Option<DeviceIdTemplate> {
        let text = text.trim();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}')? + open;
            if !matches!(&rest[open + 1..close], "group" | "node" | "device") {
                return None;
            }
            rest = &rest[close + 1..];
        }
        let names_one = text.contains("{device}") || text.contains("{node}");
        (names_one && !rest.contains('}')).then(|| DeviceIdTemplate(text.to_string()))
    }

    /// Our device id for `device` of edge node `node` in `group`; for the node's own metrics
    /// (NBIRTH/NDATA) `device` is the node id.
    pub fn render(&self, group: &str, node: &str, device: Option<&str>) -> String {
        self.0
            .replace("{group}", group)
            .replace("{node}", node)
            .replace("{device}", device.unwrap_or(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_by_their_ending_unless_configured() {
        let m = MetricMapping::parse("Inputs/Temp=temperature, Setpoint Temperature=ignore")
            .expect("test input is valid");
        assert_eq!(m.field("Inputs/Temp"), Some(Field::Temperature));
        assert_eq!(m.field("Setpoint Temperature"), None);
        assert_eq!(
            m.field("Sensors/Boiler Temperature"),
            Some(Field::Temperature)
        );
        assert_eq!(m.field("motor-current"), Some(Field::Current));
        assert_eq!(m.field("Signal Strength"), Some(Field::SignalStrength));
        assert_eq!(m.field("Node Control/Rebirth"), None);
        assert_eq!(m.field("temperature/units"), None);
        assert!(MetricMapping::parse("a=voltage").is_none());
        assert!(MetricMapping::parse("=current").is_none());
        assert_eq!(MetricMapping::parse(""), Some(MetricMapping::default()));
    }

    #[test]
    fn the_device_id_template_takes_three_placeholders() {
        let t = DeviceIdTemplate::parse("{node}:{device}").expect("test input is valid");
        assert_eq!(t.render("plant", "edge1", Some("plc2")), "edge1:plc2");
        assert_eq!(t.render("plant", "edge1", None), "edge1:edge1");
        let t = DeviceIdTemplate::parse("{device}").expect("test input is valid");
        assert_eq!(t.render("g", "n", None), "n");
        assert!(DeviceIdTemplate::parse("{group}").is_none());
        assert!(DeviceIdTemplate::parse("{devices}").is_none());
        assert!(DeviceIdTemplate::parse("{device").is_none());
        assert!(DeviceIdTemplate::parse("x}{device}").is_some());
    }
}
