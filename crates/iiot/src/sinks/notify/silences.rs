//! Silences and maintenance windows: matchers (as routes have) that hold notifications back
//! while they are in force — once, between `starts_at` and `ends_at`, or every week on some days
//! between two local times in a time zone. Kept in memory, and in a JSON file when the store is
//! given one (written whole on every change, through a temporary file and a rename).
//!
//! Whether a silence is in force is asked of an injected [`Clock`], so tests can move time.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use iiot_model::Alert;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::config::Matchers;
use super::routing::{DeviceMeta, Matcher};

/// Unix ms now; the system clock in production, a hand-moved one in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::now_ms)
}

/// Most silences kept (expired one-off silences are dropped first).
pub const MAX_SILENCES: usize = 1000;
/// Longest `comment` of a silence, in characters.
pub const MAX_COMMENT_CHARS: usize = 1000;
/// Longest `created_by` of a silence, in characters.
pub const MAX_CREATED_BY_CHARS: usize = 200;

/// A silence as created (`POST /api/silences`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    /// Which alerts it holds back (every field empty: all of them).
    #[serde(default)]
    pub matchers: Matchers,
    /// From when, Unix ms (default: now).
    #[serde(default)]
    pub starts_at: Option<i64>,
    /// Until when, Unix ms (required unless `schedule` is given).
    #[serde(default)]
    pub ends_at: Option<i64>,
    /// A weekly window; `starts_at`/`ends_at` then bound the weeks it applies to.
    #[serde(default)]
    pub schedule: Option<Weekly>,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Who.
    #[serde(default)]
    pub created_by: String,
}

/// Every week, on `days`, from `start` to `end` local time in `tz` (an `end` at or before
/// `start` runs past midnight into the next day).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    /// `mon` … `sun`.
    pub days: Vec<String>,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    /// An IANA time zone such as `Europe/Berlin` (default `UTC`).
    #[serde(default = "utc")]
    pub tz: String,
}

fn utc() -> String {
    "UTC".into()
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// What it matches.
    pub matchers: Matchers,
    /// From when, Unix ms.
    pub starts_at: i64,
    /// Until when, Unix ms; `None`: a schedule without an end.
    pub ends_at: Option<i64>,
    /// The weekly window, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Weekly>,
    /// Why.
    pub comment: String,
    /// Who.
    pub created_by: String,
    /// When it was created, Unix ms.
    pub created_at: i64,
}

/// A schedule ready to evaluate.
#[derive(Debug, Clone)]
struct Window {
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    tz: TimeZone,
}

impl Window {
    fn new(w: &Weekly) -> Result<Window, String> {
        let days = w
            .days
            .iter()
            .map(|d| weekday(d).ok_or_else(|| format!("schedule.days: {d:?} is not mon … sun")))
            .collect::<Result<Vec<_>, _>>()?;
        if days.is_empty() {
            return Err("schedule.days: must name at least one day".into());
        }
        // Exactly two digits each, as the API document's pattern says (`strptime` alone also
        // takes `7:05`).
        let time = |field: &str, t: &str| {
            let shaped = t.len() == 5 && t.as_bytes()[2] == b':';
            shaped
                .then(|| Time::strptime("%H:%M", t).ok())
                .flatten()
                .ok_or_else(|| format!("schedule.{field}: {t:?} is not HH:MM"))
        };
        let tz = TimeZone::get(&w.tz)
            .map_err(|_| format!("schedule.tz: {:?} is not a known time zone", w.tz))?;
        Ok(Window {
            days,
            start: time("start", &w.start)?,
            end: time("end", &w.end)?,
            tz,
        })
    }

