//! The segments on disk, by tier: raw readings, one-minute and one-hour rollups.
//!
//! A segment's name says what it holds, so start-up lists directories and reads no file:
//! `{level}-{first seal:010}-{last seal:010}_{oldest event ms}_{newest event ms}.parquet`.
//! Every seal writes one segment per tier (level 0); rollup segments are merged into larger
//! ones (level 1, 2) as they accumulate. A merge writes its output before it deletes its
//! inputs, so after a crash in between the inputs are recognised (their seals are inside a
//! higher level's range) and deleted at start-up instead of being counted twice.

use std::io;
use std::path::{Path, PathBuf};

/// A kind of segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Raw readings.
    Raw,
    /// One-minute rollups.
    Minute,
    /// One-hour rollups.
    Hour,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

    /// Its directory under `DATA_DIR`, and its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }

    /// Width of its buckets, ms (1 for raw readings).
    pub fn width_ms(self) -> i64 {
        match self {
            Tier::Raw => 1,
            Tier::Minute => 60_000,
            Tier::Hour => 3_600_000,
        }
    }

    fn index(self) -> usize {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 1,
            Tier::Hour => 2,
        }
    }

    /// How many segments of `level` are merged into one of the next level; `None`: this
    /// level is not merged further (raw readings never are: they expire whole).
    fn fan_in(self, level: u8) -> Option<usize> {
        match (self, level) {
            // 12 seals (an hour at the default span) → one; one-minute rollups stop there:
            // a day of them for 10,000 devices would be 14 M rows to merge in memory.
            (Tier::Minute, 0) | (Tier::Hour, 0) => Some(12),
            // 24 of those (a day) → one.
            (Tier::Hour, 1) => Some(24),
            _ => None,
        }
    }
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub tier: Tier,
    pub level: u8,
    /// The seals it holds (inclusive).
    pub seals: (u64, u64),
    /// Oldest and newest event time in it, Unix ms.
    pub min_t: i64,
    pub max_t: i64,
    /// Size on disk.
    pub bytes: u64,
}

impl Segment {
    /// Its file name.
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{}-{:010}-{:010}_{}_{}.parquet",
            self.level, self.seals.0, self.seals.1, self.min_t, self.max_t
        )
    }

    /// Its path under `root`.
    pub(crate) fn path(&self, root: &Path) -> PathBuf {
        root.join(self.tier.name()).join(self.file_name())
    }

    fn parse(tier: Tier, name: &str, bytes: u64) -> Option<Segment> {
        let stem = name.strip_suffix(".parquet")?;
        let mut parts = stem.split('_');
        let (head, min_t, max_t) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut head = head.split('-');
        let level = head.next()?.parse().ok()?;
        let seals = (head.next()?.parse().ok()?, head.next()?.parse().ok()?);
        Some(Segment {
            tier,
            level,
            seals,
            min_t: min_t.parse().ok()?,
            max_t: max_t.parse().ok()?,
            bytes,
        })
    }

    pub(crate) fn overlaps(&self, from: i64, to: i64) -> bool {
        self.min_t <= to && self.max_t >= from
    }

    fn covers_seals_of(&self, other: &Segment) -> bool {
        self.level > other.level && self.seals.0 <= other.seals.0 && other.seals.1 <= self.seals.1
    }
}

/// The segments of every tier, oldest seal first.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    tiers: [Vec<Segment>; 3],
}

/// What [`Catalog::scan`] cleaned up.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    /// Unfinished files (`.tmp`) of a write the process did not live to finish.
    pub unfinished: usize,
    /// Inputs of a merge whose output was already in place.
    pub merged: usize,
    /// Files whose names are not segment names (left alone).
    pub unknown: Vec<PathBuf>,
}

