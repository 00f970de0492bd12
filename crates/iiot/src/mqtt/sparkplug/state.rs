//! What BIRTH certificates established, per edge node and device: aliases, datatypes, the
//! mapped metrics and their last values, the node's `seq`. Bounded: at most `max_tracked`
//! nodes and devices together, and [`MAX_METRICS`] aliases per node or device.

use hashbrown::HashMap;

use super::mapping::{Field, MetricMapping};
use super::proto::{Metric, datatype};

/// Aliases remembered per node or device; a BIRTH declaring more keeps the first ones (a
/// DATA using a later one is then an unknown alias).
pub const MAX_METRICS: usize = 4096;

/// What one metric is, from its BIRTH.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Slot {
    pub field: Option<Field>,
    pub datatype: u32,
}

/// A node's own metrics or one device's.
#[derive(Debug, Clone, Default)]
pub(super) struct Device {
    /// Its BIRTH was seen and no DEATH since.
    pub born: bool,
    /// Alias → metric, as BIRTH declared.
    aliases: HashMap<u64, Slot>,
    /// Name → metric, for the mapped metrics only (DATA by name).
    names: HashMap<Box<str>, Slot>,
    /// Last value of each reading field, by [`Field::index`].
    pub values: [Option<f64>; Field::ALL.len()],
    /// Readings made for this device so far: the `seq` of the next one.
    pub next_seq: u64,
}

/// Why a DATA could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Refusal {
    /// A metric with an alias BIRTH did not declare.
    UnknownAlias(u64),
    /// A metric with neither name nor alias.
    Nameless,
}

impl Device {
    /// Takes in a BIRTH: forgets what an earlier one said, learns its metrics and values.
    pub fn birth(&mut self, metrics: &[Metric], mapping: &MetricMapping) {
        self.aliases.clear();
        self.names.clear();
        self.values = Default::default();
        for m in metrics {
            let Some(name) = m.name.as_deref() else {
                continue;
            };
            let slot = Slot {
                field: mapping.field(name),
                datatype: m.datatype.unwrap_or(datatype::DOUBLE),
            };
            if let Some(alias) = m.alias
                && self.aliases.len() < MAX_METRICS
            {
                self.aliases.insert(alias, slot);
            }
            if slot.field.is_some() && self.names.len() < MAX_METRICS {
                self.names.insert(Box::from(name), slot);
            }
            set(&mut self.values, slot, m);
        }
        self.born = true;
    }

    /// Takes in a DATA: every metric must be known by alias (or be named); all or nothing,
    /// so a refused DATA changes no value.
    pub fn data(&mut self, metrics: &[Metric], mapping: &MetricMapping) -> Result<bool, Refusal> {
        let mut slots = Vec::with_capacity(metrics.len());
        for m in metrics {
            let slot = match (m.alias, m.name.as_deref()) {
                (Some(alias), _) if self.aliases.contains_key(&alias) => self.aliases[&alias],
                (_, Some(name)) => match self.names.get(name) {
                    Some(slot) => *slot,
                    None => Slot {
                        field: mapping.field(name),
                        datatype: m.datatype.unwrap_or(datatype::DOUBLE),
                    },
                },
                (Some(alias), None) => return Err(Refusal::UnknownAlias(alias)),
                (None, None) => return Err(Refusal::Nameless),
            };
            slots.push(slot);
        }
        let mut changed = false;
        for (slot, m) in slots.into_iter().zip(metrics) {
            changed |= set(&mut self.values, slot, m);
        }
        Ok(changed)
    }

    /// Whether any reading field has a value.
    pub fn has_values(&self) -> bool {
        self.values.iter().any(Option::is_some)
    }
}

/// Stores the value of `m` into its field, if it maps to one and carries a current number.
fn set(values: &mut [Option<f64>; Field::ALL.len()], slot: Slot, m: &Metric) -> bool {
    let Some(field) = slot.field else {
        return false;
    };
    if m.is_historical == Some(true) {
        return false;
    }
    match m.number(m.datatype.unwrap_or(slot.datatype)) {
        Some(v) => {
            values[field.index()] = Some(v);
            true
        }
        None => false,
    }
}

