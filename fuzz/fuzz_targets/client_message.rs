//! A WebSocket client text frame through the hub's parser (`iiot::hub::check_client_message`,
//! the same `protocol::parse` every connection runs). Must never panic; a refused frame gets
//! a non-empty message for its `error` reply (sent JSON-quoted, so any text is safe).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The hub sees text frames only: a binary frame is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = iiot::hub::check_client_message(text) {
        assert!(!message.is_empty(), "an error reply says why");
    }
});
