//! The e-mail channel against a real SMTP server (`aiosmtpd`, started by the test): one
//! message per alert change, with the subject and body templates filled in and every
//! recipient addressed; or, with `digest`, one message per interval listing every change.

mod support;

use std::time::Duration;

use iiot::sinks::notify::silences::system_clock;
use iiot_model::AlertStatus;
use support::notify::{ManualClock, SmtpServer, alert, config, notifier, tell, with_status};
use support::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_change_is_mailed_with_the_templates_filled_in() {
    let smtp = SmtpServer::start();
    let toml = format!(
        r#"
[notify]
dashboard_url = "http://plant.local:8080"

[[notify.channels]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
from = "IIoT Monitor <iiot@plant.local>"
to = ["shift@plant.local", "lead@plant.local"]
subject = "[{{severity}}] {{alert_type}} {{event}} on {{device_id}}"
body = "{{message}}\nSee {{link}}\n"
retry_backoff = "20ms"
"#,
        port = smtp.port
    );
    let (notifier, shared) = notifier(&config(&toml), system_clock());
    let a = alert("device_042");
    tell(notifier.sink().as_ref(), std::slice::from_ref(&a)).await;
    tell(
        notifier.sink().as_ref(),
        &[with_status(a, AlertStatus::Resolved)],
    )
    .await;
    wait_until("two messages", Duration::from_secs(15), || {
        smtp.messages().len() == 2
    })
    .await;
    notifier.stop().await;

    let mail = smtp.messages();
    let subjects: Vec<_> = mail.iter().map(|m| m["subject"].clone()).collect();
    assert_eq!(
        subjects,
        [
            "[high] temperature_high raised on device_042",
            "[high] temperature_high resolved on device_042"
        ]
    );
    for m in &mail {
        assert_eq!(m["mail_from"], "iiot@plant.local");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["shift@plant.local", "lead@plant.local"])
        );
        let body = m["body"].as_str().expect("text body");
        assert!(
            body.contains("temperature above 80 °C on device_042"),
            "{body}"
        );
        assert!(
            body.contains("See http://plant.local:8080/#/device/device_042"),
            "{body}"
        );
    }
    assert_eq!(shared.stats.channel("mail").expect("mail").sent, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_channel_mails_every_change_of_the_interval_in_one_message() {
    let smtp = SmtpServer::start();
    let toml = format!(
        "[[notify.channels]]\nname = \"digest\"\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\n\
         smtp_port = {}\ntls = \"none\"\nfrom = \"iiot@plant.local\"\nto = [\"shift@plant.local\"]\n\
         digest = \"15m\"\n",
        smtp.port
    );
    let clock = ManualClock::at(1_700_000_000_000);
    let (notifier, shared) = notifier(&config(&toml), clock.clock());
    let a = alert("device_001");
    let changes = [
        a.clone(),
        alert("device_002"),
        with_status(a, AlertStatus::Resolved),
    ];
    tell(notifier.sink().as_ref(), &changes).await;
    let queued_or_sent = || {
        let c = shared.stats.channel("digest").expect("digest");
        c.sent + c.queued
    };
    // Taken by the dispatcher, and nothing goes out before the interval ends.
    wait_until("the changes taken", Duration::from_secs(5), || {
        shared.stats.snapshot().intake == 0
    })
    .await;
    assert_eq!(queued_or_sent(), 0);
    clock.set(1_700_000_000_000 + 15 * 60_000);
    wait_until("one message", Duration::from_secs(15), || {
        smtp.messages().len() == 1
    })
    .await;
    notifier.stop().await;
    let mail = &smtp.messages()[0];
    assert_eq!(mail["subject"], "3 alert changes (2 raised, 1 resolved)");
    let body = mail["body"].as_str().expect("body");
    assert_eq!(body.lines().filter(|l| !l.is_empty()).count(), 3, "{body}");
    assert!(
        body.contains("[HIGH] temperature_high resolved on device_001"),
        "{body}"
    );
    assert!(
        body.contains("[HIGH] temperature_high raised on device_002"),
        "{body}"
    );
}
