//! This process's own resource use, read from Linux `/proc` for `/metrics`
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, …) — the figures the
//! Prometheus client libraries of other languages export under the same names.
//!
//! Reads files only; owns no state. On systems without `/proc` every figure is `None` and the
//! metrics are left out rather than reported as zero.

use std::path::Path;

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat`. The kernel reports them in
/// `USER_HZ`, which is 100 on every Linux architecture we build for (the Prometheus Go client's
/// `procfs` makes the same assumption rather than calling `sysconf`).
const USER_HZ: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, bytes (`VmRSS`).
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, bytes (`VmSize`).
    pub virtual_memory_bytes: Option<u64>,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors (sockets included).
    pub open_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
}

impl ProcessStats {
    /// Reads the figures of the calling process.
    pub fn current() -> ProcessStats {
        Self::read(Path::new("/proc/self"))
    }

    /// Reads the figures of the process whose `/proc` directory is `dir` (tests pass a copy).
    pub fn read(dir: &Path) -> ProcessStats {
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let open_fds = std::fs::read_dir(dir.join("fd"))
            .ok()
            .map(|entries| entries.count() as u64);
        ProcessStats {
            resident_memory_bytes: status_kib(&status, "VmRSS:").map(|k| k * 1024),
            virtual_memory_bytes: status_kib(&status, "VmSize:").map(|k| k * 1024),
            cpu_seconds: cpu_seconds(&stat),
            open_fds,
            threads: status_kib(&status, "Threads:"),
        }
    }
}

/// The number after `field` in `/proc/<pid>/status` (`VmRSS:   1234 kB` → 1234).
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `utime + stime` of `/proc/<pid>/stat`, in seconds. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat_even_with_odd_command_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("status"),
            "Name:\tiiot\nVmSize:\t  200000 kB\nVmRSS:\t    5120 kB\nThreads:\t7\n",
        )
        .expect("write");
        // Command "a) b" with a space and a parenthesis; utime 250 ticks, stime 50 ticks.
        std::fs::write(
            dir.path().join("stat"),
            "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 123 0 0\n",
        )
        .expect("write");
        std::fs::create_dir(dir.path().join("fd")).expect("mkdir");
        for n in 0..3 {
            std::fs::write(dir.path().join("fd").join(n.to_string()), "").expect("write");
        }
        let s = ProcessStats::read(dir.path());
        assert_eq!(s.resident_memory_bytes, Some(5120 * 1024));
        assert_eq!(s.virtual_memory_bytes, Some(200_000 * 1024));
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.open_fds, Some(3));
        assert_eq!(s.threads, Some(7));
    }

    #[test]
    fn missing_files_give_no_figures() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ProcessStats::read(dir.path()), ProcessStats::default());
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let s = ProcessStats::current();
        if Path::new("/proc/self/stat").exists() {
            assert!(s.resident_memory_bytes.expect("rss") > 1024 * 1024);
            assert!(s.cpu_seconds.expect("cpu") >= 0.0);
            assert!(s.open_fds.expect("fds") >= 3);
        }
    }
}