    fn contains(&self, now_ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(now_ms) else {
            return false;
        };
        let local = ts.to_zoned(self.tz.clone());
        let (day, t) = (local.weekday(), local.time());
        if self.start < self.end {
            self.days.contains(&day) && t >= self.start && t < self.end
        } else {
            (self.days.contains(&day) && t >= self.start)
                || (self.days.contains(&day.previous()) && t < self.end)
        }
    }
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

/// A silence with its matcher and window compiled.
#[derive(Debug, Clone)]
struct Entry {
    silence: Silence,
    matcher: Matcher,
    window: Option<Window>,
}

impl Entry {
    fn new(silence: Silence) -> Result<Entry, String> {
        let matcher = Matcher::new(silence.matchers.clone())
            .map_err(|e| format!("matchers.device_id: {e}"))?;
        let window = silence.schedule.as_ref().map(Window::new).transpose()?;
        Ok(Entry {
            silence,
            matcher,
            window,
        })
    }

    fn in_force(&self, now_ms: i64) -> bool {
        let s = &self.silence;
        now_ms >= s.starts_at
            && s.ends_at.is_none_or(|end| now_ms < end)
            && self.window.as_ref().is_none_or(|w| w.contains(now_ms))
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.silence.ends_at.is_some_and(|end| now_ms >= end)
    }
}

/// The silences, shared by the API and the notifier.
pub struct Silences {
    entries: RwLock<Vec<Entry>>,
    clock: Clock,
    file: Option<PathBuf>,
    /// On Kafka: each change, for the silences topic (`None` value: deleted).
    changes: Option<tokio::sync::mpsc::Sender<SilenceChange>>,
}

/// One change for the silences topic: the silence by id, or `None` when it was deleted.
pub type SilenceChange = (String, Option<Silence>);

/// Changes waiting to be published; beyond it one is logged and dropped (other instances do
/// not hear of it).
pub const CHANGE_QUEUE: usize = 1024;

/// A silence as the API shows it: stored fields plus whether it is in force now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceView {
    /// The silence.
    #[serde(flatten)]
    pub silence: Silence,
    /// In force now.
    pub active: bool,
    /// Over for good.
    pub expired: bool,
}

impl Silences {
    /// Silences in memory only.
    pub fn in_memory(clock: Clock) -> Silences {
        Silences {
            entries: RwLock::default(),
            clock,
            file: None,
            changes: None,
        }
    }

