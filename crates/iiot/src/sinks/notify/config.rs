//! The notifier's settings: `[[notify.channels]]`, `[[notify.routes]]` and the scalar keys
//! (`NOTIFY_WEBHOOK_URL`, `DASHBOARD_URL`, …), and their validation at load time.

use std::time::Duration;

use iiot_model::Severity;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::{format_duration, parse_duration};

/// The name of the channel `NOTIFY_WEBHOOK_URL` creates.
pub const DEFAULT_WEBHOOK_NAME: &str = "webhook";

/// Everything the notifier is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    /// `NOTIFY_WEBHOOK_URL`: a JSON webhook channel named `webhook`, for the one-line case.
    pub webhook_url: Option<String>,
    /// `NOTIFY_WEBHOOK_SECRET`: its HMAC-SHA256 signing secret (shown as `***`).
    pub webhook_secret: Option<String>,
    /// `DASHBOARD_URL`: the dashboard's address as people reach it; notifications link to
    /// `<DASHBOARD_URL>/#/device/<id>`. `None`: `http://localhost:<HTTP_PORT>`.
    pub dashboard_url: Option<String>,
    /// `NOTIFY_QUEUE_CAPACITY`: alert changes waiting for the notifier; beyond it they are
    /// dropped and counted (10000).
    pub queue_capacity: usize,
    /// `[[notify.channels]]` from the file.
    pub channels: Vec<ChannelSpec>,
    /// `[[notify.routes]]` from the file; none = every change to every channel.
    pub routes: Vec<RouteSpec>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            webhook_url: None,
            webhook_secret: None,
            dashboard_url: None,
            queue_capacity: 10_000,
            channels: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl NotifySettings {
    /// The channels in force: the file's, plus `NOTIFY_WEBHOOK_URL`'s unless the file already
    /// has a channel of that name.
    pub fn effective_channels(&self) -> Vec<ChannelSpec> {
        let mut out = self.channels.clone();
        if let Some(url) = &self.webhook_url
            && !out.iter().any(|c| c.name == DEFAULT_WEBHOOK_NAME)
        {
            out.push(ChannelSpec {
                url: Some(url.clone()),
                secret: self.webhook_secret.clone(),
                ..ChannelSpec::named(DEFAULT_WEBHOOK_NAME, ChannelKind::Webhook)
            });
        }
        out
    }

    /// The first problem with the channels and routes, as `(key, problem)` with the key a
    /// path in the file (`notify.channels[1].url`).
    pub fn check(&self) -> Result<(), (String, String)> {
        let channels = self.effective_channels();
        for (i, c) in channels.iter().enumerate() {
            let key = |field: &str| format!("notify.channels[{i}].{field}");
            // The name is a metric label value: plain characters only.
            let plain = c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if c.name.is_empty() || !plain || channels[..i].iter().any(|o| o.name == c.name) {
                let problem = "must be a name of letters, digits, '-', '_' or '.', used once";
                return Err((key("name"), problem.into()));
            }
            match c.kind {
                ChannelKind::Webhook => check_webhook(c).map_err(|p| (key("url"), p))?,
                ChannelKind::Email => check_email(c).map_err(|(f, p)| (key(f), p))?,
            }
            if c.max_per_minute == Some(0) {
                return Err((key("max_per_minute"), "must be at least 1".into()));
            }
            if c.digest.is_some_and(|d| d < Duration::from_secs(1)) {
                return Err((key("digest"), "must be a duration of at least 1s".into()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("notify.routes[{i}].{field}");
            if r.channels.is_empty() {
                return Err((key("channels"), "must name at least one channel".into()));
            }
            if let Some(unknown) = r
                .channels
                .iter()
                .find(|n| !channels.iter().any(|c| &c.name == *n))
            {
                return Err((key("channels"), format!("names no channel: {unknown}")));
            }
            r.matchers.check().map_err(|p| (key("device_id"), p))?;
        }
        Ok(())
    }
}

fn check_webhook(c: &ChannelSpec) -> Result<(), String> {
    let url = c.url.as_deref().unwrap_or("");
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("must be an http(s) URL ({e})"))?;
    match parsed.scheme() {
        "http" => Ok(()),
        "https" if cfg!(feature = "tls") => Ok(()),
        "https" => Err("is https, but this build has no TLS (cargo feature tls)".into()),
        other => Err(format!("must be an http(s) URL, not {other}:")),
    }
}

fn check_email(c: &ChannelSpec) -> Result<(), (&'static str, String)> {
    if c.smtp_host.as_deref().is_none_or(|h| h.trim().is_empty()) {
        return Err(("smtp_host", "must name the SMTP server".into()));
    }
    if c.tls != SmtpTls::None && !cfg!(feature = "tls") {
        return Err((
            "tls",
            "needs TLS, which this build lacks (cargo feature tls); use \"none\"".into(),
        ));
    }
    let mailbox = |a: &str| a.parse::<lettre::message::Mailbox>().is_ok();
    if !c.from.as_deref().is_some_and(mailbox) {
        return Err(("from", "must be an e-mail address".into()));
    }
    if c.to.is_empty() || !c.to.iter().all(|a| mailbox(a)) {
        return Err(("to", "must be a list of e-mail addresses".into()));
    }
    Ok(())
}

/// What a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// An HTTP POST per change.
    Webhook,
    /// An e-mail per change, over SMTP.
    Email,
}

/// The body a webhook channel posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The SPEC §2 alert plus `event` and `link`.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
    /// A Microsoft Teams Workflows message carrying an Adaptive Card 1.4.
    Teams,
}

