//! The H.264 SPS the SFU reads from every published keyframe's first packet (a tile's layer is
//! picked by the size it declares): any bytes give a size of 1..=16384 each way or none, never
//! a panic, and only a NAL unit of type 7 has one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|nal: &[u8]| {
    if let Some((w, h)) = huddle_media::h264::sps_nal_size(nal) {
        assert!((1..=16384).contains(&w) && (1..=16384).contains(&h));
        assert_eq!(nal[0] & 0x1f, 7, "only an SPS declares a size");
    }
});
