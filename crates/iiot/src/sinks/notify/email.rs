//! The e-mail channel: one message per change (or digest) over SMTP with `lettre` — plain,
//! STARTTLS or TLS (the last two with the `tls` cargo feature), with optional AUTH — and the
//! subject and body templates.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::channels::{Notice, Outgoing, title};
use super::config::{ChannelSpec, Event, SmtpTls};
use super::stats::Failure;

/// A configured SMTP sender.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: String,
    body: String,
}

impl Mailer {
    /// The mailer of `spec` (validated at load time: host, from and to are set and parse).
    pub fn new(spec: &ChannelSpec) -> Result<Mailer, String> {
        let host = spec.smtp_host.clone().unwrap_or_default();
        let bad = |e: String| format!("channel {}: {e}", spec.name);
        let builder = match spec.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            #[cfg(feature = "tls")]
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| bad(e.to_string()))?,
            #[cfg(feature = "tls")]
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| bad(e.to_string()))?,
            #[cfg(not(feature = "tls"))]
            SmtpTls::Starttls | SmtpTls::Tls => {
                return Err(bad("TLS needs the tls cargo feature".into()));
            }
        };
        let port = spec.smtp_port.unwrap_or(match spec.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        });
        let mut builder = builder.port(port).timeout(Some(spec.timeout));
        if let Some(user) = &spec.username {
            let password = spec.password.clone().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let mailbox = |a: &str| a.parse::<Mailbox>().map_err(|e| bad(format!("{a}: {e}")));
        Ok(Mailer {
            transport: builder.build(),
            from: mailbox(spec.from.as_deref().unwrap_or_default())?,
            to: spec
                .to
                .iter()
                .map(|a| mailbox(a))
                .collect::<Result<_, _>>()?,
            subject: spec.subject.clone(),
            body: spec.body.clone(),
        })
    }

    /// Sends one message for `out`.
    pub async fn send(&self, out: &Outgoing) -> Result<(), (Failure, String)> {
        let (subject, body) = match out {
            Outgoing::Change(n) => (fill(&self.subject, n), fill(&self.body, n)),
            Outgoing::Batch { notices, more } => batch_mail(notices, *more),
            Outgoing::Digest(d) => (
                format!("{} more alert changes held back", d.held),
                format!("{}\n\n{}\n", d.text(), d.link),
            ),
        };
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject.replace(['\r', '\n'], " "))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(body)
            .map_err(|e| (Failure::Other, e.to_string()))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            // Permanent (5xx) answers will not change on a retry; anything else might.
            let failure = if e.is_permanent() {
                Failure::SmtpRejected
            } else if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Smtp
            };
            (failure, e.to_string())
        })
    }
}

/// The subject and body of a digest-interval message.
fn batch_mail(notices: &[std::sync::Arc<Notice>], more: u64) -> (String, String) {
    let count = |e: Event| notices.iter().filter(|n| n.event == e).count();
    let subject = format!(
        "{} alert changes ({} raised, {} resolved)",
        notices.len() as u64 + more,
        count(Event::Raised),
        count(Event::Resolved)
    );
    let mut body = Outgoing::batch_lines(notices, more).join("\n");
    body.push('\n');
    (subject, body)
}

/// `template` with `{device_id}`, `{alert_type}`, `{severity}`, `{event}`, `{message}`,
/// `{alert_id}`, `{link}`, `{current_value}` and `{title}` filled in.
pub fn fill(template: &str, n: &Notice) -> String {
    let a = &n.alert;
    [
        ("{device_id}", a.device_id.as_str()),
        ("{alert_type}", a.alert_type.as_str()),
        ("{severity}", a.severity.as_str()),
        ("{event}", n.event.as_str()),
        ("{message}", a.message.as_str()),
        ("{alert_id}", a.alert_id.as_str()),
        ("{link}", n.link.as_str()),
        ("{current_value}", &a.current_value.to_string()),
        ("{title}", &title(n)),
    ]
    .iter()
    .fold(template.to_string(), |text, (name, value)| {
        text.replace(name, value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::alert;

    #[test]
    fn templates_fill_every_placeholder() {
        let n = Notice {
            alert: alert("device_007", "temperature_high"),
            event: Event::Resolved,
            link: "http://d/#/device/device_007".into(),
        };
        let text = fill(
            "{severity}|{alert_type}|{event}|{device_id}|{message}|{link}|{current_value}",
            &n,
        );
        assert_eq!(
            text,
            "high|temperature_high|resolved|device_007|temperature_high on device_007|http://d/#/device/device_007|85.2"
        );
    }
}
