//! Rule specs: defaults, replacement, and the errors that name the key.

use super::*;

fn spec(toml_text: &str) -> RuleSpec {
    toml::from_str(toml_text).expect("spec parses")
}

/// Why the defaults plus the one rule `toml_text` are refused.
fn refusal(toml_text: &str) -> RuleError {
    RuleSet::build(&Thresholds::default(), &[spec(toml_text)]).expect_err(toml_text)
}

#[test]
fn defaults_follow_the_thresholds() {
    let set = RuleSet::defaults(&Thresholds {
        temperature_high: 70.0,
        ..Thresholds::default()
    });
    match &set.get("temperature_high").expect("present").kind {
        RuleKind::Threshold {
            value,
            clear,
            operator,
            ..
        } => {
            assert_eq!((*value, *clear, *operator), (70.0, 68.25, Operator::Above));
        }
        k => panic!("unexpected {k:?}"),
    }
    match &set.get("temperature_low").expect("present").kind {
        RuleKind::Threshold { value, clear, .. } => assert_eq!((*value, *clear), (0.0, 0.5)),
        k => panic!("unexpected {k:?}"),
    }
    assert_eq!(set.rules.len(), 8);
}

#[test]
fn specs_replace_add_and_remove_rules() {
    let specs = vec![
        spec(
            "alert_type='temperature_high'\nparameter='temperature'\noperator='>'\nvalue=60.0\nclear=55.0\nfor='30s'\nseverity='critical'",
        ),
        spec("alert_type='pressure_low'\nparameter='pressure'\noperator='<'\nvalue=950.0"),
        spec("alert_type='sensor_stuck'\nenabled=false"),
    ];
    let set = RuleSet::build(&Thresholds::default(), &specs).expect("valid");
    let high = set.get("temperature_high").expect("present");
    assert_eq!(high.severity, Severity::Critical);
    assert_eq!(
        high.kind,
        RuleKind::Threshold {
            parameter: Parameter::Temperature,
            operator: Operator::Above,
            value: 60.0,
            clear: 55.0,
            hold: Duration::from_secs(30)
        }
    );
    assert!(set.get("pressure_low").is_some());
    assert!(set.get("sensor_stuck").is_none());
}

#[test]
fn bad_specs_name_the_key() {
    let cases = [
        (
            "alert_type='x'\nparameter='voltage'\noperator='>'\nvalue=1.0",
            "alerts.rules[0].parameter",
        ),
        (
            "alert_type='x'\nparameter='current'\noperator='=='\nvalue=1.0",
            "alerts.rules[0].operator",
        ),
        (
            "alert_type='x'\nparameter='current'\noperator='>'\nvalue=10.0\nclear=12.0",
            "alerts.rules[0].clear",
        ),
        (
            "alert_type='x'\nparameter='current'\noperator='>'\nvalue=1.0\nfor='soon'",
            "alerts.rules[0].for",
        ),
        (
            "alert_type='x'\nparameter='current'\noperator='>'\nvalue=1.0\nfor='8days'",
            "alerts.rules[0].for",
        ),
        (
            "alert_type='x'\nparameter='current'\noperator='>'\nvalue=1.0\nseverity='meh'",
            "alerts.rules[0].severity",
        ),
        (
            "alert_type='X Y'\nparameter='current'\noperator='>'\nvalue=1.0",
            "alerts.rules[0].alert_type",
        ),
        ("alert_type='x'\nkind='magic'", "alerts.rules[0].kind"),
        (
            "alert_type='x'\nkind='offline'\nmissed_intervals=0.5",
            "alerts.rules[0].missed_intervals",
        ),
        (
            "alert_type='x'\nkind='rate_of_change'\nparameter='current'\nvalue=-1.0",
            "alerts.rules[0].value",
        ),
    ];
    for (text, key) in cases {
        let e = refusal(text);
        assert_eq!(e.key, key, "{text}: {e}");
    }
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(toml::from_str::<RuleSpec>("alert_type='x'\nthreshhold=3").is_err());
}

#[test]
fn messages_of_common_fields_and_thresholds_say_what_is_allowed() {
    assert_problems(&[
        (
            "alert_type='X Y'",
            "\"X Y\" must be non-empty snake_case ([a-z0-9_])",
        ),
        (
            "alert_type='x'\nseverity='meh'",
            "\"meh\" is not one of low, medium, high, critical",
        ),
        ("alert_type='x'\nvalue=nan", "NaN is not a finite number"),
        ("alert_type='x'\nclear=inf", "inf is not a finite number"),
        (
            "alert_type='x'\nkind='magic'",
            "\"magic\" is not one of threshold, rate_of_change, stuck, offline",
        ),
        ("alert_type='x'\nvalue=1.0", "is required: \">\" or \"<\""),
        (
            "alert_type='x'\noperator='=='",
            "\"==\" must be \">\" or \"<\"",
        ),
        ("alert_type='x'\noperator='>'", "is required"),
        (
            "alert_type='x'\noperator='>'\nvalue=10.0\nclear=12.0",
            "12 must be on the safe side of value 10 (operator >)",
        ),
        (
            "alert_type='x'\noperator='>'\nvalue=1.0",
            "is required for this kind",
        ),
        (
            "alert_type='x'\noperator='>'\nvalue=1.0\nparameter='voltage'",
            "\"voltage\" is not one of temperature, humidity, pressure, current, battery, signal_strength",
        ),
        (
            "alert_type='x'\nparameter='current'\noperator='>'\nvalue=1.0\nfor='8days'",
            "\"8days\" is longer than 7 days",
        ),
    ]);
}

#[test]
fn messages_of_rate_stuck_and_offline_rules_say_what_is_allowed() {
    assert_problems(&[
        (
            "alert_type='x'\nkind='rate_of_change'",
            "is required (units per minute)",
        ),
        (
            "alert_type='x'\nkind='rate_of_change'\nvalue=-1.0",
            "-1 must be > 0",
        ),
        (
            "alert_type='x'\nkind='rate_of_change'\nvalue=1.0\nclear=2.0",
            "2 must be between 0 and value 1",
        ),
        (
            "alert_type='x'\nkind='rate_of_change'\nvalue=1.0\nwindow='0s'",
            "must be longer than 0",
        ),
        (
            "alert_type='x'\nkind='stuck'\nfor='0s'",
            "must be longer than 0",
        ),
        ("alert_type='x'\nkind='stuck'", "is required for this kind"),
        (
            "alert_type='x'\nkind='offline'\nmissed_intervals=0.5",
            "0.5 must be a number >= 1",
        ),
    ]);
}

/// Each (rule, problem): the rule is refused with exactly that problem.
fn assert_problems(cases: &[(&str, &str)]) {
    for (text, problem) in cases {
        assert_eq!(refusal(text).problem, *problem, "{text}");
    }
}

#[test]
fn the_offline_setting_comes_from_the_offline_rule() {
    let defaults = RuleSet::defaults(&Thresholds::default());
    assert_eq!(defaults.offline_missed_intervals(), Some(3.0));
    let specs = [
        spec("alert_type='device_offline'\nkind='offline'\nmissed_intervals=5.0"),
        spec("alert_type='device_gone'\nkind='offline'\nmissed_intervals=20.0"),
    ];
    let set = RuleSet::build(&Thresholds::default(), &specs).expect("valid");
    assert_eq!(
        set.offline_missed_intervals(),
        Some(5.0),
        "the first to fire"
    );
    let none = RuleSet::build(
        &Thresholds::default(),
        &[spec("alert_type='device_offline'\nenabled=false")],
    )
    .expect("valid");
    assert_eq!(none.offline_missed_intervals(), None);
}
