//! How rule specs combine into a [`RuleSet`]: the defaults, then the specs in order — first
//! every spec without a scope (replacing, adding or, with `enabled = false`, removing the rule
//! of its `alert_type`), then every spec with a scope (an override of that rule for the devices
//! in the scope). A scoped spec takes what it does not give from the rule it overrides (its
//! `clear` only when it gives no `value` either: a new limit gets its own hysteresis), and must
//! measure the same thing (kind and parameter). Of two specs with the same `alert_type` and
//! scope, the later wins.
//!
//! Each spec is known by its [`rule_id`]: `temperature_high`, or
//! `temperature_high@building=C,floor=2` with a scope.

use std::collections::HashMap;

use iiot_model::Operator;

use super::engine::same_measure;
use super::rules::{
    AlertRule, RuleError, RuleKind, RuleSet, RuleSpec, ScopedRule, Thresholds, err,
};
use super::scope::Scope;
use crate::duration::format_duration;

/// The id of the rule `spec` defines: its `alert_type`, then `@` and the scope's label when it
/// has a scope.
pub fn rule_id(spec: &RuleSpec) -> String {
    match spec.scope.as_ref().filter(|s| !s.is_empty()) {
        Some(scope) => format!("{}@{}", spec.alert_type, scope.label()),
        None => spec.alert_type.clone(),
    }
}

fn scoped(spec: &RuleSpec) -> bool {
    spec.scope.as_ref().is_some_and(|s| !s.is_empty())
}

impl RuleSet {
    /// The defaults for `thresholds`, then `specs` (the config file's `[[alerts.rules]]`), as
    /// the module describes. Errors name `alerts.rules[i].field`.
    pub fn build(thresholds: &Thresholds, specs: &[RuleSpec]) -> Result<RuleSet, RuleError> {
        RuleSet::build_named(thresholds, specs, &|i| format!("alerts.rules[{i}]"))
    }

    /// [`RuleSet::build`], errors naming the `i`th spec as `name(i)` (`name(i).field`).
    pub fn build_named(
        thresholds: &Thresholds,
        specs: &[RuleSpec],
        name: &dyn Fn(usize) -> String,
    ) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::defaults(thresholds);
        // The spec form of each rule without a scope, for the scoped ones to inherit from.
        let mut bases: HashMap<String, RuleSpec> = set
            .rules
            .iter()
            .map(|r| (r.alert_type.clone(), r.to_spec()))
            .collect();
        for (i, spec) in specs.iter().enumerate().filter(|(_, s)| !scoped(s)) {
            let key = |field: &str| format!("{}.{field}", name(i));
            let pos = set
                .rules
                .iter()
                .position(|r| r.alert_type == spec.alert_type);
            if spec.enabled == Some(false) {
                if let Some(p) = pos {
                    set.rules.remove(p);
                }
                bases.remove(&spec.alert_type);
                continue;
            }
            let rule = spec.check(&key)?;
            bases.insert(spec.alert_type.clone(), spec.clone());
            match pos {
                Some(p) => set.rules[p] = rule,
                None => set.rules.push(rule),
            }
        }
        for (i, spec) in specs.iter().enumerate().filter(|(_, s)| scoped(s)) {
            let key = |field: &str| format!("{}.{field}", name(i));
            add_scoped(&mut set, &bases, spec, &key)?;
        }
        for rule in &mut set.rules {
            // Later first among equally specific scopes (the sort is stable).
            rule.scoped.reverse();
            rule.scoped
                .sort_by(|a, b| Scope::most_specific_first(&a.scope, &b.scope));
        }
        Ok(set)
    }
}

