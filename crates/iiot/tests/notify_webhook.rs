//! Webhook channels against a real HTTP receiver started by the test: the signed JSON body, the
//! Slack and Teams envelopes, retries after 500s and while the receiver is down, the failure
//! counted once the retries are spent, and the rate limit's digest.

mod support;

use std::time::Duration;

use iiot::sinks::notify::channels::signature;
use iiot_model::AlertStatus;
use support::notify::{
    ManualClock, WebhookReceiver, alert, config, free_local_addr, notifier, tell, with_status,
};
use support::wait_until;

const WAIT: Duration = Duration::from_secs(10);

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[notify.channels]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n\
         retry_backoff = \"20ms\"\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_and_resolved_are_posted_signed_with_a_link_to_the_device() {
    let receiver = WebhookReceiver::start(0).await;
    let mut toml = webhook("ops", &receiver.url(), "secret = \"s3cret\"");
    toml.push_str("[notify]\ndashboard_url = \"https://iiot.example.com/\"\n");
    let config = config(&toml);
    let (notifier, shared) = notifier(&config, iiot::sinks::notify::silences::system_clock());
    let sink = notifier.sink();
    let a = alert("device_007");
    tell(sink.as_ref(), std::slice::from_ref(&a)).await;
    // Acknowledged is not told by default.
    tell(
        sink.as_ref(),
        &[with_status(a.clone(), AlertStatus::Acknowledged)],
    )
    .await;
    tell(sink.as_ref(), &[with_status(a, AlertStatus::Resolved)]).await;
    wait_until("two posts", WAIT, || receiver.received().len() == 2).await;
    notifier.stop().await;

    let got = receiver.received();
    let events: Vec<_> = got.iter().map(|r| r.json()["event"].clone()).collect();
    assert_eq!(events, ["raised", "resolved"]);
    for r in &got {
        let body = r.json();
        assert_eq!(body["device_id"], "device_007");
        assert_eq!(body["alert_type"], "temperature_high");
        assert_eq!(body["threshold"]["value"], 80.0);
        assert_eq!(body["link"], "https://iiot.example.com/#/device/device_007");
        let sig = r.headers["x-iiot-signature"].to_str().expect("ascii");
        assert_eq!(sig, signature("s3cret", &r.body));
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
    }
    assert_eq!(got[1].json()["status"], "resolved");
    assert_eq!(shared.stats.channel("ops").expect("ops").sent, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_teams_get_their_own_envelopes() {
    let receiver = WebhookReceiver::start(0).await;
    let url = receiver.url();
    let toml = webhook("slack", &url, "format = \"slack\"")
        + &webhook("teams", &url, "format = \"teams\"");
    let (notifier, _) = notifier(
        &config(&toml),
        iiot::sinks::notify::silences::system_clock(),
    );
    tell(notifier.sink().as_ref(), &[alert("device_001")]).await;
    wait_until("both posts", WAIT, || receiver.received().len() == 2).await;
    notifier.stop().await;
    let bodies: Vec<_> = receiver.received().iter().map(|r| r.json()).collect();
    let slack = bodies
        .iter()
        .find(|b| b.get("text").is_some())
        .expect("slack");
    assert!(
        slack["text"]
            .as_str()
            .is_some_and(|t| t.contains("[HIGH] temperature_high raised on device_001")),
        "{slack}"
    );
    assert_eq!(slack["blocks"][0]["type"], "section");
    let teams = bodies
        .iter()
        .find(|b| b["type"] == "message")
        .expect("teams");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["version"], "1.4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_is_retried_until_it_takes_the_post() {
    let receiver = WebhookReceiver::start(2).await;
    let config = config(&webhook("ops", &receiver.url(), "retries = 5"));
    let (notifier, shared) = notifier(&config, iiot::sinks::notify::silences::system_clock());
    tell(notifier.sink().as_ref(), &[alert("device_001")]).await;
    wait_until("the post", WAIT, || receiver.received().len() == 1).await;
    notifier.stop().await;
    assert_eq!(receiver.attempts(), 3);
    let ops = shared.stats.channel("ops").expect("ops");
    assert_eq!((ops.sent, ops.retries), (1, 2));
    assert_eq!(ops.failed.iter().sum::<u64>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_for_a_while_gets_the_post_when_it_is_back() {
    let addr = free_local_addr();
    let url = format!("http://{addr}/hook");
    let config = config(&webhook("ops", &url, "retries = 20"));
    let (notifier, shared) = notifier(&config, iiot::sinks::notify::silences::system_clock());
    tell(notifier.sink().as_ref(), &[alert("device_001")]).await;
    let retries = || shared.stats.channel("ops").expect("ops").retries;
    wait_until("two failed attempts", WAIT, || retries() >= 2).await;
    let receiver = WebhookReceiver::start_on(addr).await;
    wait_until("the post", Duration::from_secs(30), || {
        receiver.received().len() == 1
    })
    .await;
    notifier.stop().await;
    assert_eq!(receiver.received()[0].json()["device_id"], "device_001");
    assert_eq!(shared.stats.channel("ops").expect("ops").sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_counted_with_the_reason() {
    let receiver = WebhookReceiver::start(usize::MAX).await;
    let config = config(&webhook("ops", &receiver.url(), "retries = 2"));
    let (notifier, shared) = notifier(&config, iiot::sinks::notify::silences::system_clock());
    tell(notifier.sink().as_ref(), &[alert("device_001")]).await;
    let failed = || {
        shared
            .stats
            .channel("ops")
            .expect("ops")
            .failed
            .iter()
            .sum::<u64>()
    };
    wait_until("the failure", WAIT, || failed() == 1).await;
    notifier.stop().await;
    assert_eq!(receiver.attempts(), 3, "first attempt and two retries");
    let text = iiot::http::metrics::Snapshot::take(&ops_state(shared)).to_prometheus();
    assert!(
        text.contains("iot_notifications_failed_total{channel=\"ops\",reason=\"http_5xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("iot_notification_retries_total{channel=\"ops\"} 2"));
    assert!(text.contains("iot_notifications_sent_total{channel=\"ops\"} 0"));
}

fn ops_state(shared: std::sync::Arc<iiot::sinks::notify::NotifyShared>) -> iiot::http::OpsState {
    let config = iiot::config::Config::default();
    let bus = support::bus(&config);
    let mut ops =
        iiot::http::OpsState::new(&config, std::sync::Arc::default(), std::sync::Arc::new(bus));
    ops.notify = Some(shared);
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_changes_are_summed_up_in_a_digest_when_the_minute_ends() {
    let receiver = WebhookReceiver::start(0).await;
    let clock = ManualClock::at(1_700_000_000_000);
    let config = config(&webhook("ops", &receiver.url(), "max_per_minute = 2"));
    let (notifier, shared) = notifier(&config, clock.clock());
    let alerts: Vec<_> = (1..=5).map(|i| alert(&format!("device_{i:03}"))).collect();
    tell(notifier.sink().as_ref(), &alerts).await;
    wait_until("two posts", WAIT, || receiver.received().len() == 2).await;
    wait_until("three held", WAIT, || {
        shared.stats.channel("ops").expect("ops").rate_limited == 3
    })
    .await;
    clock.set(1_700_000_000_000 + 60_000);
    wait_until("the digest", WAIT, || receiver.received().len() == 3).await;
    notifier.stop().await;
    let digest = receiver.received()[2].json();
    assert_eq!(digest["event"], "digest");
    assert_eq!(digest["held"], 3);
    assert_eq!(digest["by_alert_type"]["temperature_high"], 3);
    assert!(
        digest["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("3 more alert changes")),
        "{digest}"
    );
}
