//! The channels: what each posts or mails for one change or a digest, and its delivery worker
//! (one task per channel, a bounded queue in front, retries with exponential backoff and
//! jitter, every outcome counted). A slow or dead channel holds up only itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use iiot_model::Alert;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{ChannelKind, ChannelSpec, Event, WebhookFormat};
use super::email::Mailer;
use super::ledger::Tickets;
use super::stats::{ChannelStats, Failure};

/// Messages waiting for one channel; beyond it new ones are dropped (`queue_full`).
pub const CHANNEL_QUEUE: usize = 1024;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The header carrying the body's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-IIoT-Signature";

/// One alert change to tell a channel about.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The alert as it now is.
    pub alert: Alert,
    /// What happened to it.
    pub event: Event,
    /// The device's page on the dashboard.
    pub link: String,
}

/// What the rate limit held back in one window, told in one message when the window ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Digest {
    /// Notifications held back.
    pub held: u64,
    /// Of those, by alert type.
    pub by_alert_type: BTreeMap<String, u64>,
    /// Of those, by building (`unknown` when the device's building is not known).
    pub by_building: BTreeMap<String, u64>,
    /// The dashboard's alert list.
    pub link: String,
}

impl Digest {
    /// Counts one more change of `alert` held back.
    pub fn count(&mut self, alert: &Alert, meta: Option<&super::routing::DeviceMeta>) {
        self.held += 1;
        *self
            .by_alert_type
            .entry(alert.alert_type.clone())
            .or_default() += 1;
        let building = meta.map_or("unknown", |m| m.building.as_str());
        *self.by_building.entry(building.to_string()).or_default() += 1;
    }

    /// Adds what `other` counted.
    pub fn merge(&mut self, other: Digest) {
        self.held += other.held;
        for (k, n) in other.by_alert_type {
            *self.by_alert_type.entry(k).or_default() += n;
        }
        for (k, n) in other.by_building {
            *self.by_building.entry(k).or_default() += n;
        }
    }

