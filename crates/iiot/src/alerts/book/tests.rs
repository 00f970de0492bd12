//! The rule book on the data directory.

use super::*;
use crate::alerts::ScopeSpec;

fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.history.enabled = true;
    config.history.data_dir = dir.to_path_buf();
    config
}

fn scoped(value: f64) -> RuleSpec {
    RuleSpec {
        alert_type: "temperature_high".into(),
        value: Some(value),
        scope: Some(ScopeSpec {
            building: Some("B".into()),
            ..ScopeSpec::default()
        }),
        ..RuleSpec::default()
    }
}

#[tokio::test]
async fn api_rules_are_read_back_and_a_refused_change_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let book = RuleBook::persisted(&config(dir.path())).expect("book");
    let rx = book.sender().subscribe();
    book.put(None, scoped(60.0), false).await.expect("valid");
    assert!(rx.has_changed().expect("open"), "published");
    let refused = book
        .put(
            Some("temperature_high@building=B"),
            RuleSpec {
                clear: Some(65.0),
                ..scoped(60.0)
            },
            true,
        )
        .await;
    assert!(matches!(refused, Err(RuleBookError::Invalid(e)) if e.key == "rule.clear"));

    let again = RuleBook::persisted(&config(dir.path())).expect("book");
    let ids: Vec<String> = again
        .list()
        .into_iter()
        .filter(|v| v.source == RuleSource::Api)
        .map(|v| v.id)
        .collect();
    assert_eq!(ids, ["temperature_high@building=B"]);
    assert_eq!(again.rules(), book.rules());
}

#[tokio::test]
async fn a_torn_rules_file_is_set_aside_and_the_start_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("rules.json"), b"[{\"alert_type\": \"temp").expect("torn");
    let book = RuleBook::persisted(&config(dir.path())).expect("starts");
    assert!(book.list().iter().all(|v| v.source == RuleSource::Default));
    assert!(dir.path().join("rules.json.bad").exists());
    book.put(None, scoped(60.0), false).await.expect("valid");
    assert!(
        read_specs(&dir.path().join("rules.json"))
            .expect("whole")
            .len()
            == 1
    );
}