/// One edge node.
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    /// The node's own metrics (NBIRTH/NDATA); `own.born` is the node's birth.
    pub own: Device,
    /// Its devices by Sparkplug device id.
    pub devices: HashMap<String, Device>,
    /// `bdSeq` of the NBIRTH: an NDEATH with another one is a stale will, ignored.
    pub bd_seq: Option<u64>,
    /// The last `seq` seen.
    pub seq: Option<u8>,
    /// When a rebirth was last requested (receiver clock, ms).
    pub rebirth_at: Option<i64>,
}

impl Node {
    /// Checks the next `seq` of this node: returns how many messages are missing before it
    /// (0 in order; a repeat of the last one is no gap).
    pub fn next_seq(&mut self, seq: Option<u64>) -> u64 {
        let Some(seq) = seq.map(|s| (s % 256) as u8) else {
            return 0;
        };
        let gap = match self.seq {
            Some(last) if seq != last => u64::from(seq.wrapping_sub(last).wrapping_sub(1)),
            _ => 0,
        };
        self.seq = Some(seq);
        gap
    }
}

/// Every edge node and device, bounded.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    nodes: HashMap<(String, String), Node>,
    /// Nodes and devices held.
    tracked: usize,
    max_tracked: usize,
}

impl Nodes {
    pub fn new(max_tracked: usize) -> Nodes {
        Nodes {
            max_tracked: max_tracked.max(1),
            ..Nodes::default()
        }
    }

    /// The node, if known.
    pub fn get_mut(&mut self, group: &str, node: &str) -> Option<&mut Node> {
        self.nodes.get_mut(&(group.to_string(), node.to_string()))
    }

    /// The node, added if new and there is room.
    pub fn get_or_add(&mut self, group: &str, node: &str) -> Option<&mut Node> {
        let key = (group.to_string(), node.to_string());
        if !self.nodes.contains_key(&key) {
            if self.tracked >= self.max_tracked {
                return None;
            }
            self.tracked += 1;
        }
        Some(self.nodes.entry(key).or_default())
    }

    /// The device of `node`, added if new and there is room.
    pub fn device_or_add<'n>(
        tracked: &mut usize,
        max_tracked: usize,
        node: &'n mut Node,
        device: &str,
    ) -> Option<&'n mut Device> {
        if !node.devices.contains_key(device) {
            if *tracked >= max_tracked {
                return None;
            }
            *tracked += 1;
        }
        Some(node.devices.entry(device.to_string()).or_default())
    }

    /// The node (added if there is room) with the counters [`Nodes::device_or_add`] needs.
    pub fn node_and_room(
        &mut self,
        group: &str,
        node: &str,
    ) -> Option<(&mut Node, &mut usize, usize)> {
        self.get_or_add(group, node)?;
        let max = self.max_tracked;
        let node = self.nodes.get_mut(&(group.to_string(), node.to_string()))?;
        Some((node, &mut self.tracked, max))
    }

    /// Nodes and devices held.
    pub fn tracked(&self) -> usize {
        self.tracked
    }

    /// Edge nodes held.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_gaps_wrap_at_256_and_repeats_are_no_gap() {
        let mut n = Node::default();
        assert_eq!(n.next_seq(Some(254)), 0);
        assert_eq!(n.next_seq(Some(255)), 0);
        assert_eq!(n.next_seq(Some(0)), 0);
        assert_eq!(n.next_seq(Some(0)), 0);
        assert_eq!(n.next_seq(Some(3)), 2);
        assert_eq!(n.next_seq(None), 0);
    }

    #[test]
    fn the_tracked_nodes_and_devices_are_capped() {
        let mut nodes = Nodes::new(2);
        assert!(nodes.get_or_add("g", "n1").is_some());
        let (node, tracked, max) = nodes.node_and_room("g", "n1").expect("test input is valid");
        assert!(Nodes::device_or_add(tracked, max, node, "d1").is_some());
        assert!(Nodes::device_or_add(tracked, max, node, "d2").is_none());
        assert!(nodes.get_or_add("g", "n2").is_none());
        assert_eq!(nodes.tracked(), 2);
    }
}
