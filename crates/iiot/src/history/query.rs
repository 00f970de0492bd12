//! Answers from history: a parameter over any range as at most `points` buckets, and the raw
//! readings of a range for export. Segments are read on the caller's thread; the readings not
//! yet sealed come from memory.

use iiot_model::Parameter;

use super::catalog::Tier;
use super::rollup::{self, Bucket};
use super::row::{Row, decode, scale};
use super::segment::{self, Columns};
use super::writer::drop_found_in;
use super::{History, Shared};
use crate::store::{Acc, Buckets, Downsampler, HistoryPoint, RawSample, StoreError};

impl History {
    /// The tier that answers buckets of `width` ms starting at `from`: the coarsest whose
    /// buckets fit, and whose retention still covers `from` (else the next coarser one).
    fn tier_for(&self, width: i64, from: i64, now_ms: i64) -> Tier {
        let cfg = &self.shared().cfg;
        super::store::tier_for(|t| cfg.retention_ms(t), width, from, now_ms)
    }

    /// `parameter` of device `id` over `[from, to]` (event time) as at most `points` buckets
    /// (`1..=`[`crate::store::MAX_POINTS`]); empty buckets are left out. Raw readings answer
    /// buckets narrower than a minute, one-minute rollups those narrower than an hour, hourly
    /// rollups the rest — or a coarser tier where retention has dropped the finer one.
    pub fn history(
        &self,
        id: &str,
        parameter: Parameter,
        from: i64,
        to: i64,
        points: usize,
        now_ms: i64,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let probe = Buckets::new(from, to, points, 1)?;
        let tier = self.tier_for(probe.width, from, now_ms);
        let buckets = Buckets::new(from, to, points, tier.width_ms())?;
        let p = Parameter::ALL
            .iter()
            .position(|q| *q == parameter)
            .unwrap_or(0);
        let mut d = Downsampler::new(buckets);
        if tier == Tier::Raw {
            for row in self.rows(id, from, to, Columns::One(p)) {
                let v = decode(p, i64::from(row.code(p)));
                d.push(
                    row.t,
                    Acc {
                        min: v,
                        max: v,
                        sum: v,
                        count: 1,
                    },
                );
            }
        } else {
            for b in self.buckets(tier, id, buckets.origin, to) {
                d.push(
                    b.t,
                    Acc {
                        min: decode(p, i64::from(b.min[p])),
                        max: decode(p, i64::from(b.max[p])),
                        sum: b.sum[p] as f64 / scale(p),
                        count: u64::from(b.count),
                    },
                );
            }
        }
        Ok(d.finish())
    }

    /// Event times outside which no raw reading can be held: the oldest raw segment (or raw
    /// retention, whichever is older) to the newest (or a day ahead of `now_ms`, the furthest
    /// an event time is accepted). Exports walk only this span.
    pub fn raw_bounds(&self, now_ms: i64) -> (i64, i64) {
        let shared = self.shared();
        let (_, _, oldest) = shared.catalog().usage(Tier::Raw);
        let newest = shared.catalog().newest(Tier::Raw);
        let retention = now_ms.saturating_sub(shared.cfg.retention_ms(Tier::Raw));
        (
            oldest.map_or(retention, |o| o.min(retention)),
            newest
                .map_or(i64::MIN, |n| n)
                .max(now_ms.saturating_add(86_400_000)),
        )
    }

    /// The raw readings of device `id` with `from <= t <= to`, oldest first, each event time
    /// once.
    pub fn raw(&self, id: &str, from: i64, to: i64) -> Result<Vec<RawSample>, StoreError> {
        if from > to {
            return Err(StoreError::BadRange("from is after to"));
        }
        Ok(self
            .rows(id, from, to, Columns::All)
            .iter()
            .map(Row::sample)
            .collect())
    }

