//! `/api/devices/{id}/export`: raw samples streamed as CSV or as a JSON array.
//!
//! The body is produced while the client reads it, [`CHUNK`] samples at a time (from history on
//! disk: an hour of event time at a time, read on a blocking thread): each chunk is
//! copied out under the store's read lock, the lock is released, then the chunk is formatted
//! and sent. Memory per export is one chunk, whatever the range, and the store's writer waits
//! at most one copy.

use std::convert::Infallible;
use std::fmt::Write as _;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::super::error::AppError;
use super::super::params::{Params, PathId};
use super::super::state::AppState;
use super::devices::{check_known, history_failed, known_live, window};
use crate::history::HistoryStore;
use crate::store::RawSample;

/// Samples copied per lock acquisition.
pub(crate) const CHUNK: usize = 1_000;

/// Event time read from history per piece of the body: an hour (720 readings at 5 s).
const DISK_WINDOW_MS: i64 = 3_600_000;

/// The CSV header; the columns of every row, JSON keys included.
pub(crate) const CSV_HEADER: &str =
    "timestamp,temperature,humidity,pressure,current,battery,signal_strength,switch_on\n";

/// Body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Json,
}

/// `GET /api/devices/{id}/export?format=csv|json&range=|from=&to=`.
pub(super) async fn export(
    State(state): State<AppState>,
    PathId(id): PathId,
    params: Params,
) -> Result<Response, AppError> {
    let format = params
        .parse_with(
            "format",
            || "one of csv, json".into(),
            |v| match v {
                "csv" => Some(Format::Csv),
                "json" => Some(Format::Json),
                _ => None,
            },
        )?
        .unwrap_or(Format::Csv);
    let (from, to) = window(&params, crate::now_ms())?;
    // Unknown device or bad range: answer with the error before any of the body is sent.
    let (from, to) = match state.live.history_store() {
        Some(history) => {
            let known = known_live(&state, &id);
            let device = id.clone();
            // Only the span history can hold is walked (an hour at a time): `to` in year
            // 9999 must not mean millions of empty hours.
            let (lo, hi) = tokio::task::spawn_blocking(move || {
                check_known(&history, known, &device)?;
                history
                    .raw_bounds(&device, crate::now_ms())
                    .map_err(history_failed)
            })
            .await
            .map_err(|_| AppError::Unavailable("the history query failed"))??;
            (from.max(lo), to.min(hi))
        }
        None => {
            state.read_store().raw(&id, from, to).map(|_| ())?;
            (from, to)
        }
    };
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    // Device ids are `[A-Za-z0-9_.:-]` (checked when readings are decoded): safe in quotes.
    let disposition = format!("attachment; filename=\"{id}.{ext}\"");
    let chunks = Chunks {
        state,
        id,
        next_from: from,
        to,
        format,
        phase: Phase::Start,
        rows: 0,
    };
    // Each piece is made on a blocking thread: from history it is read from disk. Should that
    // thread fail, the body ends with an error (the client sees a broken transfer, not a
    // complete-looking file).
    let pieces = futures::stream::unfold(Some(chunks), |chunks| async move {
        let mut chunks = chunks?;
        match tokio::task::spawn_blocking(move || (chunks.next(), chunks)).await {
            Ok((piece, chunks)) => Some((piece?.map_err(|never| match never {}), Some(chunks))),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let body = Body::from_stream(pieces);
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Rows,
    End,
    Done,
}

/// The body as an iterator of pieces; each `next` takes the store lock at most once, briefly.
struct Chunks {
    state: AppState,
    id: String,
    next_from: i64,
    to: i64,
    format: Format,
    phase: Phase,
    rows: u64,
}

impl Chunks {
    /// From history: the samples of the next [`DISK_WINDOW_MS`] of event time that holds any.
    fn fetch_from(&mut self, history: &HistoryStore) -> Vec<RawSample> {
        while self.next_from <= self.to {
            let end = self
                .next_from
                .saturating_add(DISK_WINDOW_MS - 1)
                .min(self.to);
            let samples = history
                .raw(&self.id, self.next_from, end)
                .unwrap_or_default();
            if end == self.to {
                self.phase = Phase::End;
            } else {
                self.next_from = end + 1;
            }
            if !samples.is_empty() || self.phase == Phase::End {
                return samples;
            }
        }
        self.phase = Phase::End;
        Vec::new()
    }

    /// Copies the next up to [`CHUNK`] samples; fewer means the range is exhausted.
    fn fetch(&mut self) -> Vec<RawSample> {
        if let Some(history) = self.state.live.history_store() {
            return self.fetch_from(&history);
        }
        let samples: Vec<RawSample> = {
            let store = self.state.read_store();
            match store.raw(&self.id, self.next_from, self.to) {
                Ok(it) => it.take(CHUNK).collect(),
                Err(_) => Vec::new(),
            }
        };
        // Event times of one device are unique in the store, so the next chunk starts just
        // after the last sample copied.
        match samples.last() {
            Some(last) if samples.len() == CHUNK && last.t < self.to => {
                self.next_from = last.t + 1;
            }
            _ => self.phase = Phase::End,
        }
        samples
    }

    fn format(&mut self, samples: &[RawSample]) -> String {
        let mut out = String::with_capacity(samples.len() * 72);
        for s in samples {
            let [temperature, humidity, pressure, current, battery, signal] = s.values;
            // Writing to a `String` cannot fail.
            let _ = match self.format {
                Format::Csv => writeln!(
                    out,
                    "{},{temperature},{humidity},{pressure},{current},{battery},{signal},{}",
                    s.t, s.switch_on
                ),
                Format::Json => write!(
                    out,
                    "{}{{\"timestamp\":{},\"temperature\":{temperature},\"humidity\":{humidity},\
                     \"pressure\":{pressure},\"current\":{current},\"battery\":{battery},\
                     \"signal_strength\":{signal},\"switch_on\":{}}}",
                    if self.rows == 0 { "\n" } else { ",\n" },
                    s.t,
                    s.switch_on
                ),
            };
            self.rows += 1;
        }
        out
    }
}

impl Iterator for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.phase {
                Phase::Start => {
                    self.phase = Phase::Rows;
                    let head = match self.format {
                        Format::Csv => CSV_HEADER,
                        Format::Json => "[",
                    };
                    return Some(Ok(Bytes::from_static(head.as_bytes())));
                }
                Phase::Rows => {
                    let samples = self.fetch();
                    if !samples.is_empty() {
                        return Some(Ok(Bytes::from(self.format(&samples))));
                    }
                }
                Phase::End => {
                    self.phase = Phase::Done;
                    if self.format == Format::Json {
                        return Some(Ok(Bytes::from_static(b"\n]\n")));
                    }
                }
                Phase::Done => return None,
            }
        }
    }
}
