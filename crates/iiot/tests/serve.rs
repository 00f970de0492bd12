//! The serve side's data path: the store follows `device-data` and `alerts` on the bus.

mod support;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use iiot::store::{Store, StoreConfig};
use iiot_model::{Alert, AlertStatus, Operator, Severity, Threshold};
use iiot_transport::{Bus, BusConfig, Publisher, Transport};
use support::readings::reading_bytes;

#[tokio::test]
async fn the_store_follows_readings_and_alerts_and_skips_invalid_ones() {
    let bus = Bus::new(BusConfig::default());
    let readings = bus
        .subscribe("device-data", "serve")
        .await
        .expect("subscribe");
    let alerts = bus.subscribe("alerts", "serve").await.expect("subscribe");
    let store = Arc::new(RwLock::new(Store::new(StoreConfig::default())));
    let feeder = support::spawn_feed_store(store.clone(), readings, alerts);

    let t0 = iiot::now_ms() - 60_000;
    for seq in 1..=10 {
        bus.publish(
            "device-data",
            b"device_001",
            reading_bytes(
                "device_001",
                seq,
                t0 + seq as i64 * 5_000,
                20.0 + seq as f64,
            ),
        )
        .await
        .expect("publish");
    }
    bus.publish(
        "device-data",
        b"device_002",
        Bytes::from_static(b"{not json"),
    )
    .await
    .expect("publish");
    let alert = Alert {
        alert_id: "alert_20240130_0123456789ab".into(),
        device_id: "device_001".into(),
        alert_type: "temperature_high".into(),
        severity: Severity::High,
        message: "temperature 85 °C above threshold 80 °C".into(),
        timestamp: t0,
        status: AlertStatus::Active,
        threshold: Threshold {
            parameter: "temperature".into(),
            operator: Operator::Above,
            value: 80.0,
        },
        current_value: 85.0,
        acknowledged_by: None,
    };
    bus.publish(
        "alerts",
        b"device_001",
        Bytes::from(serde_json::to_vec(&alert).expect("json")),
    )
    .await
    .expect("publish");
    bus.close();
    tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .expect("the feeder ends when the bus closes")
        .expect("task")
        .expect("no transport error");

    let store = store.read().expect("lock");
    let view = store
        .device("device_001", iiot::now_ms())
        .expect("device_001 recorded");
    assert_eq!(view.latest.seq, 10);
    assert_eq!(view.latest.sensors.temperature.value, 30.0);
    assert!(
        store.device("device_002", iiot::now_ms()).is_none(),
        "invalid input is not stored"
    );
    assert_eq!(
        store.alert(&alert.alert_id).map(|a| a.status),
        Some(AlertStatus::Active)
    );
}
