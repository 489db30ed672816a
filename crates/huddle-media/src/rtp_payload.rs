//! What the SFU reads in one RTP payload of a video codec, now that it forwards packets as they
//! come instead of depacketized frames: whether the packet starts a keyframe, and the picture
//! size a keyframe declares. A new subscriber, or one switched to another simulcast layer, may
//! only start at a keyframe (whatever comes before refers to pictures it never got); a tile gets
//! the smallest layer that fills it, picked by the size.
//!
//! One packet is read, without its RTP header and without the packets around it: VP8's payload
//! descriptor (RFC 7741) and frame tag, VP9's payload descriptor and scalability structure
//! (RFC 9628), H.264's NAL unit headers (RFC 6184) and SPS. Nothing is allocated, except to
//! unescape an H.264 SPS; no input panics.

use str0m::format::Codec;

use crate::{h264, vp8};

/// The largest width or height taken for real; anything above is garbage.
const MAX_SIZE: u32 = 16384;

/// What the SFU reads in one RTP payload of a video codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inspected {
    /// The packet can start a stream for a new subscriber / a simulcast layer switch: it is the
    /// first packet of a keyframe (see [`inspect`] per codec).
    pub keyframe: bool,
    /// The picture size the packet declares (a keyframe's), if it carries one.
    pub size: Option<(u32, u32)>,
}

/// Reads one RTP payload (no RTP header) of `codec`. A payload that is truncated or malformed
/// where it is read, or of a codec other than VP8, VP9 or H.264, is [`Inspected::default`].
///
/// - VP8: a keyframe is the first packet of a frame (S=1, partition 0) whose frame tag says
///   keyframe; the size is its frame header's.
/// - VP9: a keyframe is the start of a frame (B=1) not predicted from earlier pictures (P=0), of
///   the base spatial layer; the size is the largest spatial layer's, from the scalability
///   structure when it has sizes (Y=1).
/// - H.264: a keyframe holds an SPS or the start of an IDR slice, alone, in a STAP-A or in the
///   first FU-A; the size is the first SPS's that declares one (a fragmented SPS gives none).
///
/// A size is within 1..=16384 each way, or None.
pub fn inspect(codec: Codec, payload: &[u8]) -> Inspected {
    let inspected = match codec {
        Codec::Vp8 => read_vp8(payload),
        Codec::Vp9 => read_vp9(payload),
        Codec::H264 => read_h264(payload),
        _ => None,
    };
    inspected
        .map(|i| Inspected {
            size: i.size.filter(plausible),
            ..i
        })
        .unwrap_or_default()
}

/// A size of 1..=MAX_SIZE each way. VP8's 14-bit fields may say 0, and VP9's 16-bit ones up to
/// 65535: no picture of ours.
fn plausible(&(w, h): &(u32, u32)) -> bool {
    (1..=MAX_SIZE).contains(&w) && (1..=MAX_SIZE).contains(&h)
}

/// RFC 7741 §4.2: the payload descriptor, then (first packet of a frame) the VP8 frame.
fn read_vp8(payload: &[u8]) -> Option<Inspected> {
    let mut r = Reader(payload);
    // X|R|N|S|R|PID(3)
    let first = r.byte()?;
    if first & 0x80 != 0 {
        // I|L|T|K|RSV(4)
        let extension = r.byte()?;
        if extension & 0x80 != 0 && r.byte()? & 0x80 != 0 {
            r.byte()?; // M: a 15-bit PictureID
        }
        if extension & 0x40 != 0 {
            r.byte()?; // TL0PICIDX
        }
        if extension & 0x30 != 0 {
            r.byte()?; // TID|Y|KEYIDX, for T or K
        }
    }
    // Only the first packet of a frame (S=1, partition 0) begins with the frame tag, whose
    // lowest bit (P) is 0 on a keyframe.
    let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
    let frame = r.rest();
    let keyframe = starts_frame && frame.first().is_some_and(|tag| tag & 1 == 0);
    let size = vp8::keyframe_size(frame).filter(|_| keyframe);
    Some(Inspected { keyframe, size })
}

