//! `iiot bench`: drives the pipeline (simulator → embedded bus or Kafka → processors → the topic
//! sink and the live store and hub) and reports throughput and event → processed latency as
//! JSON, with the machine, the backend and the command, over several runs with median and
//! spread. `--no-store` leaves the live store and hub out (the figure before they were in);
//! `--history` also keeps history on disk, in a temporary `DATA_DIR` of each run (off by
//! default, so figures stay comparable with those taken before history existed).
//!
//! On Kafka (`--kafka-brokers`) every run gets topics and a consumer group of its own, so runs
//! never read each other's readings; the processors join the group (a warm-up reading must come
//! through) before the timed run starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use bytes::Bytes;
use iiot_model::Reading;

use crate::backend;
use crate::config::Config;
use crate::history::{History, HistoryConfig};
use crate::hub::{Hub, HubConfig};
use crate::processor::group::{GroupInputs, ProcessorGroup};
use crate::roles::process::topic_sink;
use crate::simulator::{self, Fleet, Pace, RunOptions, SimStats, SimulatorConfig};
use crate::sinks::live::Live;
use crate::store::{Store, StoreConfig};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How long each run publishes.
    pub duration: Duration,
    /// How many runs.
    pub runs: u32,
    /// `FullSpeed` for maximum throughput; `RealTime` to hold the configured rate
    /// (devices / interval) and measure latency at that load.
    pub pace: Pace,
    /// The command line, echoed into the report.
    pub command: String,
    /// Whether the processors feed the live store and hub (as `iiot run` does).
    pub store: bool,
    /// Whether the live store also keeps history on disk (in a temporary `DATA_DIR`, removed
    /// after each run; `HISTORY_*` settings from the configuration). Needs `store`.
    pub history: bool,
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The command that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Simulated devices.
    pub devices: u32,
    /// `embedded bus` or `kafka <brokers>`, with the producer settings on Kafka.
    pub backend: String,
    /// `full_speed` or `real_time`.
    pub pace: &'static str,
    /// What the processors' verdicts go to: `topics + live store + hub (+ history)`, or
    /// `topics`.
    pub sinks: &'static str,
    /// Publishing time of each run, seconds.
    pub duration_s: f64,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Median and spread over the runs.
    pub summary: Summary,
}

/// Machine facts.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model, from /proc/cpuinfo when available.
    pub cpu_model: String,
    /// `release` or `debug`.
    pub profile: &'static str,
    /// OS and architecture.
    pub target: String,
}

/// One run.
#[derive(Debug, Serialize)]
pub struct RunResult {
    /// Readings processed per second of wall time (start of publishing → processor drained).
    pub readings_per_sec: f64,
    /// Messages published.
    pub sent: u64,
    /// Readings processed.
    pub processed: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Times the simulator waited on a full queue (bus or Kafka producer).
    pub backpressure_waits: u64,
    /// Event → processed latency in whole ms (event times have ms resolution; 0 = within the
    /// millisecond the reading was stamped).
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Maximum.
    pub latency_max_ms: f64,
    /// With `--history`: readings history kept (written to its log by the end of the run),
    /// dropped (too many waiting for the disk), and seals done; `close` seals the rest after
    /// the timed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRun>,
}

/// What history did in one run.
#[derive(Debug, Serialize)]
pub struct HistoryRun {
    /// Readings in the write-ahead log when the processors had drained.
    pub logged: u64,
    /// Readings dropped because too many waited for the disk.
    pub dropped: u64,
    /// Seals done during the run.
    pub seals: u64,
    /// Seconds `close` took after the run (sealing what was left).
    pub close_s: f64,
}

/// Median and min/max of the runs.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Median readings/s.
    pub readings_per_sec_median: f64,
    /// Slowest run.
    pub readings_per_sec_min: f64,
    /// Fastest run.
    pub readings_per_sec_max: f64,
    /// Median of the runs' p50 latency.
    pub latency_p50_ms_median: f64,
    /// Median of the runs' p99 latency.
    pub latency_p99_ms_median: f64,
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        target: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the benchmark described by `config` (devices, interval, faults) and `options`.
pub async fn run(config: &Config, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let mut runs = Vec::new();
    for i in 0..options.runs.max(1) {
        let r = one_run(config, options).await?;
        tracing::info!(
            run = i + 1,
            readings_per_sec = r.readings_per_sec as u64,
            p99_ms = r.latency_p99_ms,
            "bench run done"
        );
        runs.push(r);
    }
    let rates: Vec<f64> = runs.iter().map(|r| r.readings_per_sec).collect();
    let summary = Summary {
        readings_per_sec_median: median(rates.clone()),
        readings_per_sec_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        readings_per_sec_max: rates.iter().copied().fold(0.0, f64::max),
        latency_p50_ms_median: median(runs.iter().map(|r| r.latency_p50_ms).collect()),
        latency_p99_ms_median: median(runs.iter().map(|r| r.latency_p99_ms).collect()),
    };
    Ok(BenchReport {
        command: options.command.clone(),
        machine: machine(),
        devices: config.simulator.device_count,
        backend: describe_backend(config),
        pace: match options.pace {
            Pace::FullSpeed => "full_speed",
            Pace::RealTime => "real_time",
        },
        sinks: if options.store && options.history {
            "topics + live store + hub + history"
        } else if options.store {
            "topics + live store + hub"
        } else {
            "topics"
        },
        duration_s: options.duration.as_secs_f64(),
        runs,
        summary,
    })
}

fn describe_backend(config: &Config) -> String {
    let k = &config.kafka;
    match &k.brokers {
        None => "embedded bus".into(),
        Some(brokers) => format!(
            "kafka {brokers} (idempotent, acks=all, compression {}, linger {}, batch {} B, \
             queue {} messages; {} partitions)",
            k.compression,
            crate::duration::format_duration(k.linger),
            k.batch_size,
            k.queue_max_messages,
            k.partitions_device_data
        ),
    }
}

