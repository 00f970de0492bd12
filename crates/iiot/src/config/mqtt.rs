//! The MQTT settings (`MQTT_*`) and the `mqtt://` URL they are read from.

/// The MQTT source: the broker real devices publish to.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// `MQTT_URL`: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (TLS, 8883); `None`
    /// runs no MQTT source.
    pub url: Option<String>,
    /// `MQTT_TOPICS`: comma-separated topic filters subscribed at QoS 1
    /// (`iiot/devices/+/telemetry`); the first `+` level is the device id.
    pub topics: String,
    /// `MQTT_CLIENT_ID`: fixed, so the broker keeps the session (and what was published while
    /// `iiot` was away) across restarts; `None` = `iiot-<hostname>`.
    pub client_id: Option<String>,
    /// `MQTT_USERNAME`.
    pub username: Option<String>,
    /// `MQTT_PASSWORD` (or the file `MQTT_PASSWORD_FILE` names); shown as `***`.
    pub password: Option<String>,
    /// `MQTT_MAX_IN_FLIGHT`: messages received and not yet acknowledged before reading from the
    /// broker pauses (1000).
    pub max_in_flight: u16,
    /// `MQTT_PROTOCOL`: `3.1.1` or `5` (the MQTT source's and the simulator's MQTT output's).
    pub protocol: String,
    /// `MQTT_SHARED_GROUP`: subscribe as a member of this shared subscription group
    /// (`$share/<group>/<filter>`), so that several instances split the messages; `None` = a
    /// plain subscription (every instance gets every message).
    pub shared_group: Option<String>,
    /// `MQTT_CA_LOCATION`: PEM file of the CA certificates an `mqtts://` broker is verified
    /// against; `None` = the system's trust store.
    pub ca_location: Option<String>,
    /// `MQTT_CERTIFICATE_LOCATION`: the client's PEM certificate (chain) for mutual TLS.
    pub certificate_location: Option<String>,
    /// `MQTT_KEY_LOCATION`: the client's unencrypted PEM private key for mutual TLS.
    pub key_location: Option<String>,
}

impl MqttSettings {
    /// Host and port of `url` (port 1883 when not given).
    pub fn address(&self) -> Option<(String, u16)> {
        parse_mqtt_url(self.url.as_deref()?)
    }

    /// The topic filters of `topics`.
    pub fn topic_filters(&self) -> Vec<String> {
        self.topics
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Whether the URL is `mqtts://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.url
            .as_deref()
            .is_some_and(|u| u.trim().starts_with("mqtts://"))
    }

    /// Whether the source speaks MQTT 5.
    pub fn is_v5(&self) -> bool {
        self.protocol == "5"
    }

    /// The filters as subscribed: [`MqttSettings::topic_filters`], each under
    /// `$share/<group>/` with a shared group.
    pub fn subscription_filters(&self) -> Vec<String> {
        self.shared(self.topic_filters())
    }

    /// `filters` as subscribed: under `$share/<group>/` with `MQTT_SHARED_GROUP`.
    pub fn shared(&self, filters: Vec<String>) -> Vec<String> {
        match &self.shared_group {
            Some(group) => filters
                .into_iter()
                .map(|f| format!("$share/{group}/{f}"))
                .collect(),
            None => filters,
        }
    }

    /// `client_id`, else `iiot-<hostname>` (`iiot` when the host name cannot be read).
    pub fn client_id_or_default(&self) -> String {
        if let Some(id) = &self.client_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect();
        if host.is_empty() {
            "iiot".to_string()
        } else {
            format!("iiot-{host}")
        }
    }
}

/// `mqtt://host[:port]` (1883 by default) or `mqtts://host[:port]` (8883) as host and port;
/// `None` for anything else.
pub(crate) fn parse_mqtt_url(url: &str) -> Option<(String, u16)> {
    let url = url.trim();
    let (rest, default_port) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, 8883),
        None => (url.strip_prefix("mqtt://")?, 1883),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()?),
        None => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = !host.is_empty()
        && port != 0
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    ok.then(|| (host.to_string(), port))
}
