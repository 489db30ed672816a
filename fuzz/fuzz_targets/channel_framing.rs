//! TURN over TCP framing: a byte stream cut into frames never reads out of bounds, and every
//! frame it yields is within the buffer.
#![no_main]

use huddle_turn_proto::channel_data::{frame_len, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(len)) = frame_len(rest) {
        assert!(len >= 4 && len <= rest.len());
        let _ = parse(&rest[..len]);
        rest = &rest[len..];
    }
    let _ = parse(data);
});
