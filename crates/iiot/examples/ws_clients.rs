//! WebSocket fan-out load: N clients connect to a running `iiot run`, each subscribes to K
//! devices, and they measure event → client latency (receive time minus the reading's event
//! timestamp, so ±1 ms) and delivered messages per second over a fixed window.
//!
//! ```sh
//! WEBSOCKET_MAX_CONNECTIONS=10000 target/release/iiot run --devices 10000 --interval 1s &
//! cargo run --release --example ws_clients -- ws://127.0.0.1:8081/ws 10000 10 30
//! ```
//! Arguments: URL, clients (1000), devices per client (10), seconds measured (30); clients get
//! 10 s to connect and subscribe first. Each client needs a file descriptor here and one in the
//! server (`ulimit -n`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const SETUP: Duration = Duration::from_secs(10);

fn histogram() -> Histogram<u64> {
    // Constant bounds hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8081/ws".into());
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let per_client: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let devices = 10_000usize;

    let start = Instant::now();
    let (from, until) = (start + SETUP, start + SETUP + Duration::from_secs(seconds));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (url, failed) = (url.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                failed.fetch_add(1, Ordering::Relaxed);
                return latency;
            };
            let ids: Vec<String> = (0..per_client)
                .map(|k| iiot_model::device_id(((c * per_client + k) % devices) as u32 + 1))
                .collect();
            let subscribe = serde_json::json!({"type": "subscribe", "device_ids": ids});
            if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
                return latency;
            }
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
                let Message::Text(text) = msg else { continue };
                if Instant::now() < from {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if let (Some("device_data"), Some(ts)) =
                    (v["type"].as_str(), v["payload"]["timestamp"].as_i64())
                {
                    latency.saturating_record((iiot::now_ms() - ts).max(1) as u64);
                }
            }
            let _ = ws.close(None).await;
            latency
        }));
    }
    let mut all = histogram();
    for t in tasks {
        if let Ok(h) = t.await {
            // Same bounds everywhere: adding cannot fail.
            let _ = all.add(&h);
        }
    }
    let delivered = all.len();
    println!(
        "{{\"clients\":{clients},\"devices_per_client\":{per_client},\"seconds\":{seconds},\
         \"failed_connections\":{},\"delivered\":{delivered},\"delivered_per_sec\":{:.0},\
         \"latency_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}}}}",
        failed.load(Ordering::Relaxed),
        delivered as f64 / seconds as f64,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.max()
    );
}