/// RFC 9628 §4.2: the payload descriptor, up to the end of its scalability structure.
fn read_vp9(payload: &[u8]) -> Option<Inspected> {
    let mut r = Reader(payload);
    // I|P|L|F|B|E|V|Z
    let flags = r.byte()?;
    let flag = |mask: u8| flags & mask != 0;
    let (inter, layered, flexible) = (flag(0x40), flag(0x20), flag(0x10));
    if flag(0x80) && r.byte()? & 0x80 != 0 {
        r.byte()?; // M: a 15-bit PictureID
    }
    let mut spatial_id = 0;
    if layered {
        spatial_id = r.byte()? >> 1 & 0x07; // TID(3)|U|SID(3)|D
        if !flexible {
            r.byte()?; // TL0PICIDX
        }
    }
    if flexible && inter {
        skip_reference_indices(&mut r)?;
    }
    let size = if flag(0x02) {
        largest_layer_size(&mut r)?
    } else {
        None
    };
    let keyframe = flag(0x08) && !inter && spatial_id == 0;
    Some(Inspected { keyframe, size })
}

/// Up to three P_DIFF bytes, each but the last with N (its lowest bit) set.
fn skip_reference_indices(r: &mut Reader) -> Option<()> {
    for _ in 0..3 {
        if r.byte()? & 1 == 0 {
            return Some(());
        }
    }
    None // a fourth reference
}

/// Reads the scalability structure to its end: None if it is truncated, else the last (largest)
/// spatial layer's width and height if it has sizes.
fn largest_layer_size(r: &mut Reader) -> Option<Option<(u32, u32)>> {
    // N_S(3)|Y|G|-(3): N_S + 1 spatial layers.
    let head = r.byte()?;
    let layers = usize::from(head >> 5) + 1;
    let sizes = if head & 0x10 != 0 {
        Some(r.take(4 * layers)?) // WIDTH, HEIGHT: 16 bits each, big endian
    } else {
        None
    };
    if head & 0x08 != 0 {
        for _ in 0..r.byte()? {
            // N_G groups of T(3)|U|R(2)|-(2), then R P_DIFF bytes.
            let group = r.byte()?;
            r.take(usize::from(group >> 2 & 0x03))?;
        }
    }
    let largest = sizes.and_then(<[u8]>::last_chunk).map(|&[w0, w1, h0, h1]| {
        let dim = |hi, lo| u32::from(u16::from_be_bytes([hi, lo]));
        (dim(w0, w1), dim(h0, h1))
    });
    Some(largest)
}

// NAL unit types (ITU-T H.264 Table 7-1) and RTP payload structures (RFC 6184 §5.2).
const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// RFC 6184 §5.2: a single NAL unit, a STAP-A or an FU-A (the ones of packetization mode 1).
fn read_h264(payload: &[u8]) -> Option<Inspected> {
    let (&header, rest) = payload.split_first()?;
    match header & 0x1f {
        1..=23 => Some(read_nal_unit(header, payload)),
        STAP_A => read_stap_a(rest),
        FU_A => read_fu_a(rest),
        _ => None, // 0, STAP-B, MTAP, FU-B, reserved
    }
}

/// One whole NAL unit, `header` its first byte.
fn read_nal_unit(header: u8, nal: &[u8]) -> Inspected {
    Inspected {
        keyframe: matches!(header & 0x1f, IDR | SPS),
        size: h264::sps_nal_size(nal),
    }
}

/// After the STAP-A header: NAL units, each behind its 16-bit size. As a receiver (libwebrtc)
/// would, refuses the whole packet if one overruns it, or has no header byte.
fn read_stap_a(units: &[u8]) -> Option<Inspected> {
    let mut r = Reader(units);
    let mut inspected = Inspected::default();
    while !r.rest().is_empty() {
        let size = r.u16()?;
        let nal = r.take(usize::from(size))?;
        let (&header, _) = nal.split_first()?;
        let unit = read_nal_unit(header, nal);
        inspected.keyframe |= unit.keyframe;
        inspected.size = inspected.size.or(unit.size);
    }
    Some(inspected)
}

/// After the FU indicator: the FU header, S|E|R|Type, then a fragment. Only the first fragment
/// (S) of an IDR slice (or of an SPS, which is never this long in practice) starts a keyframe.
fn read_fu_a(fragment: &[u8]) -> Option<Inspected> {
    let &fu_header = fragment.first()?;
    let keyframe = fu_header & 0x80 != 0 && matches!(fu_header & 0x1f, IDR | SPS);
    Some(Inspected {
        keyframe,
        size: None,
    })
}

