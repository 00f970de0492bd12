//! Human durations on the command line and in config: `100ms`, `5s`, `1m`, `1h30m`.

use std::time::Duration;

/// Parses `100ms`, `5s`, `1m`, `2h`, combinations such as `1m30s`, and plain `0`.
/// A bare number other than 0 is rejected: `5` could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{t:?} is not a duration like 100ms, 5s or 1m ({e})"))
}

/// Formats a duration the way [`parse_duration`] reads it (`5s`, `100ms`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    // Whole days as days: humantime would write 90d as "2months29days2h52m48s" (its months
    // and years are 30.44 and 365.25 days).
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs.is_multiple_of(86_400) {
        return format!("{}d", secs / 86_400);
    }
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn whole_days_format_as_days_and_read_back() {
        for text in ["1d", "7d", "90d", "730d"] {
            let d = parse_duration(text).expect("a duration");
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        let two_years = parse_duration("2y").expect("years");
        assert_eq!(parse_duration(&format_duration(two_years)), Ok(two_years));
    }

    #[test]
    fn rejects_ambiguous_or_broken_input() {
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["5s", "100ms", "1m", "1h"] {
            let d = parse_duration(s).expect("parses");
            assert_eq!(format_duration(d), s);
        }
    }
}
