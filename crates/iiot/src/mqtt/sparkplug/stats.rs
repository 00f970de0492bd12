//! What the Sparkplug decoder saw, for `/metrics`: births and deaths by kind, rebirths asked
//! for, and the nodes and devices it tracks. The decoder keeps plain [`SparkplugCounts`] (it
//! touches no shared state); the MQTT source copies them into [`SparkplugStats`] after each
//! message. The dead letters it makes (`sparkplug_before_birth`, `sparkplug_unknown_alias`, …)
//! are counted with every other dead letter, in `iot_dead_letters_total{reason}`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The decoder's own counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SparkplugCounts {
    /// NBIRTHs taken.
    pub node_births: u64,
    /// DBIRTHs taken.
    pub device_births: u64,
    /// NDEATHs that ended a node (stale wills not counted).
    pub node_deaths: u64,
    /// DDEATHs of a known device.
    pub device_deaths: u64,
    /// Rebirth requests (NCMD `Node Control/Rebirth`) made.
    pub rebirths_requested: u64,
    /// Edge nodes tracked now.
    pub nodes_tracked: u64,
    /// Devices tracked now (a node's own metrics not included).
    pub devices_tracked: u64,
}

/// [`SparkplugCounts`] shared with `/metrics`; `enabled` once a Sparkplug source runs.
#[derive(Debug, Default)]
pub struct SparkplugStats {
    /// A Sparkplug decoder runs in this process (`MQTT_PAYLOAD=sparkplug`).
    pub enabled: AtomicBool,
    node_births: AtomicU64,
    device_births: AtomicU64,
    node_deaths: AtomicU64,
    device_deaths: AtomicU64,
    rebirths_requested: AtomicU64,
    nodes_tracked: AtomicU64,
    devices_tracked: AtomicU64,
}

impl SparkplugStats {
    /// The fields in one order, for [`SparkplugStats::store`] and [`SparkplugStats::load`].
    fn cells(&self) -> [&AtomicU64; 7] {
        [
            &self.node_births,
            &self.device_births,
            &self.node_deaths,
            &self.device_deaths,
            &self.rebirths_requested,
            &self.nodes_tracked,
            &self.devices_tracked,
        ]
    }

    /// Publishes the decoder's counts (one decoder per process: it owns them).
    pub fn store(&self, c: SparkplugCounts) {
        let values = [
            c.node_births,
            c.device_births,
            c.node_deaths,
            c.device_deaths,
            c.rebirths_requested,
            c.nodes_tracked,
            c.devices_tracked,
        ];
        for (cell, v) in self.cells().into_iter().zip(values) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// The counts now, if a Sparkplug source runs.
    pub fn load(&self) -> Option<SparkplugCounts> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let [a, b, c, d, e, f, g] = self.cells().map(|cell| cell.load(Ordering::Relaxed));
        Some(SparkplugCounts {
            node_births: a,
            device_births: b,
            node_deaths: c,
            device_deaths: d,
            rebirths_requested: e,
            nodes_tracked: f,
            devices_tracked: g,
        })
    }
}
