//! A reading as the processor judges it: decode + validation (`iiot_model::decode_text`), the
//! key check, per-device `seq` tracking, aggregates and the alert engine, then offline
//! detection. The input is several messages separated by 0xFF (a byte no UTF-8 text holds);
//! the first byte picks the clocks: even = a fixed receiver clock, odd = the next 16 bytes
//! as the judged and received clocks (a broker timestamp may be anything).
//!
//! Must never panic, and every message is either accepted or rejected with a reason.
#![no_main]

use std::sync::Arc;

use iiot::alerts::{RuleSet, Thresholds};
use iiot::processor::{Clocks, Judged, Processor, ProcessorConfig, ProcessorStats};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (clocks, rest) = if mode % 2 == 1 && rest.len() >= 16 {
        let judged = i64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let received = i64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        (
            Clocks {
                judged_at: judged,
                received_at: received,
            },
            &rest[16..],
        )
    } else {
        (Clocks::at(NOW), rest)
    };
    let rules = Arc::new(RuleSet::defaults(&Thresholds::default()));
    let config = ProcessorConfig {
        max_devices: 4,
        ..ProcessorConfig::default()
    };
    let mut processor = Processor::new(config, rules, Arc::new(ProcessorStats::default()));
    let mut alerts = Vec::new();
    for (i, message) in rest.split(|&b| b == 0xFF).enumerate() {
        // Every other message carries a key: the device id it claims to be about.
        let key: &[u8] = if i % 2 == 1 { b"device_001" } else { b"" };
        let at = Clocks {
            judged_at: clocks.judged_at.saturating_add(i as i64 * 1000),
            received_at: clocks.received_at.saturating_add(i as i64 * 1000),
        };
        if let Judged::Rejected(invalid) = processor.judge(Some(0), key, message, at, &mut alerts) {
            assert!(!invalid.detail.is_empty(), "a rejection says why");
        }
        processor.tick(at.received_at.saturating_add(60_000), &mut alerts);
    }
});