/// Adds the scoped `spec` to the rule of its `alert_type` in `set` (or as a rule of its own,
/// for those devices only, when there is none).
fn add_scoped(
    set: &mut RuleSet,
    bases: &HashMap<String, RuleSpec>,
    spec: &RuleSpec,
    key: &dyn Fn(&str) -> String,
) -> Result<(), RuleError> {
    let scope_spec = spec.scope.clone().unwrap_or_default();
    let scope = Scope::new(scope_spec).map_err(|(f, p)| err(key, &format!("scope.{f}"), p))?;
    let checked = match spec.enabled {
        Some(false) => None,
        _ => {
            let merged = match bases.get(&spec.alert_type) {
                Some(base) => spec.inherit(base),
                None => spec.clone(),
            };
            Some(merged.check(key)?)
        }
    };
    let Some(rule) = set
        .rules
        .iter_mut()
        .find(|r| r.alert_type == spec.alert_type)
    else {
        // Off in a scope of a rule that does not exist: nothing to switch off.
        if let Some(c) = checked {
            let (severity, kind) = (c.severity, c.kind.clone());
            set.rules.push(AlertRule {
                scoped: vec![ScopedRule {
                    scope,
                    severity,
                    kind: Some(kind),
                }],
                everywhere: false,
                ..c
            });
        }
        return Ok(());
    };
    if let Some(c) = &checked
        && !same_measure(&rule.kind, &c.kind)
    {
        return Err(err(
            key,
            "kind",
            format!(
                "a scoped rule must measure what rule {:?} measures ({}); give it another alert_type instead",
                rule.alert_type,
                describe(&rule.kind)
            ),
        ));
    }
    rule.scoped.retain(|s| s.scope != scope);
    rule.scoped.push(ScopedRule {
        scope,
        severity: checked.as_ref().map_or(rule.severity, |c| c.severity),
        kind: checked.map(|c| c.kind),
    });
    Ok(())
}

fn describe(kind: &RuleKind) -> String {
    match kind {
        RuleKind::Threshold { parameter, .. } => format!("threshold on {}", parameter.as_str()),
        RuleKind::RateOfChange { parameter, .. } => {
            format!("rate_of_change on {}", parameter.as_str())
        }
        RuleKind::Stuck { parameter, .. } => format!("stuck on {}", parameter.as_str()),
        RuleKind::Offline { .. } => "offline".into(),
    }
}

impl RuleSpec {
    /// This scoped spec with what it leaves out taken from `base`.
    fn inherit(&self, base: &RuleSpec) -> RuleSpec {
        RuleSpec {
            alert_type: self.alert_type.clone(),
            kind: self.kind.clone().or_else(|| base.kind.clone()),
            parameter: self.parameter.clone().or_else(|| base.parameter.clone()),
            operator: self.operator.clone().or_else(|| base.operator.clone()),
            value: self.value.or(base.value),
            clear: match self.value {
                Some(_) => self.clear,
                None => self.clear.or(base.clear),
            },
            for_: self.for_.clone().or_else(|| base.for_.clone()),
            window: self.window.clone().or_else(|| base.window.clone()),
            missed_intervals: self.missed_intervals.or(base.missed_intervals),
            severity: self.severity.clone().or_else(|| base.severity.clone()),
            enabled: self.enabled,
            scope: self.scope.clone(),
        }
    }
}

