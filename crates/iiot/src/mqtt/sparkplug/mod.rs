//! Sparkplug B (`MQTT_PAYLOAD=sparkplug`): one MQTT publish on `spBv1.0/…` in, our readings,
//! offline notices, dead letters and at most one rebirth command out. [`Sparkplug::decode`]
//! is the whole of it; it touches no network, so the MQTT source and the ingest role can both
//! call it, and the benchmark measures it alone.
//!
//! - NBIRTH/DBIRTH establish each node's and device's metrics (names, aliases, datatypes)
//!   and their values; NDATA/DDATA update the values. After each, a node or device with at
//!   least one metric mapped to a reading field ([`mapping`]) yields one SPEC §2 reading with
//!   its last value of every field.
//! - NDEATH (unless its `bdSeq` is before the NBIRTH's: a stale will) and DDEATH yield an offline notice for the devices
//!   they end ([`crate::processor::offline`]), and forget their births.
//! - A DATA before its BIRTH, or with an alias BIRTH did not declare, is dead-lettered
//!   (`sparkplug_before_birth`, `sparkplug_unknown_alias`) and a rebirth is requested: an NCMD
//!   `Node Control/Rebirth = true`, at most once per node per [`REBIRTH_EVERY_MS`].
//! - The node's `seq` (0–255, wrapping) is checked on every message after NBIRTH; missing
//!   messages are counted as sequence gaps. Our readings carry their own per-device `seq`.
//! - [`state`] bounds what is tracked: beyond `SPARKPLUG_MAX_DEVICES` nodes and devices, a new
//!   one's messages are dead-lettered `sparkplug_limit`.

pub mod edge;
pub mod mapping;
pub mod proto;
mod reading;
pub mod route;
mod state;
pub mod stats;

use iiot_model::{Invalid, InvalidReason};
use prost::Message as _;

use crate::config::Config;
use crate::processor::offline::OfflineNotice;
use mapping::{DeviceIdTemplate, MetricMapping};
use state::{Device, Nodes, Refusal};
use stats::SparkplugCounts;

/// Rebirth requests to one edge node are at least this far apart.
pub const REBIRTH_EVERY_MS: i64 = 5_000;

/// The topic filters subscribed to by default: node messages have four levels, device
/// messages five (`spBv1.0/+/+/+/+` alone would miss every NBIRTH, NDATA and NDEATH).
pub const DEFAULT_TOPICS: &str = "spBv1.0/+/+/+,spBv1.0/+/+/+/+";

/// The Sparkplug settings: metric mapping, device ids, bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugConfig {
    /// Metric name → reading field (`SPARKPLUG_METRICS` and the default by name).
    pub mapping: MetricMapping,
    /// Our device id of a Sparkplug node or device (`SPARKPLUG_DEVICE_ID`).
    pub device_id: DeviceIdTemplate,
    /// Most nodes and devices tracked together (`SPARKPLUG_MAX_DEVICES`).
    pub max_tracked: usize,
}

impl SparkplugConfig {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> SparkplugConfig {
        let s = &config.sparkplug;
        SparkplugConfig {
            // Both were checked when the configuration was loaded.
            mapping: MetricMapping::parse(&s.metrics).unwrap_or_default(),
            device_id: DeviceIdTemplate::parse(&s.device_id)
                .unwrap_or_else(|| DeviceIdTemplate::parse("{device}").expect("a valid template")),
            max_tracked: s.max_devices,
        }
    }
}

/// What one message became.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    /// For the input topic or the dead-letter topic, in order.
    pub outputs: Vec<Output>,
    /// A command to publish to the broker (QoS 0).
    pub command: Option<Command>,
    /// Messages of the node missing before this one (its `seq`).
    pub seq_gaps: u64,
}

/// One thing to publish.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// A SPEC §2 reading (JSON) for the input topic, keyed by `device_id`.
    Reading {
        /// Our device id.
        device_id: String,
        /// The reading.
        payload: Vec<u8>,
    },
    /// An offline notice for the input topic, keyed by `device_id`.
    Offline {
        /// Our device id.
        device_id: String,
        /// The notice.
        payload: Vec<u8>,
    },
    /// The message is dead-lettered with this reason (it yields nothing else).
    DeadLetter(Invalid),
}

/// An MQTT message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `spBv1.0/{group}/NCMD/{node}`.
    pub topic: String,
    /// The Sparkplug payload.
    pub payload: Vec<u8>,
}

/// The message types of the topic namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NBirth,
    NDeath,
    NData,
    DBirth,
    DDeath,
    DData,
    /// Commands and host state: not ours to judge.
    Other,
}

/// `spBv1.0/{group}/{type}/{node}[/{device}]`.
struct Topic<'t> {
    group: &'t str,
    kind: Kind,
    node: &'t str,
    device: Option<&'t str>,
}

fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let mut levels = topic.split('/');
    if levels.next()? != "spBv1.0" {
        return None;
    }
    let group = levels.next()?;
    let kind = levels.next()?;
    if group == "STATE" {
        return Some(Topic {
            group,
            kind: Kind::Other,
            node: kind,
            device: None,
        });
    }
    let node = levels.next()?;
    let device = levels.next();
    let kind = match (kind, device.is_some()) {
        ("NBIRTH", false) => Kind::NBirth,
        ("NDEATH", false) => Kind::NDeath,
        ("NDATA", false) => Kind::NData,
        ("DBIRTH", true) => Kind::DBirth,
        ("DDEATH", true) => Kind::DDeath,
        ("DDATA", true) => Kind::DData,
        ("NCMD", false) | ("DCMD", true) => Kind::Other,
        _ => return None,
    };
    let ok = levels.next().is_none() && !group.is_empty() && !node.is_empty();
    ok.then_some(Topic {
        group,
        kind,
        node,
        device,
    })
}

/// The decoder and the state BIRTH certificates established.
#[derive(Debug)]
pub struct Sparkplug {
    config: SparkplugConfig,
    nodes: Nodes,
    counts: SparkplugCounts,
}

impl Sparkplug {
    /// A decoder that has seen no BIRTH yet.
    pub fn new(config: SparkplugConfig) -> Sparkplug {
        Sparkplug {
            nodes: Nodes::new(config.max_tracked),
            counts: SparkplugCounts::default(),
            config,
        }
    }

    /// Nodes and devices tracked now.
    pub fn tracked(&self) -> usize {
        self.nodes.tracked()
    }

    /// What it saw so far, and what it tracks now.
    pub fn counts(&self) -> SparkplugCounts {
        let nodes = self.nodes.nodes() as u64;
        SparkplugCounts {
            nodes_tracked: nodes,
            devices_tracked: self.nodes.tracked() as u64 - nodes,
            ..self.counts
        }
    }

    /// Decodes one MQTT message published on `topic`, received at `now_ms`.
    pub fn decode(&mut self, topic: &str, payload: &[u8], now_ms: i64) -> Decoded {
        let Some(t) = parse_topic(topic) else {
            return malformed(format!("{topic:?} is not a Sparkplug B topic"));
        };
        if t.kind == Kind::Other {
            return Decoded::default();
        }
        let payload = match proto::Payload::decode(payload) {
            Ok(p) => p,
            Err(e) => return malformed(format!("not a Sparkplug B payload: {e}")),
        };
        let ts = payload
            .timestamp
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(now_ms);
        let decoded = match t.kind {
            Kind::NBirth => self.node_birth(&t, &payload, ts),
            Kind::NDeath => self.node_death(&t, &payload, ts),
            Kind::DDeath => self.device_death(&t, &payload, ts),
            Kind::NData | Kind::DBirth | Kind::DData => self.data(&t, &payload, ts, now_ms),
            Kind::Other => Decoded::default(),
        };
        self.counts.rebirths_requested += u64::from(decoded.command.is_some());
        decoded
    }

    fn node_birth(&mut self, t: &Topic<'_>, payload: &proto::Payload, ts: i64) -> Decoded {
        let Some(node) = self.nodes.get_or_add(t.group, t.node) else {
            return limit(self.config.max_tracked);
        };
        node.own.birth(&payload.metrics, &self.config.mapping);
        self.counts.node_births += 1;
        node.bd_seq = bd_seq(payload);
        node.seq = None;
        node.next_seq(payload.seq);
        let mut out = Decoded::default();
        let id = self.config.device_id.render(t.group, t.node, None);
        reading::push(&mut out, &mut node.own, id, t, ts);
        out
    }

    fn node_death(&mut self, t: &Topic<'_>, payload: &proto::Payload, ts: i64) -> Decoded {
        let mut out = Decoded::default();
        let Some(node) = self.nodes.get_mut(t.group, t.node) else {
            return out;
        };
        // A will from an earlier session (a bdSeq before this birth's) ends nothing. A later
        // one is taken: some edge nodes (pysparkplug 0.6) count bdSeq up right after NBIRTH
        // and send that in their clean NDEATH.
        if let (Some(born), Some(dying)) = (node.bd_seq, bd_seq(payload))
            && (1..128).contains(&(born.wrapping_sub(dying) % 256))
        {
            return out;
        }
        let template = &self.config.device_id;
        node.own.born = false;
        self.counts.node_deaths += 1;
        offline(
            &mut out,
            template.render(t.group, t.node, None),
            ts,
            "NDEATH",
        );
        for (device_id, device) in node.devices.iter_mut() {
            device.born = false;
            let id = template.render(t.group, t.node, Some(device_id));
            offline(&mut out, id, ts, "NDEATH");
        }
        out
    }