/// How long a Kafka run waits for its consumer group to form, and for the processors to catch
/// up after publishing.
const KAFKA_WAIT: Duration = Duration::from_secs(120);
/// How long a Kafka run lets its consumer group settle after the first member is reading.
const GROUP_SETTLE: Duration = Duration::from_secs(8);

async fn one_run(config: &Config, options: &BenchOptions) -> anyhow::Result<RunResult> {
    let mut config = config.clone();
    let backend = backend::from_config(&config)?;
    // A backend that keeps history would hand a run the readings of the runs before it.
    let kafka = backend.keeps_history();
    if kafka {
        // Fresh topics and group: nothing from an earlier run is read again.
        let run = crate::now_ms();
        let k = &mut config.kafka;
        k.topic_device_data = format!("{}-bench-{run}", k.topic_device_data);
        k.topic_alerts = format!("{}-bench-{run}", k.topic_alerts);
        k.topic_dlq = format!("{}-bench-{run}", k.topic_dlq);
        k.topic_alert_state = format!("{}-bench-{run}", k.topic_alert_state);
        k.group_id = format!("{}-bench-{run}", k.group_id);
        let stop = tokio_util::sync::CancellationToken::new();
        let prepared = tokio::time::timeout(
            KAFKA_WAIT,
            backend::prepare_topics(&backend, &config, &stop),
        )
        .await;
        if let Ok(Err(mismatch)) = &prepared {
            anyhow::bail!("{mismatch}");
        }
        if !matches!(prepared, Ok(Ok(true))) {
            anyhow::bail!("no Kafka broker answered within {KAFKA_WAIT:?}");
        }
    }
    let config = &config;
    let mut inputs = GroupInputs::new(Vec::new());
    inputs
        .sinks
        .push(topic_sink(config, &backend, &inputs.stats));
    let history = if options.store && options.history {
        Some(open_history(config)?)
    } else {
        None
    };
    if options.store {
        let live = Live::new(
            Store::new(StoreConfig::from_config(config)),
            Hub::new(HubConfig::from_config(config)),
        )
        .with_history(history.as_ref().map(|(h, _)| h.clone()));
        inputs.sinks.push(Arc::new(live));
    }
    let embedded = ProcessorGroup::start(config, backend.clone(), inputs).await?;
    let mut baseline = 0;
    if kafka {
        let warm_up = Reading::example("device_warmup", 1, crate::now_ms(), 20.0);
        let body = serde_json::to_vec(&warm_up)?;
        backend
            .publisher()
            .publish(
                &config.kafka.topic_device_data,
                b"device_warmup",
                Bytes::from(body),
            )
            .await?
            .delivered()
            .await?;
        if !embedded.wait_for(1, KAFKA_WAIT).await {
            anyhow::bail!("the processors did not join their consumer group within {KAFKA_WAIT:?}");
        }
        // Every member may not have joined yet: a later join moves partitions while the run
        // streams. Let the group settle (its members join within a few seconds) first.
        tokio::time::sleep(GROUP_SETTLE).await;
        baseline = embedded.stats.taken();
    }
    let sim_stats = Arc::new(SimStats::default());
    let started = Instant::now();
    let opts = RunOptions {
        topic: config.kafka.topic_device_data.clone(),
        pace: options.pace,
        duration: Some(options.duration),
        progress: false,
    };
    let simulated = simulator::run(
        Fleet::new(&SimulatorConfig::from_config(config)),
        backend.publisher(),
        opts,
        embedded.processor_done.clone(),
        sim_stats.clone(),
    )
    .await;
    if kafka {
        let expected = baseline + sim_stats.sent.load(Ordering::Relaxed);
        if !embedded.wait_for(expected, KAFKA_WAIT).await {
            tracing::warn!("processors did not catch up within {KAFKA_WAIT:?}");
        }
    }
    let backpressure_waits = backend.metrics().backpressure_waits;
    // Finish (drain and stop the processor) even when the simulator failed.
    let processor = embedded.finish().await?;
    backend.close();
    simulated?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = processor.stats();
    // The warm-up reading is not part of the run.
    let processed = stats
        .processed
        .load(Ordering::Relaxed)
        .saturating_sub(baseline);
    let (p50, p99, max) = stats.latency_ms();
    let history = history.map(|(h, dir)| {
        let s = h.stats();
        let (logged, dropped, seals) = (
            s.rows_written.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
            s.seals.load(Ordering::Relaxed),
        );
        let closing = Instant::now();
        h.close();
        let close_s = closing.elapsed().as_secs_f64();
        drop(h);
        let _ = std::fs::remove_dir_all(&dir);
        HistoryRun {
            logged,
            dropped,
            seals,
            close_s,
        }
    });
    Ok(RunResult {
        readings_per_sec: processed as f64 / elapsed.max(1e-9),
        sent: sim_stats.sent.load(Ordering::Relaxed),
        processed,
        dead_letters: stats.dead_letters_total(),
        backpressure_waits,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
        history,
    })
}

/// History in a fresh temporary directory, with the configuration's `HISTORY_*` settings.
fn open_history(config: &Config) -> anyhow::Result<(Arc<History>, PathBuf)> {
    let dir = std::env::temp_dir().join(format!(
        "iiot-bench-history-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    let mut cfg = HistoryConfig::from_config(config).unwrap_or_else(|| HistoryConfig::in_dir(&dir));
    cfg.data_dir = dir.clone();
    let (history, _) = History::open(cfg)?;
    Ok((Arc::new(history), dir))
}
