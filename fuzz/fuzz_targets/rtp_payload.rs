//! The RTP payloads the SFU reads as it forwards them (a subscriber or a layer switch starts at
//! a keyframe, a tile's layer is picked by the size a keyframe declares): any bytes give a size
//! of 1..=16384 each way or none, never a panic, and only a keyframe declares a size.
//!
//! Selector byte: `% 3` picks VP8, VP9 or H.264; the rest is the payload.
#![no_main]

use huddle_media::Codec;
use huddle_media::rtp_payload::inspect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let codec = [Codec::Vp8, Codec::Vp9, Codec::H264][usize::from(selector % 3)];
    let inspected = inspect(codec, payload);
    if let Some((w, h)) = inspected.size {
        assert!((1..=16384).contains(&w) && (1..=16384).contains(&h));
        if codec == Codec::Vp8 {
            assert!(inspected.keyframe, "only a VP8 keyframe declares a size");
        }
    }
});
