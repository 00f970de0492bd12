//! Which channels an alert change goes to: matchers (shared with silences) over the alert and
//! its device's metadata, and the routes of the config.

use std::sync::Arc;

use iiot_model::Alert;

use super::config::{Matchers, RouteSpec};

/// What the notifier knows of a device besides its alerts (from its latest reading).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMeta {
    /// `location.building`.
    pub building: String,
    /// `location.floor`.
    pub floor: i32,
    /// `device_info.model`.
    pub model: String,
}

/// Looks a device's metadata up (in `iiot run`: the live store). `None`: not known (yet);
/// matchers on building, floor or model then do not match.
pub type DeviceLookup = Arc<dyn Fn(&str) -> Option<DeviceMeta> + Send + Sync>;

/// [`Matchers`] ready to match (the glob compiled).
#[derive(Debug, Clone)]
pub struct Matcher {
    spec: Matchers,
    glob: Option<glob::Pattern>,
}

impl Matcher {
    /// Compiles `spec`; an invalid glob is an error (validated at load time and by the API).
    pub fn new(spec: Matchers) -> Result<Matcher, String> {
        spec.check()?;
        let glob = spec
            .device_id
            .as_deref()
            .and_then(|g| glob::Pattern::new(g).ok());
        Ok(Matcher { spec, glob })
    }

    /// The matchers as given.
    pub fn spec(&self) -> &Matchers {
        &self.spec
    }

    /// Whether `alert` (about a device with `meta`) matches every given field.
    pub fn matches(&self, alert: &Alert, meta: Option<&DeviceMeta>) -> bool {
        let s = &self.spec;
        let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        let meta_ok = |empty: bool, f: &dyn Fn(&DeviceMeta) -> bool| empty || meta.is_some_and(f);
        (s.severity.is_empty() || s.severity.contains(&alert.severity))
            && any(&s.alert_type, &alert.alert_type)
            && self
                .glob
                .as_ref()
                .is_none_or(|g| g.matches(&alert.device_id))
            && meta_ok(s.building.is_empty(), &|m| s.building.contains(&m.building))
            && meta_ok(s.floor.is_empty(), &|m| s.floor.contains(&m.floor))
            && meta_ok(s.model.is_empty(), &|m| s.model.contains(&m.model))
    }

    /// Whether the matcher looks at the device's metadata at all.
    pub fn needs_meta(&self) -> bool {
        let s = &self.spec;
        !(s.building.is_empty() && s.floor.is_empty() && s.model.is_empty())
    }
}

/// The routes, with channel names resolved to indices.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<(Matcher, Vec<usize>)>,
    channels: usize,
}

impl Routes {
    /// Routes over `channel_names` (validated at load time: unknown names are skipped).
    pub fn new(specs: &[RouteSpec], channel_names: &[String]) -> Routes {
        let routes = specs
            .iter()
            .filter_map(|r| {
                let matcher = Matcher::new(r.matchers.clone()).ok()?;
                let targets = r
                    .channels
                    .iter()
                    .filter_map(|n| channel_names.iter().position(|c| c == n))
                    .collect();
                Some((matcher, targets))
            })
            .collect();
        Routes {
            routes,
            channels: channel_names.len(),
        }
    }

    /// Whether any route needs device metadata.
    pub fn needs_meta(&self) -> bool {
        self.routes.iter().any(|(m, _)| m.needs_meta())
    }

    /// The channels `alert` goes to, in channel order, each once. Without routes: all.
    pub fn targets(&self, alert: &Alert, meta: Option<&DeviceMeta>) -> Vec<usize> {
        if self.routes.is_empty() {
            return (0..self.channels).collect();
        }
        let mut out: Vec<usize> = self
            .routes
            .iter()
            .filter(|(m, _)| m.matches(alert, meta))
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::alert;
    use iiot_model::Severity;

    fn route(toml: &str) -> RouteSpec {
        toml::from_str(toml).expect("route")
    }

    #[test]
    fn routes_match_severity_type_glob_and_metadata() {
        let names = vec!["ops".to_string(), "mail".to_string()];
        let routes = Routes::new(
            &[
                route("channels = [\"ops\"]\nseverity = [\"critical\"]\n"),
                route(
                    "channels = [\"mail\", \"ops\"]\ndevice_id = \"device_0*\"\nbuilding = [\"A\"]\nfloor = [3]\n",
                ),
            ],
            &names,
        );
        let mut a = alert("device_042", "temperature_high");
        a.severity = Severity::High;
        let meta = DeviceMeta {
            building: "A".into(),
            floor: 3,
            model: "X".into(),
        };
        assert_eq!(routes.targets(&a, Some(&meta)), vec![0, 1]);
        assert_eq!(routes.targets(&a, None), Vec::<usize>::new());
        a.device_id = "device_142".into();
        assert!(routes.targets(&a, Some(&meta)).is_empty());
        a.severity = Severity::Critical;
        assert_eq!(routes.targets(&a, Some(&meta)), vec![0]);
        assert_eq!(Routes::new(&[], &names).targets(&a, None), vec![0, 1]);
    }

    #[test]
    fn unknown_route_fields_are_rejected() {
        let e = toml::from_str::<RouteSpec>("channels = [\"x\"]\nsevrity = [\"high\"]\n");
        assert!(e.is_err());
    }
}
