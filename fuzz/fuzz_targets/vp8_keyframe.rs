//! The VP8 keyframe header the SFU reads from every published keyframe (a tile's layer is
//! picked by the size it declares): any bytes give a size of at most 14 bits or none, never a
//! panic, and an interframe never has one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Some((w, h)) = huddle_media::vp8::keyframe_size(frame) {
        assert!(w < 1 << 14 && h < 1 << 14);
        assert_eq!(frame[0] & 1, 0, "only a keyframe declares a size");
    }
});
