//! Deliberately malformed messages: each one breaks exactly one rule of SPEC §4 validation, so
//! the processor's dead-letter path and its per-reason counters are exercised.

use iiot_model::Reading;
use rand::Rng;
use rand_pcg::Pcg64Mcg;

/// How a message is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Malformation {
    /// Cut off in the middle (after the device id): not JSON.
    Truncated,
    /// A `NaN` literal as the temperature value.
    NanValue,
    /// Temperature 999 °C, outside the plausible range.
    OutOfRange,
    /// `"seq":"42"` instead of `"seq":42`.
    SeqAsString,
    /// Temperature in `°F`.
    WrongUnit,
    /// Event time a day ahead of the device clock (beyond any sane skew allowance, even for
    /// replays of past spans).
    FutureTimestamp,
}

impl Malformation {
    pub(super) const ALL: [Malformation; 6] = [
        Malformation::Truncated,
        Malformation::NanValue,
        Malformation::OutOfRange,
        Malformation::SeqAsString,
        Malformation::WrongUnit,
        Malformation::FutureTimestamp,
    ];
}

/// How far ahead a future-timestamp message is, in ms.
const FUTURE_MS: i64 = 24 * 60 * 60 * 1000;
/// A temperature no device produces, serialized and then replaced by `NaN`.
const NAN_SENTINEL: f64 = 12345.678;

/// Writes `reading`, broken in a randomly chosen way, into `buf` (which is empty).
pub(super) fn write(reading: &mut Reading<'_>, rng: &mut Pcg64Mcg, buf: &mut Vec<u8>) {
    let kind = Malformation::ALL[rng.random_range(0..Malformation::ALL.len())];
    write_kind(kind, reading, rng, buf);
}

/// Writes `reading` broken in the way `kind` says into `buf` (which is empty).
pub(super) fn write_kind(
    kind: Malformation,
    reading: &mut Reading<'_>,
    rng: &mut Pcg64Mcg,
    buf: &mut Vec<u8>,
) {
    let temperature = &mut reading.sensors.temperature;
    match kind {
        Malformation::Truncated | Malformation::SeqAsString => {}
        Malformation::NanValue => temperature.value = NAN_SENTINEL,
        Malformation::OutOfRange => temperature.value = 999.0,
        Malformation::WrongUnit => {
            temperature.value = ((temperature.value * 1.8 + 32.0) * 100.0).round() / 100.0;
            temperature.unit = "°F".into();
        }
        Malformation::FutureTimestamp => {
            reading.timestamp = reading.timestamp.saturating_add(FUTURE_MS);
        }
    }
    if serde_json::to_writer(&mut *buf, &*reading).is_err() {
        // Cannot happen for a Vec; an empty payload is still a malformed message.
        buf.clear();
        return;
    }
    match kind {
        Malformation::Truncated => {
            // Between 40 % and 90 % of the message: past the device id, short of the end.
            let len = buf.len();
            let (lo, hi) = (len * 2 / 5, len * 9 / 10);
            let cut = if lo < hi {
                rng.random_range(lo..hi)
            } else {
                len / 2
            };
            buf.truncate(cut);
        }
        Malformation::NanValue => {
            replace_first(buf, NAN_SENTINEL.to_string().as_bytes(), b"NaN");
        }
        Malformation::SeqAsString => {
            let key = b"\"seq\":";
            if let Some(start) = find(buf, key).map(|i| i + key.len()) {
                let digits = buf[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                buf.insert(start + digits, b'"');
                buf.insert(start, b'"');
            }
        }
        Malformation::OutOfRange | Malformation::WrongUnit | Malformation::FutureTimestamp => {}
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replace_first(buf: &mut Vec<u8>, needle: &[u8], with: &[u8]) {
    if let Some(i) = find(buf, needle) {
        buf.splice(i..i + needle.len(), with.iter().copied());
    }
}