    /// One line: `12 more alerts (building A: 8, building B: 4; temperature_high: 12)`.
    pub fn text(&self) -> String {
        let list = |m: &BTreeMap<String, u64>, prefix: &str| {
            m.iter()
                .map(|(k, n)| format!("{prefix}{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} more alert changes held back by the rate limit ({}; {})",
            self.held,
            list(&self.by_building, "building "),
            list(&self.by_alert_type, "")
        )
    }
}

/// A message in a channel's queue, with the holds on the input it tells (on Kafka; see
/// [`super::ledger`]): settled once it is delivered or given up for good, abandoned if the
/// worker stops first.
#[derive(Debug)]
pub struct Queued {
    /// What to send.
    pub out: Outgoing,
    /// The holds it carries.
    pub tickets: Tickets,
}

/// What a channel worker sends.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// One alert change.
    Change(Arc<Notice>),
    /// A summary of what the rate limit held back.
    Digest(Digest),
    /// Every change of a digest interval, in order (`more`: those beyond what one message
    /// carries, counted only).
    Batch {
        /// The changes.
        notices: Vec<Arc<Notice>>,
        /// Changes left out of the message.
        more: u64,
    },
}

impl Outgoing {
    /// One line per change of a batch (and the count of those left out).
    pub fn batch_lines(notices: &[Arc<Notice>], more: u64) -> Vec<String> {
        let mut lines: Vec<String> = notices
            .iter()
            .map(|n| format!("{}: {} {}", title(n), n.alert.message, n.link))
            .collect();
        if more > 0 {
            lines.push(format!("… and {more} more"));
        }
        lines
    }
}

/// How a channel delivers.
enum Transport {
    Webhook {
        client: reqwest::Client,
        url: String,
        secret: Option<String>,
        format: WebhookFormat,
    },
    Email(Box<Mailer>),
}

/// A channel's delivery worker and its queue.
pub struct ChannelWorker {
    /// Its queue.
    pub queue: mpsc::Sender<Queued>,
    /// The task (ends when the queue is closed and drained, or on stop).
    pub task: JoinHandle<()>,
}

/// Starts the worker of `spec`; `stop` cuts retries short.
pub fn start(
    spec: &ChannelSpec,
    stats: Arc<ChannelStats>,
    stop: CancellationToken,
) -> Result<ChannelWorker, String> {
    let transport = match spec.kind {
        ChannelKind::Webhook => Transport::Webhook {
            client: reqwest::Client::builder()
                .timeout(spec.timeout)
                .build()
                .map_err(|e| format!("channel {}: {e}", spec.name))?,
            url: spec.url.clone().unwrap_or_default(),
            secret: spec.secret.clone(),
            format: spec.format,
        },
        ChannelKind::Email => Transport::Email(Box::new(Mailer::new(spec)?)),
    };
    let (queue, mut rx) = mpsc::channel::<Queued>(CHANNEL_QUEUE);
    let (retries, backoff, name) = (spec.retries, spec.retry_backoff, spec.name.clone());
    let task = tokio::spawn(async move {
        // Until the queue is closed and drained, or `stop` (the grace at shutdown is over).
        loop {
            let out = tokio::select! {
                out = rx.recv() => out,
                _ = stop.cancelled() => None,
            };
            let Some(Queued { out, tickets }) = out else {
                break;
            };
            stats.dequeued();
            let attempt = || transport.deliver(&out);
            if deliver_with_retries(attempt, retries, backoff, &stats, &name, &stop).await {
                drop(tickets);
            } else {
                tickets.abandon();
            }
        }
        rx.close();
        let mut left = 0usize;
        while let Ok(queued) = rx.try_recv() {
            left += 1;
            queued.tickets.abandon();
        }
        if left > 0 {
            tracing::warn!(channel = %name, left, "stopped with notifications undelivered");
        }
    });
    Ok(ChannelWorker { queue, task })
}

/// Delivers with `retries` more attempts; true when that is settled (delivered, or given up
/// for good and counted), false when `stop` cut it short.
async fn deliver_with_retries<'a, F, Fut>(
    attempt: F,
    retries: u32,
    backoff: Duration,
    stats: &ChannelStats,
    name: &str,
    stop: &CancellationToken,
) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), (Failure, String)>> + 'a,
{
    for n in 0..=retries {
        let result = tokio::select! {
            result = attempt() => result,
            _ = stop.cancelled() => Err((Failure::Other, "stopped during the attempt".into())),
        };
        let (failure, detail) = match result {
            Ok(()) => {
                stats.sent();
                return true;
            }
            Err(e) => e,
        };
        if stop.is_cancelled() {
            stats.failed(failure);
            tracing::warn!(channel = name, reason = failure.as_str(), attempts = n + 1, %detail, "notification not delivered: stopping");
            return false;
        }
        if n == retries || !failure.retriable() {
            stats.failed(failure);
            tracing::warn!(channel = name, reason = failure.as_str(), attempts = n + 1, %detail, "notification not delivered");
            return true;
        }
        stats.retried();
        tracing::debug!(channel = name, reason = failure.as_str(), %detail, "notification failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff_for(backoff, n)) => {}
            _ = stop.cancelled() => {}
        }
    }
    // The last attempt returns above.
    true
}

