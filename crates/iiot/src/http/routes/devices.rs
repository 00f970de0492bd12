//! `/api/devices`, `/api/devices/{id}` and `/api/devices/{id}/history`.

use axum::Json;
use axum::extract::State;
use iiot_model::{Location, Parameter, Reading, Sensors};
use serde::Serialize;
use serde_json::{Value, json};

use super::super::error::AppError;
use super::super::params::{Params, PathId};
use super::super::state::AppState;
use super::{RANGE_NAMES, RANGES, SENSORS};
use crate::history::{HistoryError, HistoryStore};
use crate::store::{DeviceFilter, DeviceStatus, DeviceView, MAX_PER_PAGE, MAX_POINTS, Page};

/// Points of a history answer when `points` is not given.
const DEFAULT_POINTS: usize = 300;
/// Range of history and export when neither `range` nor `from`/`to` is given, ms.
pub(super) const DEFAULT_RANGE_MS: i64 = 3_600_000;

/// A device as the API shows it: status, where it is, what it is, and its latest values.
#[derive(Serialize)]
struct DeviceItem<'a> {
    device_id: &'a str,
    status: DeviceStatus,
    location: &'a Location<'static>,
    model: &'a str,
    firmware: &'a str,
    battery: i64,
    signal_strength: i64,
    /// When data last arrived (receiver clock), Unix ms.
    last_seen: i64,
    /// Event time of the latest reading, Unix ms.
    timestamp: i64,
    seq: u64,
    interval_ms: i64,
    open_alerts: u32,
    critical_alerts: u32,
    sensors: &'a Sensors<'static>,
    /// The whole latest reading (one device only).
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<&'a Reading<'static>>,
}

impl<'a> DeviceItem<'a> {
    fn new(v: &'a DeviceView, with_latest: bool) -> Self {
        let r = &v.latest;
        DeviceItem {
            device_id: &v.device_id,
            status: v.status,
            location: &r.location,
            model: &r.device_info.model,
            firmware: &r.device_info.firmware,
            battery: r.device_info.battery,
            signal_strength: r.device_info.signal_strength,
            last_seen: v.last_seen_ms,
            timestamp: r.timestamp,
            seq: r.seq,
            interval_ms: v.interval_ms,
            open_alerts: v.open_alerts,
            critical_alerts: v.critical_alerts,
            sensors: &r.sensors,
            latest: with_latest.then_some(r),
        }
    }
}

/// `GET /api/devices?building=&floor=&status=&q=&page=&per_page=`.
pub(super) async fn list(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, AppError> {
    let filter = DeviceFilter {
        building: params.get("building").map(str::to_owned),
        floor: params.int("floor", "a floor number")?,
        status: params.parse_with(
            "status",
            || "one of online, offline, fault".into(),
            DeviceStatus::parse,
        )?,
        q: params.get("q").map(str::to_owned),
        // Up to the largest int64, as the document says (a page beyond the last is empty).
        page: params.int_in("page", 1, i64::MAX as usize)?.unwrap_or(1),
        per_page: params.int_in("per_page", 1, MAX_PER_PAGE)?.unwrap_or(100),
    };
    let page: Page<DeviceView> = state.read_store().devices(&filter, crate::now_ms());
    let items: Vec<DeviceItem<'_>> = page
        .items
        .iter()
        .map(|v| DeviceItem::new(v, false))
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": page.total,
        "page": page.page,
        "per_page": page.per_page,
    })))
}

/// `GET /api/devices/{id}`.
pub(super) async fn one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Value>, AppError> {
    let view = state
        .read_store()
        .device(&id, crate::now_ms())
        .ok_or(AppError::UnknownDevice(id))?;
    // Serializing borrowed strings and numbers into a `Value` cannot fail.
    Ok(Json(
        serde_json::to_value(DeviceItem::new(&view, true)).unwrap_or_default(),
    ))
}