impl AlertRule {
    /// The rule (without its scoped overrides) as a spec that builds it again.
    pub fn to_spec(&self) -> RuleSpec {
        let mut spec = RuleSpec {
            alert_type: self.alert_type.clone(),
            severity: Some(self.severity.as_str().to_string()),
            ..RuleSpec::default()
        };
        match &self.kind {
            RuleKind::Threshold {
                parameter,
                operator,
                value,
                clear,
                hold,
            } => {
                spec.kind = Some("threshold".into());
                spec.parameter = Some(parameter.as_str().into());
                spec.operator = Some(
                    if *operator == Operator::Below {
                        "<"
                    } else {
                        ">"
                    }
                    .into(),
                );
                spec.value = Some(*value);
                spec.clear = Some(*clear);
                spec.for_ = (!hold.is_zero()).then(|| format_duration(*hold));
            }
            RuleKind::RateOfChange {
                parameter,
                value,
                clear,
                window,
            } => {
                spec.kind = Some("rate_of_change".into());
                spec.parameter = Some(parameter.as_str().into());
                spec.value = Some(*value);
                spec.clear = Some(*clear);
                spec.window = Some(format_duration(*window));
            }
            RuleKind::Stuck { parameter, hold } => {
                spec.kind = Some("stuck".into());
                spec.parameter = Some(parameter.as_str().into());
                spec.for_ = Some(format_duration(*hold));
            }
            RuleKind::Offline { missed_intervals } => {
                spec.kind = Some("offline".into());
                spec.missed_intervals = Some(*missed_intervals);
            }
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::super::scope::DeviceContext;
    use super::*;

    fn specs(toml_text: &str) -> Vec<RuleSpec> {
        #[derive(serde::Deserialize)]
        struct File {
            rules: Vec<RuleSpec>,
        }
        toml::from_str::<File>(toml_text).expect("toml").rules
    }

    fn ctx(building: &str, floor: i32) -> DeviceContext {
        DeviceContext {
            building: building.into(),
            floor,
            model: "M".into(),
        }
    }

    fn limit(set: &RuleSet, device: &str, c: &DeviceContext) -> Option<f64> {
        let rule = set.get("temperature_high").expect("rule");
        match rule.for_device(device, Some(c))?.1 {
            RuleKind::Threshold { value, .. } => Some(*value),
            other => panic!("not a threshold: {other:?}"),
        }
    }

    #[test]
    fn the_most_specific_scope_wins_and_others_keep_the_default() {
        let set = RuleSet::build(
            &Thresholds::default(),
            &specs(
                r#"
                [[rules]]
                alert_type = "temperature_high"
                value = 75.0
                scope = { building = "C" }
                [[rules]]
                alert_type = "temperature_high"
                value = 70.0
                scope = { building = "C", floor = 2 }
                [[rules]]
                alert_type = "temperature_high"
                enabled = false
                scope = { device_id = "lab_*" }
                "#,
            ),
        )
        .expect("valid");
        assert_eq!(limit(&set, "d1", &ctx("C", 2)), Some(70.0));
        assert_eq!(limit(&set, "d1", &ctx("C", 3)), Some(75.0));
        assert_eq!(limit(&set, "d1", &ctx("A", 2)), Some(80.0));
        assert_eq!(limit(&set, "lab_1", &ctx("A", 2)), None, "off there");
        // Inherited: operator, parameter and severity; clear follows the new value.
        let rule = set.get("temperature_high").expect("rule");
        let (severity, kind) = rule.for_device("d1", Some(&ctx("C", 2))).expect("on");
        assert_eq!(severity, iiot_model::Severity::High);
        assert!(
            matches!(kind, RuleKind::Threshold { clear, .. } if *clear < 70.0 && *clear > 68.0)
        );
    }

    #[test]
    fn a_scoped_rule_must_measure_the_same_thing_and_is_validated_like_any() {
        let bad = |text: &str| {
            RuleSet::build(&Thresholds::default(), &specs(text))
                .expect_err("refused")
                .key
        };
        assert_eq!(
            bad(r#"[[rules]]
                alert_type = "temperature_high"
                parameter = "humidity"
                scope = { building = "C" }"#),
            "alerts.rules[0].kind"
        );
        assert_eq!(
            bad(r#"[[rules]]
                alert_type = "temperature_high"
                value = 70.0
                clear = 71.0
                scope = { floor = 2 }"#),
            "alerts.rules[0].clear"
        );
        assert_eq!(
            bad(r#"[[rules]]
                alert_type = "temperature_high"
                scope = { device_id = "[x" }"#),
            "alerts.rules[0].scope.device_id"
        );
    }

    #[test]
    fn a_rule_given_only_with_a_scope_applies_there_only() {
        let set = RuleSet::build(
            &Thresholds::default(),
            &specs(
                r#"[[rules]]
                alert_type = "pressure_low"
                parameter = "pressure"
                operator = "<"
                value = 950.0
                scope = { building = "C" }"#,
            ),
        )
        .expect("valid");
        let rule = set.get("pressure_low").expect("rule");
        assert!(rule.for_device("d", Some(&ctx("C", 1))).is_some());
        assert!(rule.for_device("d", Some(&ctx("A", 1))).is_none());
    }

    #[test]
    fn defaults_turned_into_specs_build_the_same_rules() {
        let defaults = RuleSet::defaults(&Thresholds::default());
        let specs: Vec<RuleSpec> = defaults.rules.iter().map(AlertRule::to_spec).collect();
        assert_eq!(
            RuleSet::build(&Thresholds::default(), &specs).expect("valid"),
            defaults
        );
        assert_eq!(rule_id(&specs[0]), "temperature_high");
    }
}
