//! Answers from history: a parameter over any range as at most `points` buckets, and the raw
//! readings of a range for export. Segments are read on the caller's thread; the readings not
//! yet sealed come from memory.

use iiot_model::Parameter;

use super::catalog::Tier;
use super::rollup::{self, Bucket};
use super::row::{Row, decode, scale};
use super::writer::drop_already_on_disk;
use super::{History, segment};
use crate::store::{Acc, Buckets, Downsampler, HistoryPoint, RawSample, StoreError};

impl History {
    /// The tier that answers buckets of `width` ms starting at `from`: the coarsest whose
    /// buckets fit, and whose retention still covers `from` (else the next coarser one).
    fn tier_for(&self, width: i64, from: i64, now_ms: i64) -> Tier {
        let cfg = &self.shared().cfg;
        let fits = [Tier::Hour, Tier::Minute, Tier::Raw]
            .into_iter()
            .find(|t| t.width_ms() <= width)
            .unwrap_or(Tier::Raw);
        let order = [Tier::Raw, Tier::Minute, Tier::Hour];
        let start = order.iter().position(|t| *t == fits).unwrap_or(0);
        order[start..]
            .iter()
            .copied()
            .find(|&t| from >= now_ms.saturating_sub(cfg.retention_ms(t)))
            .unwrap_or(Tier::Hour)
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
            for row in self.rows(id, from, to) {
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

    /// The raw readings of device `id` with `from <= t <= to`, oldest first, each event time
    /// once.
    pub fn raw(&self, id: &str, from: i64, to: i64) -> Result<Vec<RawSample>, StoreError> {
        if from > to {
            return Err(StoreError::BadRange("from is after to"));
        }
        Ok(self.rows(id, from, to).iter().map(Row::sample).collect())
    }

    /// Raw rows of `id` in `[from, to]` from segments and memory, sorted, each time once.
    fn rows(&self, id: &str, from: i64, to: i64) -> Vec<Row> {
        let shared = self.shared();
        let segments = shared.catalog().overlapping(Tier::Raw, from, to);
        let mut rows = shared.pending().rows_of(id, from, to);
        for s in segments {
            match segment::read_raw(&s.path(&shared.root), id) {
                Ok(r) => rows.extend(r.into_iter().filter(|r| (from..=to).contains(&r.t))),
                // Deleted by retention since it was listed, or unreadable: what it held is gone.
                Err(e) => tracing::debug!(error = %e, "history: segment skipped"),
            }
        }
        rows.sort_by_key(|r| r.t);
        rows.dedup_by_key(|r| r.t);
        rows
    }

    /// Buckets of `tier` for `id` starting in `[from, to]`, merged, in time order. The readings
    /// not yet sealed are rolled up on the fly.
    fn buckets(&self, tier: Tier, id: &str, from: i64, to: i64) -> Vec<Bucket> {
        let shared = self.shared();
        let segments = shared.catalog().overlapping(tier, from, to);
        let (mut pending, on_disk) = {
            let p = shared.pending();
            let rows = p.rows_of(id, from, to.saturating_add(tier.width_ms()));
            (rows, p.on_disk(id))
        };
        pending.sort_by_key(|r| r.t);
        pending.dedup_by_key(|r| r.t);
        // Readings in memory that a segment holds already (sent again after a restart, or in a
        // seal that has just been written) are counted from the segment only.
        drop_already_on_disk(&shared.root, &shared.catalog(), id, on_disk, &mut pending);
        let mut out = rollup::roll(&pending, tier.width_ms());
        for s in segments {
            match segment::read_rollups(&s.path(&shared.root), Some(id)) {
                Ok(b) => out.extend(b.into_iter().map(|(_, b)| b)),
                Err(e) => tracing::debug!(error = %e, "history: segment skipped"),
            }
        }
        rollup::coalesce(&mut out);
        out.retain(|b| (from..=to).contains(&b.t));
        out
    }
}
