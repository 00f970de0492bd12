//! Silences over the API, with an injected clock: created, listed and deleted; bad input and
//! unknown ids answered as JSON 4xx; an alert raised under a silence is recorded and shown
//! (marked `silenced`) but not delivered, and delivered when the silence ends if still open;
//! a weekly window in a time zone holds only inside its hours.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use iiot::http::app;
use iiot::sinks::Sink;
use iiot::sinks::live::Live;
use iiot::sinks::notify::NotifyShared;
use iiot_model::AlertStatus;
use serde_json::{Value, json};
use support::api::{get, send_json};
use support::notify::{ManualClock, WebhookReceiver, alert, config, notifier, tell, with_status};
use support::{StateParts, app_state, wait_until};
use tokio::sync::mpsc;

/// Sunday 2024-01-07 00:00 UTC.
const SUNDAY: i64 = 1_704_585_600_000;
const HOUR: i64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    app: Router,
    live: Live,
    receiver: WebhookReceiver,
    clock: ManualClock,
    notifier: iiot::sinks::notify::Notifier,
    shared: Arc<NotifyShared>,
    _commands: mpsc::Receiver<iiot::processor::run::Command>,
}

async fn fixture() -> Fixture {
    let receiver = WebhookReceiver::start(0).await;
    let clock = ManualClock::at(SUNDAY);
    let config = config(&format!(
        "[[notify.channels]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        receiver.url()
    ));
    let (notifier, shared) = notifier(&config, clock.clock());
    let (tx, rx) = mpsc::channel(8);
    let bus = support::bus(&config);
    let parts = StateParts {
        notify: Some(shared.clone()),
        ..StateParts::new(Arc::new(bus), tx)
    };
    let state = app_state(parts);
    Fixture {
        live: state.live.clone(),
        app: app(state),
        receiver,
        clock,
        notifier,
        shared,
        _commands: rx,
    }
}

async fn create(app: &Router, body: Value) -> (StatusCode, Value) {
    send_json(app, Method::POST, "/api/silences", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_are_created_listed_and_deleted_and_bad_input_is_refused() {
    let f = fixture().await;
    let (status, s) = create(
        &f.app,
        json!({"matchers": {"building": ["A栋"], "severity": ["high"]},
               "ends_at": SUNDAY + HOUR, "comment": "pump swap", "created_by": "ana"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().expect("an id").to_string();
    assert_eq!(s["starts_at"], SUNDAY);
    let (status, list) = get(&f.app, "/api/silences").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["active"], true);
    assert_eq!(list["items"][0]["created_by"], "ana");

    for bad in [
        json!({"comment": "no end"}),
        json!({"ends_at": SUNDAY - 1}),
        json!({"ends_at": SUNDAY + HOUR, "matchers": {"colour": ["red"]}}),
        json!({"schedule": {"days": ["sun"], "start": "02:00", "end": "04:00", "tz": "Nowhere/City"}}),
    ] {
        let (status, body) = create(&f.app, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    let (status, _) = send_json(
        &f.app,
        Method::DELETE,
        &format!("/api/silences/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send_json(
        &f.app,
        Method::DELETE,
        &format!("/api/silences/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown silence");
    assert_eq!(get(&f.app, "/api/silences").await.1["items"], json!([]));
    // A body larger than any silence is not read to its end.
    let huge = json!({ "comment": "x".repeat(1 << 20), "ends_at": 1 });
    let (status, body) = create(&f.app, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["limit_bytes"], 65536);
    f.notifier.stop().await;
}

/// The alert to the live store and to the notifier, as the processors hand it to both.
async fn raise(f: &Fixture, a: &iiot_model::Alert) {
    Sink::take(
        &f.live,
        &iiot::sinks::Verdicts {
            alerts: vec![iiot::sinks::AlertChange::new(a.clone())],
            ..iiot::sinks::Verdicts::empty(SUNDAY)
        },
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("live");
    tell(f.notifier.sink().as_ref(), std::slice::from_ref(a)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_alert_is_recorded_but_delivered_only_when_the_silence_ends() {
    let f = fixture().await;
    let (status, _) = create(
        &f.app,
        json!({"matchers": {"device_id": "device_0*"}, "ends_at": SUNDAY + HOUR}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let open = alert("device_042");
    let closes = alert("device_043");
    let loud = alert("device_142");
    for a in [&open, &closes, &loud] {
        raise(&f, a).await;
    }
    raise(&f, &with_status(closes.clone(), AlertStatus::Resolved)).await;
    wait_until("the unsilenced alert", WAIT, || {
        f.receiver.received().len() == 1
    })
    .await;
    assert_eq!(f.receiver.received()[0].json()["device_id"], "device_142");
    let ops = || f.shared.stats.channel("ops").expect("ops");
    wait_until("three silenced", WAIT, || ops().silenced == 3).await;

    // Recorded and shown, marked.
    let (_, alerts) = get(&f.app, "/api/alerts?status=active").await;
    let marks: Vec<(String, bool)> = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            (
                a["device_id"].as_str().unwrap_or("").to_string(),
                a["silenced"] == true,
            )
        })
        .collect();
    assert!(marks.contains(&("device_042".into(), true)), "{marks:?}");
    assert!(marks.contains(&("device_142".into(), false)), "{marks:?}");

    f.clock.set(SUNDAY + HOUR);
    wait_until("the open one, told", WAIT, || {
        f.receiver.received().len() == 2
    })
    .await;
    let told = f.receiver.received()[1].json();
    assert_eq!(
        (told["device_id"].clone(), told["event"].clone()),
        (json!("device_042"), json!("raised"))
    );
    f.notifier.stop().await;
    assert_eq!(
        f.receiver.received().len(),
        2,
        "the one resolved under the silence stays untold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_window_holds_only_inside_its_hours_in_its_time_zone() {
    let f = fixture().await;
    let (status, s) = create(
        &f.app,
        json!({"schedule": {"days": ["sun"], "start": "02:00", "end": "04:00", "tz": "Europe/Berlin"},
               "comment": "weekly maintenance"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    // 02:30 Berlin (UTC+1 in January): inside the window.
    f.clock.set(SUNDAY + HOUR + HOUR / 2);
    assert_eq!(
        get(&f.app, "/api/silences").await.1["items"][0]["active"],
        true
    );
    raise(&f, &alert("device_001")).await;
    let ops = || f.shared.stats.channel("ops").expect("ops");
    wait_until("silenced", WAIT, || ops().silenced == 1).await;
    assert!(f.receiver.received().is_empty());
    // 04:00 Berlin: the window is over, the open alert is told.
    f.clock.set(SUNDAY + 3 * HOUR);
    wait_until("told after the window", WAIT, || {
        f.receiver.received().len() == 1
    })
    .await;
    // Monday 02:30 Berlin: outside (Sundays only), told at once.
    f.clock.set(SUNDAY + 25 * HOUR + HOUR / 2);
    raise(&f, &alert("device_002")).await;
    wait_until("told at once", WAIT, || f.receiver.received().len() == 2).await;
    f.notifier.stop().await;
}