/// A payload read from the front, every read bounds-checked: None once it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// 16 bits, big endian.
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    /// What is not read yet.
    fn rest(&self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keyframe(size: Option<(u32, u32)>) -> Inspected {
        Inspected {
            keyframe: true,
            size,
        }
    }

    /// VP8's optional descriptor fields (X=1): PictureID (7 bits below 128, else 15), and
    /// whether TL0PICIDX and TID|Y|KEYIDX are there.
    #[derive(Clone, Copy, Debug)]
    struct Vp8Extension {
        picture_id: Option<u16>,
        tl0picidx: bool,
        tid_keyidx: bool,
    }

    const PICTURE_ID_15: Vp8Extension = Vp8Extension {
        picture_id: Some(0x1234),
        tl0picidx: true,
        tid_keyidx: true,
    };

    /// A VP8 payload: the descriptor (S, PID, extension), then `frame`.
    fn vp8_packet(start: bool, pid: u8, extension: Option<Vp8Extension>, frame: &[u8]) -> Vec<u8> {
        let mut p = vec![u8::from(start) << 4 | pid];
        if let Some(x) = extension {
            p[0] |= 0x80;
            let i = u8::from(x.picture_id.is_some()) << 7;
            p.push(i | u8::from(x.tl0picidx) << 6 | u8::from(x.tid_keyidx) << 5);
            match x.picture_id {
                Some(id @ 0..0x80) => p.push(id as u8),
                Some(id) => p.extend_from_slice(&(id | 0x8000).to_be_bytes()),
                None => {}
            }
            p.extend(Some(0x17).filter(|_| x.tl0picidx));
            p.extend(Some(0x5b).filter(|_| x.tid_keyidx));
        }
        p.extend_from_slice(frame);
        p
    }

    /// A VP8 keyframe's first bytes for a `width` × `height` picture (as vp8.rs's tests).
    fn vp8_keyframe(width: u16, height: u16) -> Vec<u8> {
        let mut f = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&width.to_le_bytes());
        f.extend_from_slice(&height.to_le_bytes());
        f
    }

    #[test]
    fn vp8_first_packet_of_a_keyframe() {
        let kf = vp8_keyframe(1280, 720);
        let packet = vp8_packet(true, 0, Some(PICTURE_ID_15), &kf);
        assert_eq!(packet[..5], [0x90, 0xe0, 0x92, 0x34, 0x17]);
        assert_eq!(inspect(Codec::Vp8, &packet), keyframe(Some((1280, 720))));
        let no_x = vp8_packet(true, 0, None, &kf);
        assert_eq!(inspect(Codec::Vp8, &no_x), keyframe(Some((1280, 720))));
        // The frame tag says keyframe, even if the frame header is cut short: no size then.
        let short = vp8_packet(true, 0, Some(PICTURE_ID_15), &kf[..3]);
        assert_eq!(inspect(Codec::Vp8, &short), keyframe(None));
        // A 14-bit size of 0 is no picture.
        let empty = vp8_packet(true, 0, None, &vp8_keyframe(0, 720));
        assert_eq!(inspect(Codec::Vp8, &empty), keyframe(None));
    }

    #[test]
    fn vp8_other_packets_start_nothing() {
        let kf = vp8_keyframe(1280, 720);
        let none = Inspected::default();
        let later = vp8_packet(false, 0, Some(PICTURE_ID_15), &kf);
        assert_eq!(inspect(Codec::Vp8, &later), none, "S=0");
        let partition = vp8_packet(true, 1, Some(PICTURE_ID_15), &kf);
        assert_eq!(inspect(Codec::Vp8, &partition), none, "PID 1");
        let mut inter = kf.clone();
        inter[0] |= 1;
        let inter = vp8_packet(true, 0, Some(PICTURE_ID_15), &inter);
        assert_eq!(inspect(Codec::Vp8, &inter), none, "P=1");
        let bare = vp8_packet(true, 0, Some(PICTURE_ID_15), &[]);
        assert_eq!(inspect(Codec::Vp8, &bare), none, "no frame tag");
        for truncated in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x80]] {
            assert_eq!(inspect(Codec::Vp8, truncated), none, "{truncated:02x?}");
        }
        assert_eq!(inspect(Codec::Opus, &vp8_packet(true, 0, None, &kf)), none);
    }

    /// A VP9 payload descriptor (RFC 9628 §4.2) with what follows it.
    #[derive(Clone, Debug, Default)]
    struct Vp9 {
        picture_id: Option<u16>,
        /// TID and SID (L).
        layer: Option<(u8, u8)>,
        /// F, and P with its P_DIFFs (1..=3 where both are set).
        flexible: bool,
        inter: Option<Vec<u8>>,
        begin: bool,
        end: bool,
        ss: Option<Ss>,
    }

    /// A scalability structure.
    #[derive(Clone, Debug)]
    struct Ss {
        /// One per spatial layer (1..=8), written if `with_sizes` (Y).
        sizes: Vec<(u16, u16)>,
        with_sizes: bool,
        /// G: the P_DIFFs of each group (0..=3).
        groups: Option<Vec<Vec<u8>>>,
    }

    impl Vp9 {
        fn descriptor(&self) -> Vec<u8> {
            let bit = |b: bool, shift: u8| u8::from(b) << shift;
            let mut d = vec![
                bit(self.picture_id.is_some(), 7)
                    | bit(self.inter.is_some(), 6)
                    | bit(self.layer.is_some(), 5)
                    | bit(self.flexible, 4)
                    | bit(self.begin, 3)
                    | bit(self.end, 2)
                    | bit(self.ss.is_some(), 1),
            ];
            match self.picture_id {
                Some(id @ 0..0x80) => d.push(id as u8),
                Some(id) => d.extend_from_slice(&(id | 0x8000).to_be_bytes()),
                None => {}
            }
            if let Some((tid, sid)) = self.layer {
                d.push(tid << 5 | sid << 1);
                if !self.flexible {
                    d.push(0x2a); // TL0PICIDX
                }
            }
            if let (true, Some(diffs)) = (self.flexible, &self.inter) {
                for (i, diff) in diffs.iter().enumerate() {
                    d.push(diff << 1 | u8::from(i + 1 < diffs.len()));
                }
            }
            if let Some(ss) = &self.ss {
                let layers = ss.sizes.len() as u8 - 1;
                let groups = ss.groups.as_ref();
                d.push(layers << 5 | bit(ss.with_sizes, 4) | bit(groups.is_some(), 3));
                for &(w, h) in ss.sizes.iter().filter(|_| ss.with_sizes) {
                    d.extend_from_slice(&w.to_be_bytes());
                    d.extend_from_slice(&h.to_be_bytes());
                }
                if let Some(groups) = groups {
                    d.push(groups.len() as u8);
                    for (i, diffs) in groups.iter().enumerate() {
                        d.push((i as u8 % 8) << 5 | 0x10 | (diffs.len() as u8) << 2);
                        d.extend_from_slice(diffs);
                    }
                }
            }
            d
        }

        /// What `inspect` should read in it.
        fn expected(&self) -> Inspected {
            let sid = self.layer.map_or(0, |(_, sid)| sid);
            let size = self.ss.as_ref().filter(|ss| ss.with_sizes).and_then(|ss| {
                let &(w, h) = ss.sizes.last()?;
                let ok = |v: u16| (1..=16384).contains(&v);
                (ok(w) && ok(h)).then_some((w.into(), h.into()))
            });
            Inspected {
                keyframe: self.begin && self.inter.is_none() && sid == 0,
                size,
            }
        }
    }

    /// The first packet of a keyframe of three spatial layers, in non-flexible mode, as
    /// libwebrtc sends it.
    fn vp9_keyframe() -> Vp9 {
        Vp9 {
            picture_id: Some(0x1234),
            layer: Some((0, 0)),
            begin: true,
            ss: Some(Ss {
                sizes: vec![(320, 180), (640, 360), (1280, 720)],
                with_sizes: true,
                groups: Some(vec![vec![], vec![1], vec![1, 2]]),
            }),
            ..Vp9::default()
        }
    }

    #[test]
    fn vp9_start_of_a_keyframe_declares_the_largest_layer() {
        let kf = vp9_keyframe();
        let packet = [&kf.descriptor()[..], &[0x82, 0x49, 0x83][..]].concat();
        assert_eq!(packet[..5], [0xaa, 0x92, 0x34, 0x00, 0x2a]);
        assert_eq!(inspect(Codec::Vp9, &packet), keyframe(Some((1280, 720))));
        // Without L, or without sizes in the structure, or without one.
        let bare = Vp9 { layer: None, ..kf };
        assert_eq!(
            inspect(Codec::Vp9, &bare.descriptor()),
            keyframe(Some((1280, 720)))
        );
        let mut sizeless = bare.clone();
        sizeless.ss.as_mut().unwrap().with_sizes = false;
        assert_eq!(inspect(Codec::Vp9, &sizeless.descriptor()), keyframe(None));
        let no_ss = Vp9 { ss: None, ..bare };
        assert_eq!(inspect(Codec::Vp9, &no_ss.descriptor()), keyframe(None));
    }

    #[test]
    fn vp9_other_packets_start_nothing() {
        let read = |vp9: Vp9| inspect(Codec::Vp9, &vp9.descriptor());
        let size = Some((1280, 720));
        let inter = Vp9 {
            inter: Some(vec![1]),
            ..vp9_keyframe()
        };
        assert!(!read(inter).keyframe, "P=1");
        let inter_flexible = Vp9 {
            flexible: true,
            inter: Some(vec![1, 2, 3]),
            ..vp9_keyframe()
        };
        let want = Inspected {
            keyframe: false,
            size,
        };
        assert_eq!(read(inter_flexible), want, "P=1 with three references");
        let later = Vp9 {
            begin: false,
            end: true,
            ..vp9_keyframe()
        };
        assert!(!read(later).keyframe, "B=0");
        let upper = Vp9 {
            layer: Some((0, 1)),
            ..vp9_keyframe()
        };
        assert!(!read(upper).keyframe, "SID 1");
    }

    #[test]
    fn vp9_refuses_a_bad_descriptor_and_odd_sizes() {
        let none = Inspected::default();
        let d = vp9_keyframe().descriptor();
        for len in 0..d.len() {
            assert_eq!(inspect(Codec::Vp9, &d[..len]), none, "{len} bytes");
        }
        // A fourth reference index (N set on the third).
        let four = [0x58, 0x03, 0x03, 0x03, 0x02];
        assert_eq!(inspect(Codec::Vp9, &four), none);
        let odd = |w, h| {
            let mut vp9 = vp9_keyframe();
            vp9.ss.as_mut().unwrap().sizes[2] = (w, h);
            inspect(Codec::Vp9, &vp9.descriptor())
        };
        assert_eq!(odd(0, 720), keyframe(None));
        assert_eq!(odd(16385, 720), keyframe(None));
        assert_eq!(odd(16384, 16384), keyframe(Some((16384, 16384))));
    }

    /// openh264's SPS for 1280×720 (h264.rs's tests), and its PPS, without start codes.
    const SPS_720P: [u8; 14] = [
        0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x68, 0x05, 0x00, 0x5b, 0xa0, 0x1e, 0x11, 0x08, 0xd4,
    ];
    const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

    /// A STAP-A (NRI 3) of `units`.
    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for unit in units {
            p.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            p.extend_from_slice(unit);
        }
        p
    }

    #[test]
    fn h264_sps_and_idr_start_a_keyframe() {
        let idr: &[u8] = &[0x65, 0xb8, 0x00, 0x04];
        let with_sps = stap_a(&[&SPS_720P, &PPS]);
        assert_eq!(inspect(Codec::H264, &with_sps), keyframe(Some((1280, 720))));
        let with_idr = stap_a(&[&PPS, idr]);
        assert_eq!(inspect(Codec::H264, &with_idr), keyframe(None));
        assert_eq!(inspect(Codec::H264, &SPS_720P), keyframe(Some((1280, 720))));
        assert_eq!(inspect(Codec::H264, idr), keyframe(None));
        // FU-A (indicator NRI 3), its header S|E|R|Type.
        assert_eq!(inspect(Codec::H264, &[0x7c, 0x85, 0xb8]), keyframe(None));
    }

    #[test]
    fn h264_other_packets_start_nothing() {
        let none = Inspected::default();
        let slice: &[u8] = &[0x41, 0x9a, 0x02];
        assert_eq!(inspect(Codec::H264, slice), none, "a non-IDR slice");
        assert_eq!(inspect(Codec::H264, &stap_a(&[slice, &PPS])), none);
        assert_eq!(
            inspect(Codec::H264, &[0x7c, 0x05, 0xb8]),
            none,
            "FU-A middle"
        );
        assert_eq!(inspect(Codec::H264, &[0x7c, 0x45, 0xb8]), none, "FU-A end");
        assert_eq!(
            inspect(Codec::H264, &[0x7c, 0x81, 0xb8]),
            none,
            "FU-A non-IDR"
        );
        // A STAP-A that overruns, has a byte too many, or holds an empty unit, is refused.
        let sps = stap_a(&[&SPS_720P, &PPS]);
        assert_eq!(inspect(Codec::H264, &sps[..sps.len() - 1]), none);
        assert_eq!(inspect(Codec::H264, &[&sps[..], &[0]].concat()), none);
        assert_eq!(inspect(Codec::H264, &stap_a(&[&SPS_720P, &[]])), none);
        // STAP-B, MTAP16, FU-B, type 0: not of packetization mode 1.
        for header in [0x79, 0x7a, 0x7d, 0x60] {
            assert_eq!(inspect(Codec::H264, &[header, 0, 4, 0x67, 0, 0, 0]), none);
        }
        assert_eq!(inspect(Codec::H264, &[]), none);
    }

    fn any_vp9() -> impl Strategy<Value = Vp9> {
        let sizes = proptest::collection::vec(any::<(u16, u16)>(), 1..=8);
        let diffs = || proptest::collection::vec(1u8..0x80, 1..=3);
        let groups = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=3), 0..8);
        let ss = (sizes, any::<bool>(), proptest::option::of(groups)).prop_map(
            |(sizes, with_sizes, groups)| Ss {
                sizes,
                with_sizes,
                groups,
            },
        );
        (
            (
                proptest::option::of(0u16..0x8000),
                proptest::option::of((0u8..8, 0u8..8)),
            ),
            (any::<bool>(), proptest::option::of(diffs())),
            (any::<bool>(), any::<bool>(), proptest::option::of(ss)),
        )
            .prop_map(
                |((picture_id, layer), (flexible, inter), (begin, end, ss))| Vp9 {
                    picture_id,
                    layer,
                    flexible,
                    inter,
                    begin,
                    end,
                    ss,
                },
            )
    }

    fn any_vp8_extension() -> impl Strategy<Value = Option<Vp8Extension>> {
        let ext = (
            proptest::option::of(0u16..0x8000),
            any::<bool>(),
            any::<bool>(),
        );
        proptest::option::of(
            ext.prop_map(|(picture_id, tl0picidx, tid_keyidx)| Vp8Extension {
                picture_id,
                tl0picidx,
                tid_keyidx,
            }),
        )
    }

    fn any_codec() -> impl Strategy<Value = Codec> {
        proptest::sample::select(vec![
            Codec::Vp8,
            Codec::Vp9,
            Codec::H264,
            Codec::Opus,
            Codec::Av1,
        ])
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(
            codec in any_codec(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let inspected = inspect(codec, &payload);
            if let Some((w, h)) = inspected.size {
                prop_assert!((1..=16384).contains(&w) && (1..=16384).contains(&h));
            }
            if !matches!(codec, Codec::Vp8 | Codec::Vp9 | Codec::H264) {
                prop_assert_eq!(inspected, Inspected::default());
            }
        }

        #[test]
        fn vp8_descriptors_round_trip(
            start in any::<bool>(),
            pid in 0u8..8,
            extension in any_vp8_extension(),
            (w, h, inter) in (0u16..0x4000, 0u16..0x4000, any::<bool>()),
        ) {
            let mut frame = vp8_keyframe(w, h);
            frame[0] |= u8::from(inter);
            let packet = vp8_packet(start, pid, extension, &frame);
            let keyframe = start && pid == 0 && !inter;
            let size = (keyframe && w > 0 && h > 0).then_some((w.into(), h.into()));
            prop_assert_eq!(inspect(Codec::Vp8, &packet), Inspected { keyframe, size });
        }

        #[test]
        fn vp9_descriptors_round_trip(vp9 in any_vp9(), frame in proptest::collection::vec(any::<u8>(), 0..8)) {
            let d = vp9.descriptor();
            prop_assert_eq!(inspect(Codec::Vp9, &[&d[..], &frame].concat()), vp9.expected());
            for len in 0..d.len() {
                prop_assert_eq!(inspect(Codec::Vp9, &d[..len]), Inspected::default());
            }
        }

        #[test]
        fn h264_stap_a_round_trips(
            units in proptest::collection::vec((1u8..=23, proptest::collection::vec(any::<u8>(), 0..8)), 0..6),
            sps_at in proptest::option::of(0usize..6),
        ) {
            // Units of any type but SPS (random bytes may read as one), the real SPS maybe.
            let mut units: Vec<Vec<u8>> = units
                .into_iter()
                .filter(|&(t, _)| t != SPS)
                .map(|(t, bytes)| [&[0x60 | t][..], &bytes].concat())
                .collect();
            if let Some(at) = sps_at {
                units.insert(at.min(units.len()), SPS_720P.to_vec());
            }
            let packet = stap_a(&units.iter().map(Vec::as_slice).collect::<Vec<_>>());
            let keyframe = units.iter().any(|u| matches!(u[0] & 0x1f, IDR | SPS));
            let size = sps_at.map(|_| (1280, 720));
            prop_assert_eq!(inspect(Codec::H264, &packet), Inspected { keyframe, size });
        }
    }
}