/// How an e-mail channel talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// An alert change, as routes and channels name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The alert was raised (status `active`).
    Raised,
    /// An operator acknowledged it.
    Acknowledged,
    /// Its condition cleared.
    Resolved,
}

impl Event {
    /// The word used in payloads and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Raised => "raised",
            Event::Acknowledged => "acknowledged",
            Event::Resolved => "resolved",
        }
    }

    /// The event of an alert in `status`.
    pub fn of(status: iiot_model::AlertStatus) -> Event {
        match status {
            iiot_model::AlertStatus::Active => Event::Raised,
            iiot_model::AlertStatus::Acknowledged => Event::Acknowledged,
            iiot_model::AlertStatus::Resolved => Event::Resolved,
        }
    }
}

/// One `[[notify.channels]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// Unique name, used by routes, logs and the `channel` metric label.
    pub name: String,
    /// `webhook` or `email`.
    pub kind: ChannelKind,
    /// Webhook body: `json` (default), `slack` or `teams`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Webhook: where to POST.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: HMAC-SHA256 secret; the body's signature goes in `X-IIoT-Signature`.
    #[serde(default)]
    pub secret: Option<String>,
    /// How long one attempt may take (default 5s).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts after the first one fails (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First wait before a retry, doubled each time, with jitter (default 500ms).
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub retry_backoff: Duration,
    /// Which changes this channel is told of (default raised and resolved).
    #[serde(default = "default_notify_on")]
    pub notify_on: Vec<Event>,
    /// At most this many notifications per minute; what is held back is summed up in one
    /// digest when the minute ends. None = no limit.
    #[serde(default)]
    pub max_per_minute: Option<u32>,
    /// Instead of one message per change, one message per this interval with every change
    /// of the interval (e.g. `"15m"`; none = one per change).
    #[serde(default, deserialize_with = "optional_duration")]
    pub digest: Option<Duration>,
    /// E-mail: the SMTP server's host.
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// E-mail: its port (default: 25 without TLS, 587 for STARTTLS, 465 for TLS).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// E-mail: `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// E-mail: user name for SMTP AUTH (none = no authentication).
    #[serde(default)]
    pub username: Option<String>,
    /// E-mail: its password.
    #[serde(default)]
    pub password: Option<String>,
    /// E-mail: the sender.
    #[serde(default)]
    pub from: Option<String>,
    /// E-mail: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// E-mail subject template (placeholders: `{device_id}`, `{alert_type}`, `{severity}`,
    /// `{event}`, `{message}`, `{alert_id}`, `{link}`, `{current_value}`).
    #[serde(default = "default_subject")]
    pub subject: String,
    /// E-mail body template (same placeholders).
    #[serde(default = "default_body")]
    pub body: String,
}

impl ChannelSpec {
    /// A channel of `kind` called `name`, every other field at its default.
    pub fn named(name: &str, kind: ChannelKind) -> ChannelSpec {
        ChannelSpec {
            name: name.to_string(),
            kind,
            format: WebhookFormat::Json,
            url: None,
            secret: None,
            timeout: default_timeout(),
            retries: default_retries(),
            retry_backoff: default_backoff(),
            notify_on: default_notify_on(),
            max_per_minute: None,
            digest: None,
            smtp_host: None,
            smtp_port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: None,
            to: Vec::new(),
            subject: default_subject(),
            body: default_body(),
        }
    }

    /// The channel for `/config`: secrets shown as `***`.
    pub fn redacted(&self) -> serde_json::Value {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "***");
        serde_json::json!({
            "name": self.name, "kind": self.kind, "format": self.format, "url": self.url,
            "secret": hide(&self.secret), "timeout": format_duration(self.timeout),
            "retries": self.retries, "retry_backoff": format_duration(self.retry_backoff),
            "notify_on": self.notify_on, "max_per_minute": self.max_per_minute,
            "digest": self.digest.map(format_duration),
            "smtp_host": self.smtp_host, "smtp_port": self.smtp_port, "tls": self.tls,
            "username": self.username, "password": hide(&self.password), "from": self.from,
            "to": self.to, "subject": self.subject, "body": self.body,
        })
    }
}

/// Which alerts a route or a silence is about. Every field left empty matches anything; a
/// list matches any of its values.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    /// Severities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<Severity>,
    /// Alert types, e.g. `temperature_high`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_type: Vec<String>,
    /// Buildings (the device's latest `location.building`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub building: Vec<String>,
    /// Floors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floor: Vec<i32>,
    /// Device models (`device_info.model`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<String>,
    /// A device-id glob: `*`, `?` and `[…]`, e.g. `device_0*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl Matchers {
    /// Whether the glob is well formed.
    pub fn check(&self) -> Result<(), String> {
        match &self.device_id {
            Some(glob) => glob::Pattern::new(glob)
                .map(|_| ())
                .map_err(|e| format!("must be a glob like device_0* ({e})")),
            None => Ok(()),
        }
    }
}

/// One `[[notify.routes]]` table: the changes it matches go to its channels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The channels, by name.
    pub channels: Vec<String>,
    /// What it matches.
    #[serde(flatten)]
    pub matchers: Matchers,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_notify_on() -> Vec<Event> {
    vec![Event::Raised, Event::Resolved]
}
fn default_subject() -> String {
    "[{severity}] {alert_type} {event} on {device_id}".into()
}
fn default_body() -> String {
    "{message}\n\nDevice: {device_id}\nAlert: {alert_type} ({alert_id})\nSeverity: {severity}\n\
     Event: {event}\nValue: {current_value}\n\n{link}\n"
        .into()
}
