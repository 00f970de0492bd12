//! Where a rule applies: a scope over the device's building, floor, model and id (a glob), as
//! written under `scope = { … }` of a rule, and how specific it is.
//!
//! A device is in a scope when every field the scope gives matches (an empty scope is every
//! device). Of several scopes a device is in, the most specific wins: the one that gives more
//! fields; on a tie, the one with the heavier fields (device id 8, floor 4, model 2, building
//! 1); on a tie still, the one defined later (API rules come before the file's, so the file
//! wins).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A scope as written in the config file or sent to `/api/rules`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    /// `location.building`, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    /// `location.floor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i32>,
    /// `device_info.model`, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A glob over the device id (`device_00*`, `line?_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// What a scope is matched against: the device's id and the location and model of its latest
/// reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceContext {
    /// `location.building`.
    pub building: String,
    /// `location.floor`.
    pub floor: i32,
    /// `device_info.model`.
    pub model: String,
}

/// A checked scope (its glob compiled).
#[derive(Debug, Clone)]
pub struct Scope {
    spec: ScopeSpec,
    glob: Option<glob::Pattern>,
}

impl PartialEq for Scope {
    fn eq(&self, other: &Scope) -> bool {
        self.spec == other.spec
    }
}

impl Scope {
    /// Checks `spec`: names must be non-empty and the glob valid. The error names the field.
    pub fn new(spec: ScopeSpec) -> Result<Scope, (&'static str, String)> {
        for (field, value) in [
            ("building", &spec.building),
            ("model", &spec.model),
            ("device_id", &spec.device_id),
        ] {
            match value {
                Some(v) if v.is_empty() || v.len() > 256 => {
                    return Err((field, "must be 1 to 256 bytes".into()));
                }
                _ => {}
            }
        }
        let glob = match &spec.device_id {
            Some(g) => Some(
                glob::Pattern::new(g)
                    .map_err(|e| ("device_id", format!("{g:?} is not a valid glob: {e}")))?,
            ),
            None => None,
        };
        Ok(Scope { spec, glob })
    }

    /// The scope as given.
    pub fn spec(&self) -> &ScopeSpec {
        &self.spec
    }

    /// Whether the device `device_id` with `ctx` (`None`: not seen with a location yet) is in
    /// this scope. Without a context, only scopes on the id alone can match.
    pub fn matches(&self, device_id: &str, ctx: Option<&DeviceContext>) -> bool {
        let s = &self.spec;
        let on_context = s.building.is_some() || s.floor.is_some() || s.model.is_some();
        if on_context {
            let Some(c) = ctx else { return false };
            if s.building.as_ref().is_some_and(|b| *b != c.building)
                || s.floor.is_some_and(|f| f != c.floor)
                || s.model.as_ref().is_some_and(|m| *m != c.model)
            {
                return false;
            }
        }
        self.glob.as_ref().is_none_or(|g| g.matches(device_id))
    }

    /// (fields given, their weight): compared to order scopes, more specific last.
    fn specificity(&self) -> (u32, u32) {
        let s = &self.spec;
        let fields = [
            (s.device_id.is_some(), 8),
            (s.floor.is_some(), 4),
            (s.model.is_some(), 2),
            (s.building.is_some(), 1),
        ];
        fields
            .iter()
            .filter(|(given, _)| *given)
            .fold((0, 0), |(n, w), (_, weight)| (n + 1, w + weight))
    }

    /// Orders scopes from the most specific to the least.
    pub fn most_specific_first(a: &Scope, b: &Scope) -> Ordering {
        b.specificity().cmp(&a.specificity())
    }
}

impl ScopeSpec {
    /// Whether no field is given (every device).
    pub fn is_empty(&self) -> bool {
        *self == ScopeSpec::default()
    }

    /// The scope's part of a rule id: `building=C,floor=2` (fields in a fixed order).
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = &self.building {
            parts.push(format!("building={b}"));
        }
        if let Some(f) = self.floor {
            parts.push(format!("floor={f}"));
        }
        if let Some(m) = &self.model {
            parts.push(format!("model={m}"));
        }
        if let Some(d) = &self.device_id {
            parts.push(format!("device_id={d}"));
        }
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(json: serde_json::Value) -> Scope {
        Scope::new(serde_json::from_value(json).expect("scope")).expect("valid")
    }

    fn ctx(building: &str, floor: i32, model: &str) -> DeviceContext {
        DeviceContext {
            building: building.into(),
            floor,
            model: model.into(),
        }
    }

    #[test]
    fn every_given_field_must_match() {
        let c2 = scope(serde_json::json!({"building": "C", "floor": 2}));
        assert!(c2.matches("d1", Some(&ctx("C", 2, "M"))));
        assert!(!c2.matches("d1", Some(&ctx("C", 3, "M"))));
        assert!(!c2.matches("d1", Some(&ctx("B", 2, "M"))));
        assert!(!c2.matches("d1", None), "no location known yet");
        let glob = scope(serde_json::json!({"device_id": "line1_*"}));
        assert!(glob.matches("line1_007", None));
        assert!(!glob.matches("line2_007", None));
    }

    #[test]
    fn more_fields_then_heavier_fields_are_more_specific() {
        let mut scopes = [
            scope(serde_json::json!({"building": "C"})),
            scope(serde_json::json!({"device_id": "d*"})),
            scope(serde_json::json!({"building": "C", "floor": 2})),
            scope(serde_json::json!({"model": "M"})),
        ];
        scopes.sort_by(Scope::most_specific_first);
        let labels: Vec<String> = scopes.iter().map(|s| s.spec().label()).collect();
        assert_eq!(
            labels,
            [
                "building=C,floor=2",
                "device_id=d*",
                "model=M",
                "building=C"
            ]
        );
    }

    #[test]
    fn a_bad_glob_or_empty_name_names_the_field() {
        let bad =
            |json| Scope::new(serde_json::from_value(json).expect("parses")).expect_err("refused");
        assert_eq!(bad(serde_json::json!({"device_id": "[a"})).0, "device_id");
        assert_eq!(bad(serde_json::json!({"building": ""})).0, "building");
    }
}
