//! The notifier's configuration as a user writes it: `[[notify.channels]]` and
//! `[[notify.routes]]` in the file, `NOTIFY_WEBHOOK_URL` for the one-line case, errors naming
//! the table and field, and secrets redacted in `/config`.

mod support;

use iiot::config::Config;
use iiot::sinks::notify::config::{ChannelKind, Event, SmtpTls, WebhookFormat};
use support::config::{config_file, from_env, from_file, refusal};

fn load(text: &str) -> Result<Config, iiot::config::ConfigError> {
    let (_dir, file) = config_file(text);
    Config::load(&from_file(file))
}

const CHANNELS: &str = r#"
[[notify.channels]]
name = "oncall"
kind = "webhook"
format = "teams"
url = "http://hooks.local/iiot"
secret = "s3cret"
timeout = "2s"
retries = 5
notify_on = ["raised", "acknowledged", "resolved"]
max_per_minute = 10

[[notify.channels]]
name = "mail"
kind = "email"
smtp_host = "smtp.local"
tls = "none"
password = "hunter2"
username = "iiot"
from = "iiot@plant.local"
to = ["a@plant.local"]

[[notify.routes]]
channels = ["oncall", "mail"]
severity = ["critical"]
building = ["A栋"]
device_id = "device_0*"
"#;

#[test]
fn channels_and_routes_load_from_the_file() {
    let config = load(CHANNELS).expect("valid");
    let n = &config.notify;
    assert_eq!(n.channels.len(), 2);
    let oncall = &n.channels[0];
    assert_eq!(
        (oncall.kind, oncall.format, oncall.retries),
        (ChannelKind::Webhook, WebhookFormat::Teams, 5)
    );
    assert_eq!(oncall.timeout, std::time::Duration::from_secs(2));
    assert_eq!(oncall.notify_on.len(), 3);
    assert_eq!(oncall.max_per_minute, Some(10));
    let mail = &n.channels[1];
    assert_eq!((mail.kind, mail.tls), (ChannelKind::Email, SmtpTls::None));
    assert_eq!(
        mail.notify_on,
        [Event::Raised, Event::Resolved],
        "the default"
    );
    assert_eq!(n.routes[0].channels, ["oncall", "mail"]);
    assert_eq!(n.routes[0].matchers.device_id.as_deref(), Some("device_0*"));
}

#[test]
fn secrets_of_channels_are_redacted() {
    let config = load(CHANNELS).expect("valid");
    let shown = config.redacted();
    let channels = &shown["notify"]["channels"];
    assert_eq!(channels[0]["secret"], "***");
    assert_eq!(channels[1]["password"], "***");
    assert_eq!(channels[1]["username"], "iiot");
    assert!(!shown.to_string().contains("s3cret") && !shown.to_string().contains("hunter2"));
    assert_eq!(shown["notify"]["routes"][0]["channels"][0], "oncall");
}

#[test]
fn the_one_line_webhook_comes_from_the_environment() {
    let config = Config::load(&from_env(&[
        ("NOTIFY_WEBHOOK_URL", "http://receiver.local:9000/hook"),
        ("NOTIFY_WEBHOOK_SECRET", "abc"),
        ("DASHBOARD_URL", "https://iiot.example.com"),
    ]))
    .expect("valid");
    let channels = config.notify.effective_channels();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].name, "webhook");
    assert_eq!(
        channels[0].url.as_deref(),
        Some("http://receiver.local:9000/hook")
    );
    assert_eq!(channels[0].secret.as_deref(), Some("abc"));
    assert_eq!(config.redacted()["notify"]["webhook_secret"], "***");
    let e = refusal(&[("NOTIFY_WEBHOOK_URL", "ftp://x")]);
    assert!(
        e.starts_with("invalid configuration: NOTIFY_WEBHOOK_URL=ftp://x (from environment)"),
        "{e}"
    );
}

#[test]
fn mistakes_name_the_table_and_field() {
    let webhook = "[[notify.channels]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://h/\"\n";
    let cases = [
        (
            "[[notify.channels]]\nname = \"a\"\nkind = \"webhook\"\nurll = \"http://h/\"\n".to_string(),
            "notify.channels[0]",
            "unknown field",
        ),
        (
            "[[notify.channels]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"not a url\"\n".into(),
            "notify.channels[0].url",
            "must be an http(s) URL",
        ),
        (
            "[[notify.channels]]\nname = \"a\"\nkind = \"pager\"\n".into(),
            "notify.channels[0]",
            "unknown variant",
        ),
        (format!("{webhook}{webhook}"), "notify.channels[1].name", "used once"),
        (
            format!("{webhook}[[notify.routes]]\nchannels = [\"b\"]\n"),
            "notify.routes[0].channels",
            "names no channel: b",
        ),
        (
            format!("{webhook}[[notify.routes]]\nchannels = [\"a\"]\ndevice_id = \"[x\"\n"),
            "notify.routes[0].device_id",
            "glob",
        ),
        (
            "[[notify.channels]]\nname = \"m\"\nkind = \"email\"\nsmtp_host = \"h\"\ntls = \"none\"\nfrom = \"a@b.c\"\n".into(),
            "notify.channels[0].to",
            "e-mail addresses",
        ),
        (
            "[[notify.channels]]\nname = \"has space\"\nkind = \"webhook\"\nurl = \"http://h/\"\n".into(),
            "notify.channels[0].name",
            "letters, digits",
        ),
    ];
    for (text, key, problem) in cases {
        let e = load(&text).expect_err(&text);
        assert_eq!(e.key, key, "{text}\n{e}");
        assert!(e.allowed.contains(problem), "{text}\n{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
