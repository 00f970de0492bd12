//! Reading chosen partitions of a topic back from their beginning to their end, outside any
//! consumer group: what a member reads of a state topic when it is given partitions
//! ([`iiot_transport::Transport::read_partitions`]).
//!
//! "The end" is each partition's high watermark when the read starts. tansu 0.6 reports its
//! high watermark late (it can lag the records it already serves), so once every partition
//! has reached its watermark the read goes on until nothing more arrives for [`QUIET`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use iiot_transport::{Message, TransportError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::context::PlainContext;

/// How long one watermark lookup may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// After the watermarks are reached (or when they cannot be learned): the read ends once
/// nothing arrived for this long.
pub(crate) const QUIET: Duration = Duration::from_millis(300);
/// Whatever the watermarks say, the read ends once nothing arrived for this long (a
/// partition whose watermark could not be learned, or whose last offsets hold no record).
const QUIET_UNKNOWN_END: Duration = Duration::from_secs(3);

/// Reads `partitions` of `topic` with `consumer` (not in a group, nothing assigned yet), until
/// each has reached its end or `limit` has passed. Blocks: call from a blocking thread.
pub(crate) fn read_to_end(
    consumer: &BaseConsumer<PlainContext>,
    topic: &str,
    partitions: &[i32],
    limit: Duration,
) -> Result<Vec<Message>, TransportError> {
    let deadline = Instant::now() + limit;
    let mut ends: Vec<End> = Vec::with_capacity(partitions.len());
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        let high = match consumer.fetch_watermarks(topic, p, WATERMARK_TIMEOUT) {
            Ok((low, high)) if high <= low => continue,
            Ok((_, high)) => Some(high),
            Err(e) => {
                tracing::warn!(topic, partition = p, error = %e, "kafka: end of partition unknown; reading until it goes quiet");
                None
            }
        };
        ends.push(End {
            partition: p,
            high,
            reached: false,
        });
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| TransportError::Broker(format!("partition {p} of {topic}: {e}")))?;
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&tpl)
        .map_err(|e| TransportError::Broker(format!("assigning partitions of {topic}: {e}")))?;
    let topic_name: Arc<str> = Arc::from(topic);
    let mut out = Vec::new();
    let mut last_arrival = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                topic,
                read = out.len(),
                "kafka: reading partitions back took too long; going on with what was read"
            );
            break;
        }
        let quiet = now.duration_since(last_arrival);
        let reached = ends.iter().all(|e| e.reached);
        if (reached && quiet >= QUIET) || quiet >= QUIET_UNKNOWN_END {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => tracing::debug!(topic, error = %e, "kafka: reading partitions back"),
            Some(Ok(m)) => {
                last_arrival = Instant::now();
                let partition = m.partition();
                if let Some(end) = ends.iter_mut().find(|e| e.partition == partition) {
                    end.reached |= end.high.is_some_and(|h| m.offset() + 1 >= h);
                }
                // Records iiot wrote itself: no header to look at.
                let headers = crate::config::Headers::Any;
                out.push(crate::consumer::to_message(&topic_name, &m, headers));
            }
        }
    }
    Ok(out)
}

/// The high watermark of each of `partitions` of `topic` that the broker reports within
/// [`WATERMARK_TIMEOUT`] (tansu's can lag behind the records it serves: a lower bound then).
/// Blocks: call from a blocking thread.
pub(crate) fn high_watermarks(
    consumer: &BaseConsumer<PlainContext>,
    topic: &str,
    partitions: &[i32],
) -> Vec<(i32, i64)> {
    partitions
        .iter()
        .filter_map(|&p| match consumer.fetch_watermarks(topic, p, WATERMARK_TIMEOUT) {
            Ok((_, high)) => Some((p, high)),
            Err(e) => {
                tracing::debug!(topic, partition = p, error = %e, "kafka: end of partition unknown");
                None
            }
        })
        .collect()
}

/// One partition being read back: its end when the read started, and whether it got there.
struct End {
    partition: i32,
    /// The high watermark (the offset after the last record), if the broker told it.
    high: Option<i64>,
    reached: bool,
}
