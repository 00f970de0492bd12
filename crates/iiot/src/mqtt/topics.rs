//! MQTT topic filters: which filter a topic matches, and its device segment (the level at
//! the filter's first `+`).

/// The topic readings of `device_id` are published to (what `MQTT_TOPICS` subscribes to by
/// default).
pub fn telemetry_topic(device_id: &str) -> String {
    format!("iiot/devices/{device_id}/telemetry")
}

/// Whether `topic` matches `filter` (`+` one level, `#` the rest; MQTT 3.1.1 §4.7).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (l, Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// The device segment of `topic`: the level at the first `+` of the first filter it matches.
/// `None` when no filter with a `+` matches (then the payload alone names the device).
pub fn device_segment<'t>(filters: &[String], topic: &'t str) -> Option<&'t str> {
    let filter = filters.iter().find(|f| matches(f, topic))?;
    let index = filter.split('/').position(|l| l == "+")?;
    topic.split('/').nth(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches(
            "iiot/devices/+/telemetry",
            "iiot/devices/d1/telemetry"
        ));
        assert!(!matches(
            "iiot/devices/+/telemetry",
            "iiot/devices/d1/status"
        ));
        assert!(!matches(
            "iiot/devices/+/telemetry",
            "iiot/devices/d1/telemetry/x"
        ));
        assert!(!matches("iiot/devices/+", "iiot/devices"));
        assert!(matches("plant/#", "plant/a/b"));
        assert!(matches("plant/#", "plant"));
        assert!(matches("a/b", "a/b"));
    }

    #[test]
    fn the_device_segment_is_the_first_plus_of_the_matching_filter() {
        let filters = vec![
            "site/+/+/data".to_string(),
            "iiot/devices/+/telemetry".into(),
        ];
        assert_eq!(
            device_segment(&filters, "iiot/devices/d7/telemetry"),
            Some("d7")
        );
        assert_eq!(device_segment(&filters, "site/d3/line2/data"), Some("d3"));
        assert_eq!(device_segment(&["plant/#".to_string()], "plant/d1"), None);
        assert_eq!(device_segment(&filters, "other"), None);
        assert_eq!(
            telemetry_topic("device_001"),
            "iiot/devices/device_001/telemetry"
        );
    }
}
