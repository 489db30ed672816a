//! VP8's picture ids, continuous for a subscriber across simulcast layer switches.
//!
//! Each layer is its own VP8 encoder with its own PictureID and TL0PICIDX counters (RFC 7741
//! §4.2). A receiver orders frames and finds their references by those counters, so a switch
//! from one layer to another would look to it like a jump back or far ahead (Chromium drops a
//! frame whose picture id is older than one it decoded). Like the sequence numbers, the
//! counters are shifted at the start of each run to follow the last ones sent; within a run
//! they move as the publisher's do.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// PictureID is 15 bits on the wire (7 in the short form, whose values the mask keeps too).
const PICTURE_ID_MODULO: u16 = 1 << 15;

/// One forwarded VP8 stream's counters.
#[derive(Debug, Default)]
pub(crate) struct PictureIds {
    /// Added to the publisher's PictureID, modulo 2^15.
    picture_offset: u16,
    /// Added to the publisher's TL0PICIDX, modulo 2^8.
    tl0_offset: u8,
    /// The last PictureID and TL0PICIDX sent.
    last: Option<(u16, u8)>,
}

impl PictureIds {
    /// The patch that gives this packet its place in the subscriber's stream; `starts_run`
    /// when it is the first of a run (a switch, the subscriber's first). None when the packet
    /// carries no picture id (nothing to keep continuous) or the patch cannot be built.
    pub(crate) fn patch(&mut self, d: &Vp8Descriptor, starts_run: bool) -> Option<Vp8Patch> {
        let picture = d.picture_id()?;
        let tl0 = d.tl0_pic_idx().unwrap_or(0);
        if starts_run {
            let (next_picture, next_tl0) = match self.last {
                Some((p, t)) => ((p + 1) % PICTURE_ID_MODULO, t.wrapping_add(1)),
                None => (picture, tl0),
            };
            self.picture_offset = next_picture.wrapping_sub(picture) % PICTURE_ID_MODULO;
            self.tl0_offset = next_tl0.wrapping_sub(tl0);
        }
        let out_picture = picture.wrapping_add(self.picture_offset) % PICTURE_ID_MODULO;
        let out_tl0 = tl0.wrapping_add(self.tl0_offset);
        self.last = Some((out_picture, out_tl0));
        let build = |picture: u16| {
            let patch = d.patch().picture_id(picture);
            match d.tl0_pic_idx() {
                Some(_) => patch.tl0_pic_idx(out_tl0).build(),
                None => patch.build(),
            }
        };
        // A publisher of the 7-bit short form gets 7 bits: the offset is taken modulo 2^15,
        // a multiple of 2^7, so the low bits stay continuous too.
        build(out_picture)
            .or_else(|_| build(out_picture & 0x7f))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload descriptor with a 15-bit PictureID and TL0PICIDX, then a frame byte.
    fn payload(picture: u16, tl0: u8) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (picture >> 8) as u8,
            picture as u8,
            tl0,
            0x20,
            0x00,
        ]
    }

    fn next(p: &mut PictureIds, picture: u16, tl0: u8, starts_run: bool) -> (u16, u8) {
        let bytes = payload(picture, tl0);
        let d = Vp8Descriptor::parse(&bytes).unwrap();
        p.patch(&d, starts_run).expect("a patch");
        p.last.unwrap()
    }

    #[test]
    fn a_switch_continues_the_counters_and_a_run_follows_the_publisher() {
        let mut p = PictureIds::default();
        assert_eq!(next(&mut p, 100, 7, true), (100, 7));
        assert_eq!(next(&mut p, 101, 7, false), (101, 7));
        assert_eq!(next(&mut p, 102, 8, false), (102, 8));
        // Another layer, far away in both counters.
        assert_eq!(next(&mut p, 30_000, 200, true), (103, 9));
        assert_eq!(next(&mut p, 30_001, 200, false), (104, 9));
        // Across the publisher's wrap of the 15-bit counter.
        assert_eq!(next(&mut p, 32_767, 201, true), (105, 10));
        assert_eq!(next(&mut p, 0, 201, false), (106, 10));
    }
}
