//! The H.264 SPS the SFU reads from every published keyframe (a tile's layer is picked by the
//! size it declares): any bytes give a size of 1..=16384 each way or none, never a panic, and
//! only an access unit with an SPS behind a start code has one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Some((w, h)) = huddle_media::h264::keyframe_size(frame) {
        assert!((1..=16384).contains(&w) && (1..=16384).contains(&h));
        let sps = frame
            .windows(4)
            .any(|b| b[..3] == [0, 0, 1] && b[3] & 0x1f == 7);
        assert!(sps, "only an SPS declares a size");
    }
});