    /// Raw rows of `id` in `[from, to]` from segments (`columns` decoded) and memory, sorted,
    /// each time once.
    fn rows(&self, id: &str, from: i64, to: i64, columns: Columns) -> Vec<Row> {
        let shared = self.shared();
        // Memory first, then the segments: a seal adds its segments before it lets go of the
        // rows, so a reading is always in one or the other.
        let mut rows = shared.pending().rows_of(id, from, to);
        rows.extend(
            read_segments(shared, Tier::Raw, from, to, |path| {
                segment::read_raw(path, id, columns)
            })
            .into_iter()
            .filter(|r| (from..=to).contains(&r.t)),
        );
        rows.sort_by_key(|r| r.t);
        rows.dedup_by_key(|r| r.t);
        rows
    }

    /// Buckets of `tier` for `id` starting in `[from, to]`, merged, in time order. The readings
    /// not yet sealed are rolled up on the fly.
    fn buckets(&self, tier: Tier, id: &str, from: i64, to: i64) -> Vec<Bucket> {
        let shared = self.shared();
        let to_ext = to.saturating_add(tier.width_ms());
        let mut out = Vec::new();
        for attempt in 1..=LIST_ATTEMPTS {
            // Memory, then the segments, then memory's seal number again: when no seal started
            // meanwhile, the rows since the last seal are in no segment, and the rows of the
            // seal in progress are in the listed segments exactly when its raw segment is.
            let (current, sealing, seal, on_disk) = {
                let p = shared.pending();
                let (current, sealing) = p.rows_split(id, from, to_ext);
                (current, sealing, p.seal, p.on_disk(id))
            };
            let mut pending = current;
            let (raw, listed) = {
                let c = shared.catalog();
                if let Some((n, rows)) = sealing
                    && !c.has_raw_seal(n)
                {
                    pending.extend(rows);
                }
                pending.sort_by_key(|r| r.t);
                pending.dedup_by_key(|r| r.t);
                let first = pending.first().map_or(i64::MAX, |r| r.t);
                let raw = if first <= on_disk {
                    c.overlapping(Tier::Raw, first, on_disk)
                } else {
                    Vec::new()
                };
                (raw, c.overlapping(tier, from, to))
            };
            if shared.pending().seal != seal && attempt < LIST_ATTEMPTS {
                continue;
            }
            // Readings in memory that a segment holds already (sent again after a restart)
            // are counted from the segment only.
            drop_found_in(&shared.root, &raw, id, on_disk, &mut pending);
            out = rollup::roll(&pending, tier.width_ms());
            let mut relist = false;
            for s in listed {
                match segment::read_rollups(&s.path(&shared.root), Some(id)) {
                    Ok(b) => out.extend(b.into_iter().map(|(_, b)| b)),
                    // Replaced by a merge since it was listed: list again.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound && attempt < LIST_ATTEMPTS =>
                    {
                        relist = true;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "history: unreadable segment skipped"),
                }
            }
            if !relist {
                break;
            }
        }
        rollup::coalesce(&mut out);
        out.retain(|b| (from..=to).contains(&b.t));
        out
    }
}

/// How often a query lists segments again when one it listed has been deleted meanwhile.
const LIST_ATTEMPTS: usize = 3;

/// What `read` finds in every segment of `tier` overlapping `[from, to]`. A segment deleted
/// since it was listed (replaced by a merge, or expired) makes the list be taken again, so
/// that a merge's output answers for its inputs; a segment still unreadable is skipped.
fn read_segments<T>(
    shared: &Shared,
    tier: Tier,
    from: i64,
    to: i64,
    read: impl Fn(&std::path::Path) -> std::io::Result<Vec<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for attempt in 1..=LIST_ATTEMPTS {
        out.clear();
        let mut relist = false;
        for s in shared.catalog().overlapping(tier, from, to) {
            match read(&s.path(&shared.root)) {
                Ok(found) => out.extend(found),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < LIST_ATTEMPTS => {
                    relist = true;
                    break;
                }
                // Expired since it was listed, or unreadable: what it held is gone.
                Err(e) => tracing::warn!(error = %e, "history: unreadable segment skipped"),
            }
        }
        if !relist {
            break;
        }
    }
    out
}
