//! The simulator's run loop against in-memory publishers: what a consumer of `device-data` sees.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use iiot::simulator::{Fleet, Pace, RunOptions, SimStats, SimulatorConfig, run};
use iiot_model::{Limits, decode};
use iiot_transport::{Publisher, Receipt, TransportError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a publisher does with the message of a given (0-based) call.
type Behaviour = fn(usize) -> Result<Receipt, TransportError>;

/// Collects every published message with the (tokio) time it arrived.
struct Collector {
    started: Instant,
    calls: Mutex<usize>,
    messages: Mutex<Vec<(Duration, Bytes, Bytes)>>,
    behaviour: Behaviour,
}

impl Collector {
    fn new(behaviour: Behaviour) -> Arc<Collector> {
        Arc::new(Collector {
            started: Instant::now(),
            calls: Mutex::new(0),
            messages: Mutex::new(Vec::new()),
            behaviour,
        })
    }

    fn delivered(_: usize) -> Result<Receipt, TransportError> {
        Ok(Receipt::Delivered)
    }

    fn take(&self) -> Vec<(Duration, Bytes, Bytes)> {
        std::mem::take(&mut *self.messages.lock().expect("not poisoned"))
    }
}

#[async_trait]
impl Publisher for Collector {
    async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        assert_eq!(topic, "device-data");
        let call = {
            let mut calls = self.calls.lock().expect("not poisoned");
            *calls += 1;
            *calls - 1
        };
        let outcome = (self.behaviour)(call);
        if outcome.is_ok() {
            let at = self.started.elapsed();
            let key = Bytes::copy_from_slice(key);
            self.messages
                .lock()
                .expect("not poisoned")
                .push((at, key, payload));
        }
        outcome
    }

    async fn flush(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

fn options(pace: Pace, duration: Option<Duration>) -> RunOptions {
    RunOptions {
        topic: "device-data".to_string(),
        pace,
        duration,
        progress: false,
    }
}

fn fleet(devices: u32, interval: Duration, fault_rate: f64) -> Fleet {
    Fleet::new(&SimulatorConfig {
        devices,
        interval,
        seed: 11,
        variance: 0.1,
        fault_rate,
        malformed_rate: 0.0,
    })
}

#[tokio::test]
async fn full_speed_run_delivers_contiguous_valid_readings_per_device() {
    let collector = Collector::new(Collector::delivered);
    let stats = Arc::new(SimStats::default());
    let fleet = fleet(200, Duration::from_secs(1), 0.01);
    let fleet = run(
        fleet,
        collector.clone(),
        options(Pace::FullSpeed, Some(Duration::from_millis(300))),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .expect("run succeeds");

    let messages = collector.take();
    assert!(messages.len() > 400, "only {} messages", messages.len());
    let now = iiot::now_ms();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for (_, key, payload) in &messages {
        let reading = decode(payload, now, &Limits::default()).expect("every payload is valid");
        assert_eq!(reading.device_id.as_bytes(), &key[..], "keyed by device id");
        let last = last_seq.entry(reading.device_id.to_string()).or_default();
        assert_eq!(reading.seq, *last + 1, "{} seq", reading.device_id);
        *last = reading.seq;
    }
    for idx in 0..fleet.len() {
        let seen = last_seq.get(fleet.device_id(idx)).copied().unwrap_or(0);
        assert_eq!(seen, fleet.last_seq(idx), "{}", fleet.device_id(idx));
    }
    let s = stats.snapshot();
    assert_eq!(s.sent, messages.len() as u64);
    assert_eq!((s.errors, s.malformed), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn real_time_run_spreads_devices_across_the_interval() {
    let collector = Collector::new(Collector::delivered);
    let stats = Arc::new(SimStats::default());
    run(
        fleet(1000, Duration::from_millis(100), 0.0),
        collector.clone(),
        options(Pace::RealTime, Some(Duration::from_millis(300))),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .expect("run succeeds");

    let messages = collector.take();
    assert_eq!(messages.len(), 3000, "three rounds of 1000 devices");
    let early = messages
        .iter()
        .filter(|(at, _, _)| *at < Duration::from_millis(50))
        .count();
    assert!(
        (400..=600).contains(&early),
        "{early} sent in the first 50 ms"
    );
    // No millisecond carries more than a small burst.
    let mut per_ms: HashMap<u128, usize> = HashMap::new();
    for (at, _, _) in &messages {
        *per_ms.entry(at.as_millis()).or_default() += 1;
    }
    let burst = per_ms.values().copied().max().unwrap_or(0);
    assert!(burst <= 30, "burst of {burst} in one millisecond");
    // Device 500 goes out half-way through each interval.
    let device_500: Vec<u128> = messages
        .iter()
        .filter(|(_, key, _)| &key[..] == b"device_501")
        .map(|(at, _, _)| at.as_millis())
        .collect();
    assert_eq!(device_500.len(), 3);
    for (round, at) in device_500.iter().enumerate() {
        let due = round as u128 * 100 + 50;
        assert!(at.abs_diff(due) <= 2, "device_501 at {at} ms, due {due} ms");
    }
}

#[tokio::test]
async fn real_time_run_on_the_real_clock_keeps_pace() {
    let collector = Collector::new(Collector::delivered);
    let stats = Arc::new(SimStats::default());
    run(
        fleet(100, Duration::from_millis(50), 0.0),
        collector.clone(),
        options(Pace::RealTime, Some(Duration::from_millis(200))),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .expect("run succeeds");

    let messages = collector.take();
    // Four rounds are due before the deadline; a slow machine may miss the tail of the last.
    assert!(
        (250..=400).contains(&messages.len()),
        "{} messages",
        messages.len()
    );
    let early = messages
        .iter()
        .filter(|(at, _, _)| *at < Duration::from_millis(20))
        .count();
    assert!(early < 80, "{early} of 100 devices in the first 20 ms");
}

#[tokio::test]
async fn shutdown_stops_an_endless_run() {
    let collector = Collector::new(Collector::delivered);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        fleet(50, Duration::from_millis(10), 0.0),
        collector.clone(),
        options(Pace::RealTime, None),
        shutdown.clone(),
        Arc::new(SimStats::default()),
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    let fleet = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops promptly")
        .expect("no panic")
        .expect("run succeeds");
    assert!(fleet.last_seq(0) >= 1);
    assert!(!collector.take().is_empty());
}

#[tokio::test]
async fn a_closed_publisher_ends_the_run_cleanly() {
    let collector = Collector::new(|call| {
        if call < 10 {
            Ok(Receipt::Delivered)
        } else {
            Err(TransportError::Closed)
        }
    });
    let stats = Arc::new(SimStats::default());
    let run = run(
        fleet(20, Duration::from_millis(100), 0.0),
        collector.clone(),
        options(Pace::FullSpeed, None),
        CancellationToken::new(),
        stats.clone(),
    );
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("ends without a deadline")
        .expect("closed is a clean end");
    assert_eq!(stats.snapshot().sent, 10);
    assert_eq!(collector.take().len(), 10);
}

#[tokio::test]
async fn publish_failures_are_counted_and_the_run_goes_on() {
    let collector = Collector::new(|call| {
        if call % 2 == 0 {
            Ok(Receipt::Delivered)
        } else {
            Err(TransportError::Delivery("broker said no".into()))
        }
    });
    let stats = Arc::new(SimStats::default());
    run(
        fleet(20, Duration::from_millis(100), 0.0),
        collector.clone(),
        options(Pace::FullSpeed, Some(Duration::from_millis(100))),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .expect("run succeeds");
    let s = stats.snapshot();
    assert!(s.errors > 20, "{s:?}");
    assert!(s.sent.abs_diff(s.errors) <= 1, "{s:?}");
}

#[tokio::test]
async fn pending_receipts_are_counted_when_delivered() {
    let collector = Collector::new(|call| {
        if call % 3 == 0 {
            Ok(Receipt::Pending(Box::pin(async {
                Err(TransportError::Delivery("lost".into()))
            })))
        } else {
            Ok(Receipt::Pending(Box::pin(async {
                tokio::task::yield_now().await;
                Ok(())
            })))
        }
    });
    let stats = Arc::new(SimStats::default());
    run(
        fleet(30, Duration::from_millis(100), 0.0),
        collector.clone(),
        options(Pace::FullSpeed, Some(Duration::from_millis(100))),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .expect("run succeeds");
    let s = stats.snapshot();
    let published = collector.take().len() as u64;
    assert_eq!(s.sent + s.errors, published, "{s:?}");
    assert!(s.errors > 0 && s.sent > s.errors, "{s:?}");
}

#[tokio::test]
async fn malformed_messages_are_published_and_counted() {
    let collector = Collector::new(Collector::delivered);
    let stats = Arc::new(SimStats::default());
    let fleet = Fleet::new(&SimulatorConfig {
        devices: 50,
        interval: Duration::from_secs(1),
        seed: 3,
        variance: 0.1,
        fault_rate: 0.0,
        malformed_rate: 0.2,
    });
    run(
        fleet,
        collector.clone(),
        options(Pace::FullSpeed, Some(Duration::from_millis(150))),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .expect("run succeeds");
    let messages = collector.take();
    let now = iiot::now_ms();
    let invalid = messages
        .iter()
        .filter(|(_, _, p)| decode(p, now, &Limits::default()).is_err())
        .count() as u64;
    let s = stats.snapshot();
    assert_eq!(invalid, s.malformed, "{s:?}");
    assert!(s.malformed > 0 && s.malformed < s.sent / 2, "{s:?}");
    assert_eq!(s.sent, messages.len() as u64);
}

#[tokio::test]
async fn an_empty_fleet_waits_for_its_deadline() {
    let collector = Collector::new(Collector::delivered);
    let fleet = run(
        fleet(0, Duration::from_millis(100), 0.0),
        collector.clone(),
        options(Pace::FullSpeed, Some(Duration::from_millis(20))),
        CancellationToken::new(),
        Arc::new(SimStats::default()),
    )
    .await
    .expect("run succeeds");
    assert!(fleet.is_empty());
    assert!(collector.take().is_empty());
}