/// `base · 2^attempt`, capped, times a random factor in [0.5, 1] so that channels failing
/// together do not retry in step.
fn backoff_for(base: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

impl Transport {
    async fn deliver(&self, out: &Outgoing) -> Result<(), (Failure, String)> {
        match self {
            Transport::Webhook {
                client,
                url,
                secret,
                format,
            } => {
                let body = webhook_body(*format, out);
                post(client, url, secret.as_deref(), body).await
            }
            Transport::Email(mailer) => mailer.send(out).await,
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    body: Vec<u8>,
) -> Result<(), (Failure, String)> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, &body));
    }
    let response = request.body(body).send().await.map_err(|e| {
        let failure = if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Connect
        } else {
            Failure::Other
        };
        (failure, e.to_string())
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let failure = if status.is_server_error() || status.as_u16() == 429 {
        Failure::Http5xx
    } else {
        Failure::Http4xx
    };
    Err((failure, format!("answered {status}")))
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The body a webhook of `format` posts for `out`.
pub fn webhook_body(format: WebhookFormat, out: &Outgoing) -> Vec<u8> {
    let value = match (format, out) {
        (WebhookFormat::Json, Outgoing::Change(n)) => {
            let mut v = serde_json::to_value(&n.alert).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("event".into(), json!(n.event.as_str()));
                map.insert("link".into(), json!(n.link));
            }
            v
        }
        (WebhookFormat::Json, Outgoing::Batch { notices, more }) => {
            let changes: Vec<Value> = notices
                .iter()
                .map(|n| {
                    let one = Outgoing::Change(n.clone());
                    serde_json::from_slice(&webhook_body(WebhookFormat::Json, &one))
                        .unwrap_or(Value::Null)
                })
                .collect();
            json!({"event": "batch", "changes": changes, "more": more})
        }
        (WebhookFormat::Json, Outgoing::Digest(d)) => json!({
            "event": "digest", "held": d.held, "by_alert_type": d.by_alert_type,
            "by_building": d.by_building, "text": d.text(), "link": d.link,
        }),
        (WebhookFormat::Slack, out) => slack(out),
        (WebhookFormat::Teams, out) => teams(out),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A one-line title for a change: `[HIGH] temperature_high raised on device_001`.
pub fn title(n: &Notice) -> String {
    format!(
        "[{}] {} {} on {}",
        n.alert.severity.as_str().to_uppercase(),
        n.alert.alert_type,
        n.event.as_str(),
        n.alert.device_id
    )
}

fn slack(out: &Outgoing) -> Value {
    let (text, link) = match out {
        Outgoing::Change(n) => (format!("{}: {}", title(n), n.alert.message), &n.link),
        Outgoing::Digest(d) => (d.text(), &d.link),
        Outgoing::Batch { notices, more } => {
            let text = Outgoing::batch_lines(notices, *more).join("\n");
            return json!({"text": text, "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}}]});
        }
    };
    json!({
        "text": format!("{text} <{link}|open>"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "elements": [{"type": "button",
                "text": {"type": "plain_text", "text": "Open in dashboard"}, "url": link}]},
        ],
    })
}

fn teams(out: &Outgoing) -> Value {
    let (heading, facts, link) = match out {
        Outgoing::Change(n) => {
            let a = &n.alert;
            let facts = json!([
                {"title": "Device", "value": a.device_id},
                {"title": "Alert", "value": a.alert_type},
                {"title": "Severity", "value": a.severity.as_str()},
                {"title": "Event", "value": n.event.as_str()},
                {"title": "Message", "value": a.message},
                {"title": "Value", "value": a.current_value.to_string()},
            ]);
            (title(n), facts, &n.link)
        }
        Outgoing::Digest(d) => (d.text(), json!([]), &d.link),
        Outgoing::Batch { notices, more } => {
            let lines: Vec<Value> = Outgoing::batch_lines(notices, *more)
                .into_iter()
                .map(|l| json!({"type": "TextBlock", "text": l, "wrap": true}))
                .collect();
            return adaptive_card(lines, json!([]));
        }
    };
    let body = vec![
        json!({"type": "TextBlock", "text": heading, "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    let actions = json!([{"type": "Action.OpenUrl", "title": "Open in dashboard", "url": link}]);
    adaptive_card(body, actions)
}

/// A Teams Workflows message carrying one Adaptive Card 1.4.
fn adaptive_card(body: Vec<Value>, actions: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::alert;

    fn notice() -> Outgoing {
        Outgoing::Change(Arc::new(Notice {
            alert: alert("device_001", "temperature_high"),
            event: Event::Raised,
            link: "http://dash/#/device/device_001".into(),
        }))
    }

    #[test]
    fn json_body_is_the_alert_with_event_and_link() {
        let v: Value =
            serde_json::from_slice(&webhook_body(WebhookFormat::Json, &notice())).expect("json");
        assert_eq!(v["device_id"], "device_001");
        assert_eq!(v["status"], "active");
        assert_eq!(v["event"], "raised");
        assert_eq!(v["link"], "http://dash/#/device/device_001");
        assert_eq!(v["threshold"]["operator"], ">");
    }

    #[test]
    fn slack_and_teams_envelopes() {
        let s: Value =
            serde_json::from_slice(&webhook_body(WebhookFormat::Slack, &notice())).expect("json");
        assert!(
            s["text"]
                .as_str()
                .is_some_and(|t| t.contains("[HIGH] temperature_high raised"))
        );
        let t: Value =
            serde_json::from_slice(&webhook_body(WebhookFormat::Teams, &notice())).expect("json");
        assert_eq!(t["type"], "message");
        let card = &t["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["version"], "1.4");
        assert_eq!(
            card["content"]["actions"][0]["url"],
            "http://dash/#/device/device_001"
        );
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for n in 0..4 {
            let d = backoff_for(base, n);
            let full = base * 2u32.pow(n);
            assert!(d >= full / 2 && d <= full, "{d:?} for attempt {n}");
        }
        assert!(backoff_for(base, 30) <= MAX_BACKOFF);
    }
}
