//! An alert storm neither slows the pipeline nor floods a channel: with one channel hung (its
//! receiver accepts connections and never answers) and one rate-limited, 5,000 alert changes
//! are taken at once, the hung channel holds up only itself (what does not fit its queue is
//! counted as overflowed, kept for one digest, not failed), and the limited one gets its share
//! plus one digest of the rest.

mod support;

use std::time::Duration;

use support::notify::{ManualClock, WebhookReceiver, alert, config, notifier, tell};
use support::wait_until;

const T0: i64 = 1_700_000_000_000;
const STORM: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_taken_at_once_and_summed_up_instead_of_flooding() {
    // Accepts (the kernel's backlog) but never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_url = format!("http://{}/hook", hung.local_addr().expect("addr"));
    let receiver = WebhookReceiver::start(0).await;
    let toml = format!(
        "[notify]\nqueue_capacity = 10000\n\n\
         [[notify.channels]]\nname = \"hung\"\nkind = \"webhook\"\nurl = \"{hung_url}\"\n\
         timeout = \"60s\"\nretries = 0\n\n\
         [[notify.channels]]\nname = \"limited\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         max_per_minute = 10\n",
        receiver.url()
    );
    let clock = ManualClock::at(T0);
    let (notifier, shared) = notifier(&config(&toml), clock.clock());
    let sink = notifier.sink();
    let alerts: Vec<_> = (0..STORM)
        .map(|i| alert(&format!("device_{i:05}")))
        .collect();
    for batch in alerts.chunks(500) {
        tokio::time::timeout(Duration::from_secs(5), tell(sink.as_ref(), batch))
            .await
            .expect("the sink never waits for a channel");
    }
    wait_until("the intake drained", Duration::from_secs(10), || {
        shared.stats.snapshot().intake == 0
    })
    .await;

    let s = shared.stats.snapshot();
    assert_eq!(s.dropped, 0, "the intake holds the storm");
    let handled = STORM;
    let hung_stats = shared.stats.channel("hung").expect("hung");
    let in_flight = handled - hung_stats.overflowed - hung_stats.queued;
    assert!(in_flight <= 1, "{hung_stats:?} of {handled}");
    assert!(
        hung_stats.overflowed > 0,
        "the hung channel's queue filled: {hung_stats:?}"
    );
    assert!(
        hung_stats.failed.iter().all(|n| *n == 0),
        "nothing given up on: {hung_stats:?}"
    );

    wait_until(
        "the limited channel's share",
        Duration::from_secs(10),
        || receiver.received().len() == 10,
    )
    .await;
    let limited = shared.stats.channel("limited").expect("limited");
    assert_eq!(limited.rate_limited, handled - 10);
    clock.set(T0 + 60_000);
    wait_until("the digest", Duration::from_secs(10), || {
        receiver.received().len() == 11
    })
    .await;
    let digest = receiver.received()[10].json();
    assert_eq!(digest["event"], "digest");
    assert_eq!(digest["held"], handled - 10);
    notifier.stop().await;
    assert_eq!(receiver.received().len(), 11, "no flood");
    drop(hung);
}
