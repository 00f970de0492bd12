//! The Sparkplug decoder's families: described by every role, sampled where the MQTT source
//! reads Sparkplug (`MQTT_PAYLOAD=sparkplug`).

use super::{
    Exposition, SPARKPLUG_BIRTHS, SPARKPLUG_DEATHS, SPARKPLUG_DEVICES, SPARKPLUG_NODES,
    SPARKPLUG_REBIRTHS, Snapshot,
};

impl Snapshot {
    pub(super) fn render_sparkplug(&self, e: &mut Exposition) {
        let counts = self.mqtt.and_then(|m| m.sparkplug);
        let births = counts.map(|c| [("node", c.node_births), ("device", c.device_births)]);
        let deaths = counts.map(|c| [("node", c.node_deaths), ("device", c.device_deaths)]);
        for (m, samples) in [(&SPARKPLUG_BIRTHS, births), (&SPARKPLUG_DEATHS, deaths)] {
            e.family(m);
            for (kind, n) in samples.into_iter().flatten() {
                e.sample(m, "", &[("kind", kind)], n);
            }
        }
        e.optional(&SPARKPLUG_REBIRTHS, counts.map(|c| c.rebirths_requested));
        e.optional(&SPARKPLUG_NODES, counts.map(|c| c.nodes_tracked));
        e.optional(&SPARKPLUG_DEVICES, counts.map(|c| c.devices_tracked));
    }
}