impl Catalog {
    /// Lists the segments under `root`, creating the tier directories, deleting unfinished
    /// writes and the leftover inputs of merges.
    pub(crate) fn scan(root: &Path) -> io::Result<(Catalog, Cleanup)> {
        let mut catalog = Catalog::default();
        let mut cleanup = Cleanup::default();
        for tier in Tier::ALL {
            let dir = root.join(tier.name());
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    std::fs::remove_file(entry.path())?;
                    cleanup.unfinished += 1;
                    continue;
                }
                let bytes = entry.metadata()?.len();
                match Segment::parse(tier, &name, bytes) {
                    Some(s) => catalog.tiers[tier.index()].push(s),
                    None => cleanup.unknown.push(entry.path()),
                }
            }
            let list = &mut catalog.tiers[tier.index()];
            list.sort_by_key(|s| (s.seals.0, s.level));
            let covered: Vec<Segment> = list
                .iter()
                .filter(|s| list.iter().any(|o| o.covers_seals_of(s)))
                .cloned()
                .collect();
            for s in covered {
                std::fs::remove_file(s.path(root))?;
                list.retain(|o| *o != s);
                cleanup.merged += 1;
            }
        }
        Ok((catalog, cleanup))
    }

    /// Adds a segment that is now in place.
    pub(crate) fn add(&mut self, s: Segment) {
        let list = &mut self.tiers[s.tier.index()];
        let at = list.partition_point(|o| (o.seals.0, o.level) < (s.seals.0, s.level));
        list.insert(at, s);
    }

    /// Forgets a segment (deleted, or merged away).
    pub(crate) fn remove(&mut self, s: &Segment) {
        self.tiers[s.tier.index()].retain(|o| o != s);
    }

    /// The segments of `tier` holding event times in `[from, to]`.
    pub(crate) fn overlapping(&self, tier: Tier, from: i64, to: i64) -> Vec<Segment> {
        self.tiers[tier.index()]
            .iter()
            .filter(|s| s.overlaps(from, to))
            .cloned()
            .collect()
    }

    /// The segments of `tier` whose newest event is older than `cutoff`.
    pub(crate) fn expired(&self, tier: Tier, cutoff: i64) -> Vec<Segment> {
        self.tiers[tier.index()]
            .iter()
            .filter(|s| s.max_t < cutoff)
            .cloned()
            .collect()
    }

    /// The next merge to do in `tier`, if any: the oldest `fan_in` segments of the lowest level
    /// that has that many.
    pub(crate) fn next_merge(&self, tier: Tier) -> Option<Vec<Segment>> {
        (0..3u8).find_map(|level| {
            let fan_in = tier.fan_in(level)?;
            let of_level: Vec<Segment> = self.tiers[tier.index()]
                .iter()
                .filter(|s| s.level == level)
                .take(fan_in)
                .cloned()
                .collect();
            (of_level.len() == fan_in).then_some(of_level)
        })
    }

    /// Whether a raw segment of seal `seal` exists (the seal was completed).
    pub(crate) fn has_raw_seal(&self, seal: u64) -> bool {
        self.tiers[0]
            .iter()
            .any(|s| s.seals.0 <= seal && seal <= s.seals.1)
    }

    /// The segments of other tiers that a seal of `seal` left behind before its raw segment
    /// (a seal interrupted by a crash, to be done again).
    pub(crate) fn partial_seal(&self, seal: u64) -> Vec<Segment> {
        self.tiers[1..]
            .iter()
            .flatten()
            .filter(|s| s.level == 0 && s.seals == (seal, seal))
            .cloned()
            .collect()
    }

    /// The highest seal number in use.
    pub(crate) fn last_seal(&self) -> u64 {
        self.tiers
            .iter()
            .flatten()
            .map(|s| s.seals.1)
            .max()
            .unwrap_or(0)
    }

    /// The newest event time of any segment of `tier`.
    pub(crate) fn newest(&self, tier: Tier) -> Option<i64> {
        self.tiers[tier.index()].iter().map(|s| s.max_t).max()
    }

    /// Bytes, segment count and oldest event time of `tier`.
    pub(crate) fn usage(&self, tier: Tier) -> (u64, usize, Option<i64>) {
        let list = &self.tiers[tier.index()];
        (
            list.iter().map(|s| s.bytes).sum(),
            list.len(),
            list.iter().map(|s| s.min_t).min(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(tier: Tier, level: u8, seals: (u64, u64), min_t: i64, max_t: i64) -> Segment {
        Segment {
            tier,
            level,
            seals,
            min_t,
            max_t,
            bytes: 0,
        }
    }

    #[test]
    fn names_round_trip() {
        let s = seg(Tier::Minute, 1, (13, 24), -5, 1_700_000_000_000);
        assert_eq!(
            s.file_name(),
            "1-0000000013-0000000024_-5_1700000000000.parquet"
        );
        assert_eq!(Segment::parse(Tier::Minute, &s.file_name(), 0), Some(s));
        assert_eq!(Segment::parse(Tier::Raw, "notes.txt", 0), None);
        assert_eq!(Segment::parse(Tier::Raw, "0-1-2_3_4_5.parquet", 0), None);
    }

    #[test]
    fn scan_removes_unfinished_files_and_leftover_merge_inputs() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("1h")).expect("dir");
        for s in [
            seg(Tier::Hour, 0, (1, 1), 0, 10),
            seg(Tier::Hour, 0, (2, 2), 5, 20),
            seg(Tier::Hour, 1, (1, 2), 0, 20),
            seg(Tier::Hour, 0, (3, 3), 20, 30),
        ] {
            std::fs::write(s.path(root), b"x").expect("write");
        }
        std::fs::write(root.join("1h").join("x.parquet.tmp"), b"x").expect("write");
        let (catalog, cleanup) = Catalog::scan(root).expect("scan");
        assert_eq!((cleanup.unfinished, cleanup.merged), (1, 2));
        let levels: Vec<_> = catalog.tiers[2]
            .iter()
            .map(|s| (s.level, s.seals))
            .collect();
        assert_eq!(levels, vec![(1, (1, 2)), (0, (3, 3))]);
        assert_eq!(catalog.last_seal(), 3);
        assert_eq!(catalog.overlapping(Tier::Hour, 21, 25).len(), 1);
        assert_eq!(catalog.expired(Tier::Hour, 21).len(), 1);
    }

    #[test]
    fn merges_take_the_oldest_of_a_level_once_there_are_enough() {
        let mut c = Catalog::default();
        for i in 1..=11 {
            c.add(seg(Tier::Minute, 0, (i, i), 0, 1));
        }
        assert_eq!(c.next_merge(Tier::Minute), None);
        c.add(seg(Tier::Minute, 0, (12, 12), 0, 1));
        let m = c.next_merge(Tier::Minute).expect("a merge");
        assert_eq!((m.len(), m[0].seals, m[11].seals), (12, (1, 1), (12, 12)));
        assert_eq!(c.next_merge(Tier::Raw), None);
    }
}