    fn device_death(&mut self, t: &Topic<'_>, payload: &proto::Payload, ts: i64) -> Decoded {
        let mut out = Decoded::default();
        let Some(node) = self.nodes.get_mut(t.group, t.node) else {
            return out;
        };
        out.seq_gaps = node.next_seq(payload.seq);
        let device_id = t.device.unwrap_or_default();
        if let Some(device) = node.devices.get_mut(device_id) {
            device.born = false;
            self.counts.device_deaths += 1;
            let id = self.config.device_id.render(t.group, t.node, t.device);
            offline(&mut out, id, ts, "DDEATH");
        }
        out
    }

    /// DBIRTH, NDATA and DDATA: the node must be born; a DATA's device too.
    fn data(&mut self, t: &Topic<'_>, payload: &proto::Payload, ts: i64, now_ms: i64) -> Decoded {
        let max = self.config.max_tracked;
        let Some((node, tracked, max_tracked)) = self.nodes.node_and_room(t.group, t.node) else {
            return limit(max);
        };
        if !node.own.born {
            let mut out = refused(
                InvalidReason::SparkplugBeforeBirth,
                format!("no NBIRTH seen from {}/{}", t.group, t.node),
            );
            out.command = rebirth(node, t, now_ms);
            return out;
        }
        let seq_gaps = node.next_seq(payload.seq);
        let (device, id): (&mut Device, String) = match t.device {
            None => (
                &mut node.own,
                self.config.device_id.render(t.group, t.node, None),
            ),
            Some(name) => {
                let born = node.devices.get(name).is_some_and(|d| d.born);
                if t.kind == Kind::DData && !born {
                    let mut out = refused(
                        InvalidReason::SparkplugBeforeBirth,
                        format!("no DBIRTH seen from {}/{}/{name}", t.group, t.node),
                    );
                    out.seq_gaps = seq_gaps;
                    out.command = rebirth(node, t, now_ms);
                    return out;
                }
                match Nodes::device_or_add(tracked, max_tracked, node, name) {
                    Some(device) => {
                        let id = self.config.device_id.render(t.group, t.node, Some(name));
                        (device, id)
                    }
                    None => return limit(max),
                }
            }
        };
        let mut out = Decoded {
            seq_gaps,
            ..Decoded::default()
        };
        if t.kind == Kind::DBirth {
            device.birth(&payload.metrics, &self.config.mapping);
            self.counts.device_births += 1;
            reading::push(&mut out, device, id, t, ts);
            return out;
        }
        match device.data(&payload.metrics, &self.config.mapping) {
            Ok(true) => reading::push(&mut out, device, id, t, ts),
            Ok(false) => {}
            Err(Refusal::Nameless) => {
                let mut out = refused(
                    InvalidReason::SparkplugMalformed,
                    "a metric has neither name nor alias".to_string(),
                );
                out.seq_gaps = seq_gaps;
                return out;
            }
            Err(Refusal::UnknownAlias(alias)) => {
                let mut out = refused(
                    InvalidReason::SparkplugUnknownAlias,
                    format!("alias {alias} was not declared by the BIRTH of {id}"),
                );
                out.seq_gaps = seq_gaps;
                out.command = rebirth(node, t, now_ms);
                return out;
            }
        }
        out
    }
}

/// The `bdSeq` metric of a BIRTH or DEATH.
fn bd_seq(payload: &proto::Payload) -> Option<u64> {
    let m = payload
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))?;
    m.number(proto::datatype::INT64).map(|v| v as u64)
}

/// The rebirth request for `node`, unless one went out less than [`REBIRTH_EVERY_MS`] ago.
fn rebirth(node: &mut state::Node, t: &Topic<'_>, now_ms: i64) -> Option<Command> {
    if node
        .rebirth_at
        .is_some_and(|at| now_ms - at < REBIRTH_EVERY_MS)
    {
        return None;
    }
    node.rebirth_at = Some(now_ms);
    Some(Command {
        topic: format!("spBv1.0/{}/NCMD/{}", t.group, t.node),
        payload: proto::rebirth_request(now_ms).encode_to_vec(),
    })
}

fn offline(out: &mut Decoded, device_id: String, ts: i64, cause: &str) {
    let notice = OfflineNotice {
        device_id,
        timestamp: ts,
        cause: cause.to_string(),
    };
    out.outputs.push(Output::Offline {
        payload: notice.encode(),
        device_id: notice.device_id,
    });
}

fn refused(reason: InvalidReason, detail: String) -> Decoded {
    Decoded {
        outputs: vec![Output::DeadLetter(Invalid::new(reason, detail))],
        ..Decoded::default()
    }
}

fn malformed(detail: String) -> Decoded {
    refused(InvalidReason::SparkplugMalformed, detail)
}

fn limit(max: usize) -> Decoded {
    refused(
        InvalidReason::SparkplugLimit,
        format!("already tracking {max} Sparkplug nodes and devices"),
    )
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
