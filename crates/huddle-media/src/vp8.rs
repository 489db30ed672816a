//! The one thing the SFU reads inside a VP8 frame: a keyframe's picture size (RFC 6386 §9.1),
//! so that a tile gets the smallest simulcast layer that fills it.

/// The width and height a VP8 keyframe declares; None for an interframe or a frame too short
/// or without the keyframe start code.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    // A 3-byte frame tag whose lowest bit is 0 on a keyframe, then the start code 9d 01 2a,
    // then 14-bit width and height, little endian (the top two bits of each are a scale).
    let [tag, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, ..] = *frame else {
        return None;
    };
    if tag & 1 != 0 {
        return None;
    }
    let dim = |lo: u8, hi: u8| u32::from(u16::from_le_bytes([lo, hi]) & 0x3fff);
    Some((dim(w0, w1), dim(h0, h1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A keyframe's first bytes for a `width` × `height` picture.
    pub(crate) fn header(width: u16, height: u16) -> Vec<u8> {
        let mut f = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&width.to_le_bytes());
        f.extend_from_slice(&height.to_le_bytes());
        f
    }

    #[test]
    fn reads_a_keyframe_and_refuses_the_rest() {
        assert_eq!(keyframe_size(&header(1280, 720)), Some((1280, 720)));
        let mut inter = header(1280, 720);
        inter[0] |= 1;
        assert_eq!(keyframe_size(&inter), None);
        assert_eq!(keyframe_size(&header(640, 360)[..9]), None);
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(frame in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = keyframe_size(&frame);
        }

        #[test]
        fn sizes_round_trip(w in 0u16..0x4000, h in 0u16..0x4000, scale in 0u16..4) {
            let f = header(w | scale << 14, h | scale << 14);
            prop_assert_eq!(keyframe_size(&f), Some((u32::from(w), u32::from(h))));
        }
    }
}