/// The latest time a request may name: 9999-12-31T23:59:59.999Z, Unix ms.
pub(crate) const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// The time window of a history or export request, both ends inclusive, Unix ms: `from` and
/// `to` as given, and an end not given derived from the other with `range` (default 1 h) —
/// `to` missing: `from + range` if `range` is given, else now (or `from`, if that is later);
/// `from` missing: `to − range`, `to` defaulting to now. All three together, or `from` after
/// `to`, is a 400: OpenAPI cannot say so, the parameter descriptions do.
pub(super) fn window(params: &Params, now_ms: i64) -> Result<(i64, i64), AppError> {
    // Unix ms from 1970 to the end of year 9999: nothing outside it can be stored, and
    // bucket arithmetic on it cannot overflow.
    let from = params.int_in("from", 0, MAX_TIME_MS)?;
    let to = params.int_in("to", 0, MAX_TIME_MS)?;
    let range = params.parse_with(
        "range",
        || format!("one of {}", RANGE_NAMES.join(", ")),
        |v| {
            RANGES
                .iter()
                .find(|(name, _)| *name == v)
                .map(|(_, ms)| *ms)
        },
    )?;
    let (from, to) = match (from, to, range) {
        (Some(_), Some(_), Some(_)) => {
            return Err(AppError::BadRequest(
                "give at most two of `from`, `to` and `range`".into(),
            ));
        }
        (Some(from), Some(to), None) => (from, to),
        (Some(from), None, Some(range)) => (from, from.saturating_add(range).min(MAX_TIME_MS)),
        (Some(from), None, None) => (from, now_ms.max(from)),
        (None, to, range) => {
            let to = to.unwrap_or(now_ms);
            (
                to.saturating_sub(range.unwrap_or(DEFAULT_RANGE_MS)).max(0),
                to,
            )
        }
    };
    if from > to {
        return Err(AppError::BadRequest(format!(
            "`from` ({from}) is after `to` ({to})"
        )));
    }
    Ok((from, to))
}

/// `GET /api/devices/{id}/history?sensor=&range=|from=&to=&points=`.
pub(super) async fn history(
    State(state): State<AppState>,
    PathId(id): PathId,
    params: Params,
) -> Result<Json<Value>, AppError> {
    let sensor = params
        .parse_with(
            "sensor",
            || format!("one of {}", SENSORS.join(", ")),
            Parameter::parse,
        )?
        .unwrap_or(Parameter::Temperature);
    let points = params
        .int_in("points", 1, MAX_POINTS)?
        .unwrap_or(DEFAULT_POINTS);
    let now = crate::now_ms();
    let (from, to) = window(&params, now)?;
    let series = match state.live.history_store() {
        Some(history) => {
            let known = known_live(&state, &id);
            let device = id.clone();
            tokio::task::spawn_blocking(move || {
                check_known(&history, known, &device)?;
                history
                    .history(&device, sensor, from, to, points, now)
                    .map_err(history_failed)
            })
            .await
            .map_err(|_| AppError::Unavailable("the history query failed"))??
        }
        None => state.read_store().history(&id, sensor, from, to, points)?,
    };
    Ok(Json(json!({
        "device_id": id,
        "sensor": sensor.as_str(),
        "unit": sensor.unit(),
        "from": from,
        "to": to,
        "points": series,
    })))
}

/// Whether the live store has heard of device `id`.
pub(super) fn known_live(state: &AppState, id: &str) -> bool {
    state.read_store().device(id, crate::now_ms()).is_some()
}

/// Refuses a device that neither history nor the live store (`known_live`) has heard of.
/// Blocks (see [`HistoryStore`]).
pub(super) fn check_known(
    history: &HistoryStore,
    known_live: bool,
    id: &str,
) -> Result<(), AppError> {
    if known_live || history.knows(id).map_err(history_failed)? {
        Ok(())
    } else {
        Err(AppError::UnknownDevice(id.to_owned()))
    }
}

/// A history failure as the API answers it: a bad request, or 503 while the database fails.
pub(super) fn history_failed(e: HistoryError) -> AppError {
    match e {
        HistoryError::Store(e) => e.into(),
        HistoryError::Database(e) => {
            tracing::warn!(error = %e, "history query failed");
            AppError::Unavailable("the history database is unavailable")
        }
    }
}