    /// Silences in memory whose every change is also sent on the returned queue, for the
    /// silences topic ([`super::NotifyShared::on_topic`]); changes from the topic come back through
    /// [`Silences::apply`].
    pub fn on_topic(clock: Clock) -> (Silences, tokio::sync::mpsc::Receiver<SilenceChange>) {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANGE_QUEUE);
        let silences = Silences {
            changes: Some(tx),
            ..Silences::in_memory(clock)
        };
        (silences, rx)
    }

    /// A change read from the silences topic (made here or by another instance): the
    /// silence `id` is now `silence`, or gone. An invalid one is logged and left out.
    pub fn apply(&self, id: &str, silence: Option<Silence>) {
        let entry = match silence.map(Entry::new).transpose() {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(id, error = %e, "an invalid silence on the silences topic was left out");
                return;
            }
        };
        let mut entries = self.write();
        entries.retain(|e| e.silence.id != id);
        if let Some(entry) = entry.filter(|_| entries.len() < MAX_SILENCES) {
            entries.push(entry);
        }
    }

    fn publish(&self, change: SilenceChange) {
        let Some(tx) = &self.changes else { return };
        if tx.try_send(change).is_err() {
            tracing::warn!("silence change not published: too many waiting");
        }
    }

    /// Silences kept in `file` too: read back now (a missing file is empty; an unreadable one
    /// is an error).
    pub fn persisted(clock: Clock, file: PathBuf) -> Result<Silences, String> {
        let entries = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Vec<Silence>>(&bytes)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .into_iter()
                .map(Entry::new)
                .collect::<Result<Vec<_>, _>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        Ok(Silences {
            entries: RwLock::new(entries),
            clock,
            file: Some(file),
            changes: None,
        })
    }

    /// Unix ms on the store's clock.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Validates and stores `spec`; the error says which field is wrong and why.
    pub fn create(&self, spec: SilenceSpec) -> Result<Silence, String> {
        let now = self.now_ms();
        let starts_at = spec.starts_at.unwrap_or(now);
        match (spec.ends_at, &spec.schedule) {
            (None, None) => return Err("ends_at: required unless a schedule is given".into()),
            (Some(end), _) if end <= starts_at => {
                return Err("ends_at: must be after starts_at".into());
            }
            (Some(end), None) if end <= now => return Err("ends_at: must be in the future".into()),
            _ => {}
        }
        // Characters, as JSON Schema's `maxLength` in the API document counts them.
        if spec.comment.chars().count() > MAX_COMMENT_CHARS
            || spec.created_by.chars().count() > MAX_CREATED_BY_CHARS
        {
            return Err(format!(
                "comment/created_by: too long (at most {MAX_COMMENT_CHARS}/{MAX_CREATED_BY_CHARS} \
                 characters)"
            ));
        }
        let silence = Silence {
            id: format!("silence_{:016x}", rand::random::<u64>()),
            matchers: spec.matchers,
            starts_at,
            ends_at: spec.ends_at,
            schedule: spec.schedule,
            comment: spec.comment,
            created_by: spec.created_by,
            created_at: now,
        };
        let entry = Entry::new(silence.clone())?;
        let gone: Vec<String> = {
            let mut entries = self.write();
            let gone = entries
                .iter()
                .filter(|e| e.expired(now))
                .map(|e| e.silence.id.clone())
                .collect();
            entries.retain(|e| !e.expired(now));
            if entries.len() >= MAX_SILENCES {
                return Err(format!("at most {MAX_SILENCES} silences can be kept"));
            }
            entries.push(entry);
            gone
        };
        self.save();
        for id in gone {
            self.publish((id, None));
        }
        self.publish((silence.id.clone(), Some(silence.clone())));
        Ok(silence)
    }

    /// Removes silence `id`; `false` if there is none.
    pub fn delete(&self, id: &str) -> bool {
        let removed = {
            let mut entries = self.write();
            let before = entries.len();
            entries.retain(|e| e.silence.id != id);
            entries.len() != before
        };
        if removed {
            self.save();
            self.publish((id.to_string(), None));
        }
        removed
    }

    /// Every silence, oldest first.
    pub fn list(&self) -> Vec<SilenceView> {
        let now = self.now_ms();
        self.read()
            .iter()
            .map(|e| SilenceView {
                silence: e.silence.clone(),
                active: e.in_force(now),
                expired: e.expired(now),
            })
            .collect()
    }

    /// Whether a silence in force at `now_ms` matches `alert`.
    pub fn silences(&self, alert: &Alert, meta: Option<&DeviceMeta>, now_ms: i64) -> bool {
        self.read()
            .iter()
            .any(|e| e.in_force(now_ms) && e.matcher.matches(alert, meta))
    }

    /// Whether there are any silences at all (no device lookup is needed without).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        // Entries are replaced whole under the lock: a panicking writer leaves them usable.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self) {
        let Some(file) = &self.file else { return };
        let all: Vec<Silence> = self.read().iter().map(|e| e.silence.clone()).collect();
        let tmp = file.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&all)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = result {
            tracing::warn!(file = %file.display(), error = %e, "could not save the silences");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::test_support::alert;

    /// Sunday 2024-01-07 00:00 UTC.
    const SUNDAY: i64 = 1_704_585_600_000;
    const HOUR: i64 = 3_600_000;

    fn clock_at(t: i64) -> (Arc<AtomicI64>, Clock) {
        let now = Arc::new(AtomicI64::new(t));
        let c = now.clone();
        (now, Arc::new(move || c.load(Ordering::SeqCst)))
    }

    fn spec(json: serde_json::Value) -> SilenceSpec {
        serde_json::from_value(json).expect("spec")
    }

    #[test]
    fn one_off_silence_holds_between_its_bounds_for_matching_alerts_only() {
        let (now, clock) = clock_at(SUNDAY);
        let silences = Silences::in_memory(clock);
        let s = silences
            .create(spec(serde_json::json!({
                "matchers": {"device_id": "device_0*"}, "ends_at": SUNDAY + HOUR,
                "comment": "pump swap", "created_by": "ana"})))
            .expect("valid");
        let a = alert("device_042", "temperature_high");
        let other = alert("device_142", "temperature_high");
        assert!(silences.silences(&a, None, SUNDAY + 1));
        assert!(!silences.silences(&other, None, SUNDAY + 1));
        assert!(!silences.silences(&a, None, SUNDAY + HOUR));
        now.store(SUNDAY + HOUR, Ordering::SeqCst);
        assert!(silences.list()[0].expired);
        assert!(silences.delete(&s.id));
        assert!(!silences.delete(&s.id));
    }

    #[test]
    fn weekly_window_follows_the_time_zone_and_crosses_midnight() {
        let (_, clock) = clock_at(SUNDAY);
        let silences = Silences::in_memory(clock);
        silences
            .create(spec(serde_json::json!({"schedule":
                {"days": ["sun"], "start": "02:00", "end": "04:00", "tz": "Europe/Berlin"}})))
            .expect("valid");
        let a = alert("device_001", "temperature_high");
        // Berlin is UTC+1 in January: 02:00–04:00 local is 01:00–03:00 UTC.
        assert!(!silences.silences(&a, None, SUNDAY + HOUR / 2));
        assert!(silences.silences(&a, None, SUNDAY + HOUR + 1));
        assert!(silences.silences(&a, None, SUNDAY + 2 * HOUR + HOUR / 2));
        assert!(!silences.silences(&a, None, SUNDAY + 3 * HOUR));
        assert!(silences.silences(&a, None, SUNDAY + 7 * 24 * HOUR + 2 * HOUR));
        assert!(!silences.silences(&a, None, SUNDAY + 24 * HOUR + 2 * HOUR));

        silences
            .create(spec(
                serde_json::json!({"starts_at": SUNDAY - 24 * HOUR, "schedule":
                {"days": ["sat"], "start": "22:00", "end": "02:00"}}),
            ))
            .expect("valid");
        // Saturday 23:00 UTC and Sunday 01:00 UTC are both inside the night window.
        assert!(silences.silences(&a, None, SUNDAY - HOUR));
        assert!(silences.silences(&a, None, SUNDAY + HOUR / 2));
    }

    #[test]
    fn bad_input_names_the_field() {
        let (_, clock) = clock_at(SUNDAY);
        let silences = Silences::in_memory(clock);
        let err = |j| silences.create(spec(j)).expect_err("invalid");
        assert!(err(serde_json::json!({})).starts_with("ends_at"));
        assert!(err(serde_json::json!({"ends_at": SUNDAY - 1})).starts_with("ends_at"));
        let bad_tz = serde_json::json!({"schedule": {"days": ["sun"], "start": "02:00",
            "end": "04:00", "tz": "Mars/Olympus"}});
        assert!(err(bad_tz).starts_with("schedule.tz"));
        let bad_day =
            serde_json::json!({"schedule": {"days": ["sunday!"], "start": "2", "end": "04:00"}});
        assert!(err(bad_day).starts_with("schedule"));
        let bad_glob = serde_json::json!({"matchers": {"device_id": "[x"}, "ends_at": SUNDAY + 1});
        assert!(err(bad_glob).starts_with("matchers"));
    }

    #[test]
    fn persisted_silences_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("silences.json");
        let (_, clock) = clock_at(SUNDAY);
        let first = Silences::persisted(clock.clone(), file.clone()).expect("empty");
        let s = first
            .create(spec(serde_json::json!({"ends_at": SUNDAY + HOUR})))
            .expect("valid");
        let again = Silences::persisted(clock, file).expect("read back");
        assert_eq!(again.list()[0].silence, s);
    }
}
