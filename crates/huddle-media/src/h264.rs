//! The one thing the SFU reads inside an H.264 frame: a keyframe's picture size, from its
//! sequence parameter set (ITU-T H.264 §7.3.2.1.1), so that a tile gets the smallest simulcast
//! layer that fills it. The SPS comes as the NAL unit an RTP packet carries
//! ([`crate::rtp_payload`]).

/// The largest width or height taken for real; anything above is garbage.
const MAX_SIZE: u64 = 16384;

/// The displayed width and height an SPS declares, from one NAL unit as RTP carries it: header
/// byte included, no start code. None for another type of NAL unit, or an SPS that is
/// malformed or out of range.
pub fn sps_nal_size(nal: &[u8]) -> Option<(u32, u32)> {
    let (&header, payload) = nal.split_first()?;
    if header & 0x1f != 7 {
        return None;
    }
    sps_size(&mut Bits::new(&unescape(payload)))
}

/// The RBSP of a NAL unit's payload: 00 00 03 → 00 00.
fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    rbsp
}

/// The SPS fields up to the frame cropping, read to the displayed size.
fn sps_size(b: &mut Bits) -> Option<(u32, u32)> {
    let profile_idc = b.u(8)?;
    let _constraint_flags_and_level = b.u(16)?;
    b.ue_max(31)?; // seq_parameter_set_id
    let mut chroma_array_type = 1; // 4:2:0 unless the profile's SPS says otherwise
    if has_chroma_format(profile_idc) {
        let chroma_format_idc = b.ue_max(3)?;
        chroma_array_type = chroma_format_idc;
        if chroma_format_idc == 3 && b.flag()? {
            chroma_array_type = 0; // separate_colour_plane_flag: three monochrome planes
        }
        b.ue_max(6)?; // bit_depth_luma_minus8
        b.ue_max(6)?; // bit_depth_chroma_minus8
        b.flag()?; // qpprime_y_zero_transform_bypass_flag
        if b.flag()? {
            // seq_scaling_matrix_present_flag: six 4×4 lists, then two 8×8 (six for 4:4:4).
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.flag()? {
                    skip_scaling_list(b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue_max(12)?; // log2_max_frame_num_minus4
    match b.ue_max(2)? {
        0 => {
            b.ue_max(12)?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.flag()?; // delta_pic_order_always_zero_flag
            b.se()?; // offset_for_non_ref_pic
            b.se()?; // offset_for_top_to_bottom_field
            for _ in 0..b.ue_max(255)? {
                b.se()?; // offset_for_ref_frame[i]
            }
        }
        _ => {}
    }
    b.ue_max(16)?; // max_num_ref_frames
    b.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(b.ue()?) + 1;
    let height_map_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = b.flag()?;
    if !frame_mbs_only {
        b.flag()?; // mb_adaptive_frame_field_flag
    }
    b.flag()?; // direct_8x8_inference_flag
    // Without frame_mbs_only (fields, or MBAFF frames) a map unit is two macroblock rows.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let width = width_mbs * 16;
    let height = height_map_units * 16 * field_factor;
    if width > MAX_SIZE || height > MAX_SIZE {
        return None;
    }
    let (mut crop_x, mut crop_y) = (0, 0);
    if b.flag()? {
        // frame_cropping_flag: offsets in chroma samples (SubWidthC, SubHeightC).
        let (unit_x, unit_y) = match chroma_array_type {
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor), // 4:4:4, or monochrome / separate planes
        };
        let (left, right) = (u64::from(b.ue()?), u64::from(b.ue()?));
        let (top, bottom) = (u64::from(b.ue()?), u64::from(b.ue()?));
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    // Cropped to nothing (or less) is no picture.
    let width = width.checked_sub(crop_x).filter(|&w| w > 0)?;
    let height = height.checked_sub(crop_y).filter(|&h| h > 0)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// The profiles (High and up, SVC, MVC) whose SPS carries chroma format, bit depths and scaling
/// matrices; the others are 8-bit 4:2:0 without.
fn has_chroma_format(profile_idc: u32) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Reads past one scaling_list() (§7.3.2.1.1.1): delta_scale values until the list ends or a
/// next scale of 0 repeats the last one to the end.
fn skip_scaling_list(b: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8, 8);
    for _ in 0..size {
        if next != 0 {
            let delta = b.se()?;
            if !(-128..=127).contains(&delta) {
                return None;
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// An RBSP read bit by bit, most significant first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    /// u(n), n ≤ 32.
    fn u(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8)?;
            v = v << 1 | u64::from(byte >> (7 - self.pos % 8) & 1);
            self.pos += 1;
        }
        u32::try_from(v).ok()
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.u(1)? == 1)
    }

    /// ue(v), Exp-Golomb: at most 32 leading zeros, and a value that fits in 32 bits.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 32 {
                return None;
            }
        }
        let v = (1u64 << zeros) - 1 + u64::from(self.u(zeros)?);
        u32::try_from(v).ok()
    }

    /// ue(v) of a field whose range is 0..=max.
    fn ue_max(&mut self, max: u32) -> Option<u32> {
        self.ue().filter(|&v| v <= max)
    }

    /// se(v): 1, 2, 3, 4 … map to 1, −1, 2, −2 …
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The tests build Annex B access units, as an encoder writes them.

    /// The displayed width and height the first SPS of an Annex B access unit declares (cropping
    /// applied); None for a frame without one or with an SPS that is malformed or out of range.
    fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
        sps_nal_size(first_sps(frame)?)
    }

    /// The first NAL unit of type 7 (SPS), header byte included. A NAL unit runs from its start code
    /// (00 00 01, or 00 00 00 01) to the next: emulation prevention keeps 00 00 01 out of its bytes.
    fn first_sps(mut stream: &[u8]) -> Option<&[u8]> {
        let start_code = |b: &[u8]| b.windows(3).position(|w| w == [0, 0, 1]);
        loop {
            stream = &stream[start_code(stream)? + 3..];
            let nal = &stream[..start_code(stream).unwrap_or(stream.len())];
            if nal.first().is_some_and(|header| header & 0x1f == 7) {
                return Some(nal);
            }
            stream = &stream[nal.len()..];
        }
    }

    /// Bits written most significant first, as an encoder writes an RBSP.
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl Writer {
        fn u(&mut self, n: u32, v: u64) {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let last = self.bytes.last_mut().unwrap();
                *last |= ((v >> i & 1) as u8) << (7 - self.bits % 8);
                self.bits += 1;
            }
        }

        fn flag(&mut self, f: bool) {
            self.u(1, u64::from(f));
        }

        fn ue(&mut self, v: u64) {
            let len = 64 - (v + 1).leading_zeros();
            self.u(len - 1, 0);
            self.u(len, v + 1);
        }

        fn se(&mut self, v: i64) {
            self.ue(if v > 0 {
                2 * v.unsigned_abs() - 1
            } else {
                2 * v.unsigned_abs()
            });
        }

        /// rbsp_trailing_bits, then the NAL unit: start code, header, payload with emulation
        /// prevention (an 03 wherever 00 00 would be followed by 00–03).
        fn nal(mut self, header: u8) -> Vec<u8> {
            self.flag(true);
            while !self.bits.is_multiple_of(8) {
                self.flag(false);
            }
            let mut nal = vec![0, 0, 0, 1, header];
            let mut zeros = 0;
            for b in self.bytes {
                if zeros >= 2 && b <= 3 {
                    nal.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                nal.push(b);
            }
            nal
        }
    }

    /// The SPS fields the size depends on, and some it must read past.
    #[derive(Clone, Debug)]
    struct Sps {
        profile_idc: u8,
        chroma_format_idc: u64,
        separate_colour_planes: bool,
        /// Per list of the scaling matrix (missing ones absent): its first delta_scale values,
        /// continued by zeros (each repeats the last scale) as far as the list goes.
        scaling: Option<Vec<Option<Vec<i64>>>>,
        /// 0 with an lsb length, 1 with these offsets for reference frames (the first also
        /// for non-reference pictures), or 2.
        poc_type: u64,
        poc_offsets: Vec<i64>,
        width_mbs: u64,
        height_map_units: u64,
        frame_mbs_only: bool,
        /// Left, right, top, bottom.
        crop: Option<[u64; 4]>,
    }

    impl Sps {
        fn baseline(width_mbs: u64, height_mbs: u64) -> Self {
            Sps {
                profile_idc: 66,
                chroma_format_idc: 1,
                separate_colour_planes: false,
                scaling: None,
                poc_type: 2,
                poc_offsets: Vec::new(),
                width_mbs,
                height_map_units: height_mbs,
                frame_mbs_only: true,
                crop: None,
            }
        }

        fn nal(&self) -> Vec<u8> {
            let mut w = Writer::default();
            w.u(8, self.profile_idc.into());
            w.u(8, 0); // constraint flags
            w.u(8, 40); // level 4
            w.ue(3); // sps_id
            if has_chroma_format(self.profile_idc.into()) {
                w.ue(self.chroma_format_idc);
                if self.chroma_format_idc == 3 {
                    w.flag(self.separate_colour_planes);
                }
                w.ue(0);
                w.ue(2); // 10-bit chroma
                w.flag(false);
                w.flag(self.scaling.is_some());
                let lists = if self.chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists * usize::from(self.scaling.is_some()) {
                    let list = self
                        .scaling
                        .as_ref()
                        .and_then(|l| l.get(i).cloned().flatten());
                    w.flag(list.is_some());
                    let Some(list) = list else { continue };
                    let mut deltas = list.into_iter().chain(std::iter::repeat(0));
                    let (mut last, mut next) = (8, 8);
                    for _ in 0..if i < 6 { 16 } else { 64 } {
                        if next != 0 {
                            let d = deltas.next().unwrap();
                            w.se(d);
                            next = (last + d + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
            w.ue(0); // log2_max_frame_num_minus4
            w.ue(self.poc_type);
            match self.poc_type {
                0 => w.ue(2),
                1 => {
                    w.flag(false);
                    w.se(self.poc_offsets.first().copied().unwrap_or(0));
                    w.se(-3);
                    w.ue(self.poc_offsets.len() as u64);
                    for &o in &self.poc_offsets {
                        w.se(o);
                    }
                }
                _ => {}
            }
            w.ue(1); // max_num_ref_frames
            w.flag(false);
            w.ue(self.width_mbs - 1);
            w.ue(self.height_map_units - 1);
            w.flag(self.frame_mbs_only);
            if !self.frame_mbs_only {
                w.flag(true);
            }
            w.flag(true); // direct_8x8_inference_flag
            w.flag(self.crop.is_some());
            for &c in self.crop.iter().flatten() {
                w.ue(c);
            }
            w.flag(false); // vui_parameters_present_flag
            w.nal(0x67)
        }
    }

    /// openh264's PPS and the start of its IDR slice, as follow the SPS in a keyframe.
    const PPS_IDR: [u8; 14] = [0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65, 0xb8];

    /// openh264's SPS (Baseline, level 3.1, with VUI) for 1280×720, as the transcoder sends it.
    const OPENH264_720P: [u8; 18] = [
        0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x68, 0x05, 0x00, 0x5b, 0xa0, 0x1e, 0x11, 0x08,
        0xd4,
    ];

    /// And for 320×180 (level 1.1): 12 macroblock rows, the last 12 lines cropped.
    const OPENH264_180P: [u8; 18] = [
        0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x0b, 0x8c, 0x68, 0x14, 0x19, 0x79, 0xe0, 0x1e, 0x11, 0x08,
        0xd4,
    ];

    fn keyframe(sps: &[u8]) -> Vec<u8> {
        [sps, &PPS_IDR[..]].concat()
    }

    #[test]
    fn reads_baseline_sizes_and_cropping() {
        let sps = Sps::baseline(80, 45);
        assert_eq!(keyframe_size(&keyframe(&sps.nal())), Some((1280, 720)));
        // 1920×1080 is coded as 68 rows, the last 8 lines cropped (4 in 4:2:0 chroma units).
        let sps = Sps {
            crop: Some([0, 0, 0, 4]),
            ..Sps::baseline(120, 68)
        };
        assert_eq!(keyframe_size(&keyframe(&sps.nal())), Some((1920, 1080)));
        let sps = Sps {
            crop: Some([1, 2, 3, 1]),
            ..Sps::baseline(20, 12)
        };
        assert_eq!(keyframe_size(&sps.nal()), Some((320 - 6, 192 - 8)));
        // Interlaced: map units are field rows, and a crop unit is 4 lines.
        let sps = Sps {
            frame_mbs_only: false,
            crop: Some([0, 0, 0, 2]),
            ..Sps::baseline(45, 18)
        };
        assert_eq!(keyframe_size(&sps.nal()), Some((720, 576 - 8)));
        // A 3-byte start code, after another NAL unit (an access unit delimiter).
        let mut frame = vec![0, 0, 1, 0x09, 0x10, 0, 0, 1];
        frame.extend_from_slice(&Sps::baseline(40, 23).nal()[4..]);
        assert_eq!(keyframe_size(&frame), Some((640, 368)));
    }

    #[test]
    fn reads_past_emulation_prevention() {
        // An offset of −2^30 is 31 zero bits and more: the writer must escape them.
        let sps = Sps {
            poc_type: 1,
            poc_offsets: vec![-(1 << 30), 7, 1 << 29],
            ..Sps::baseline(80, 45)
        };
        let nal = sps.nal();
        assert!(nal[4..].windows(3).any(|w| w == [0, 0, 3]), "{nal:02x?}");
        assert_eq!(keyframe_size(&nal), Some((1280, 720)));
    }

    #[test]
    fn reads_past_high_profile_scaling_lists() {
        let mut lists = vec![None; 8];
        lists[0] = Some(vec![3, 1, -2]);
        lists[1] = Some(vec![-8]); // next scale 0 at once: the default list
        lists[2] = Some(vec![5, 127, 127, -128]); // 13, 140, 11, 139: modulo 256
        lists[6] = Some(vec![1; 64]);
        lists[7] = Some(vec![-1; 10]); // reaches 0 after eight: the rest repeats 1
        let sps = Sps {
            profile_idc: 100,
            scaling: Some(lists.clone()),
            poc_type: 0,
            crop: Some([0, 0, 0, 4]),
            ..Sps::baseline(120, 68)
        };
        assert_eq!(keyframe_size(&keyframe(&sps.nal())), Some((1920, 1080)));
        // 4:4:4 has twelve lists and crops in luma samples.
        lists.resize(12, Some(vec![2, 0, -3]));
        let sps = Sps {
            profile_idc: 244,
            chroma_format_idc: 3,
            scaling: Some(lists),
            crop: Some([1, 0, 0, 3]),
            ..Sps::baseline(40, 23)
        };
        assert_eq!(keyframe_size(&sps.nal()), Some((639, 365)));
        // 4:2:2 crops rows one by one; separate colour planes crop like monochrome.
        let sps = Sps {
            profile_idc: 122,
            chroma_format_idc: 2,
            crop: Some([1, 1, 0, 3]),
            ..Sps::baseline(40, 23)
        };
        assert_eq!(keyframe_size(&sps.nal()), Some((636, 365)));
        let sps = Sps {
            profile_idc: 44,
            chroma_format_idc: 3,
            separate_colour_planes: true,
            crop: Some([1, 1, 0, 3]),
            ..Sps::baseline(40, 23)
        };
        assert_eq!(keyframe_size(&sps.nal()), Some((638, 365)));
    }

    #[test]
    fn reads_openh264s_sps() {
        assert_eq!(keyframe_size(&keyframe(&OPENH264_720P)), Some((1280, 720)));
        assert_eq!(keyframe_size(&keyframe(&OPENH264_180P)), Some((320, 180)));
    }

    /// What the transcoder's encoder writes at the start of a keyframe.
    #[cfg(feature = "h264")]
    #[test]
    fn reads_what_openh264_encodes() {
        use openh264::OpenH264API;
        use openh264::encoder::{Encoder, EncoderConfig};
        use openh264::formats::YUVBuffer;
        for (w, h) in [(320, 180), (1280, 720)] {
            let config = EncoderConfig::new();
            let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
            let frame = enc.encode(&YUVBuffer::new(w, h)).unwrap().to_vec();
            let head = &frame[..frame.len().min(40)];
            assert_eq!(
                keyframe_size(&frame),
                Some((w as u32, h as u32)),
                "{head:02x?}"
            );
        }
    }

    #[test]
    fn reads_an_sps_nal_unit_alone() {
        assert_eq!(sps_nal_size(&OPENH264_720P[4..]), Some((1280, 720)));
        assert_eq!(sps_nal_size(&OPENH264_180P[4..]), Some((320, 180)));
        assert_eq!(
            sps_nal_size(&OPENH264_720P),
            None,
            "a start code is no NAL header"
        );
        assert_eq!(sps_nal_size(&PPS_IDR[4..8]), None, "a PPS");
        assert_eq!(sps_nal_size(&[0x67]), None);
        assert_eq!(sps_nal_size(&[]), None);
    }

    #[test]
    fn refuses_frames_without_a_good_sps() {
        assert_eq!(keyframe_size(&[]), None);
        assert_eq!(keyframe_size(&PPS_IDR), None, "no SPS");
        assert_eq!(keyframe_size(&OPENH264_720P[4..]), None, "no start code");
        let size = |s: Sps| keyframe_size(&s.nal());
        let cropped_away = Sps {
            crop: Some([20, 20, 0, 0]),
            ..Sps::baseline(5, 5)
        };
        assert_eq!(size(cropped_away), None);
        let over_cropped = Sps {
            crop: Some([0, 0, u64::from(u32::MAX), 1]),
            ..Sps::baseline(5, 5)
        };
        assert_eq!(size(over_cropped), None);
        assert_eq!(size(Sps::baseline(1025, 1)), None, "wider than 16384");
        assert_eq!(size(Sps::baseline(1024, 1024)), Some((16384, 16384)));
        assert_eq!(size(Sps::baseline(1 << 33, 1)), None, "33 leading zeros");
        let tall = Sps {
            frame_mbs_only: false,
            ..Sps::baseline(1, 513)
        };
        assert_eq!(size(tall), None, "513 field rows are taller than 16384");
        let bad_chroma = Sps {
            profile_idc: 100,
            chroma_format_idc: 4,
            ..Sps::baseline(80, 45)
        };
        assert_eq!(size(bad_chroma), None);
        let bad_scale = Sps {
            profile_idc: 100,
            scaling: Some(vec![Some(vec![200])]),
            ..Sps::baseline(80, 45)
        };
        assert_eq!(size(bad_scale), None, "delta_scale out of range");
        // 40 leading zeros are no Exp-Golomb code of 32 bits.
        let frame = [0, 0, 1, 0x67, 0x42, 0, 0x1f, 0x80, 0, 0, 0, 0, 0x40];
        assert_eq!(keyframe_size(&frame), None);
    }

    #[test]
    fn a_truncated_sps_has_no_size_until_what_is_read_is_there() {
        let mut lists = vec![Some(vec![1; 16]); 6];
        lists.resize(8, Some(vec![-1; 64]));
        let high = Sps {
            profile_idc: 100,
            scaling: Some(lists),
            poc_type: 1,
            poc_offsets: vec![1, -1 << 20, 3],
            crop: Some([0, 0, 0, 4]),
            ..Sps::baseline(120, 68)
        };
        let high = high.nal();
        // The hand-made SPS's cropping reaches into its last byte; openh264's is read up to the
        // cropping flag in its 14th byte, and VUI follows.
        let cases: [(&[u8], usize, (u32, u32)); 3] = [
            (&high, high.len(), (1920, 1080)),
            (&OPENH264_720P, 14, (1280, 720)),
            (&OPENH264_180P, 14, (320, 180)),
        ];
        for (sps, needed, size) in cases {
            for len in 0..=sps.len() {
                let want = (len >= needed).then_some(size);
                assert_eq!(
                    keyframe_size(&sps[..len]),
                    want,
                    "{len} bytes of {sps:02x?}"
                );
            }
        }
    }

    /// An SPS of any profile's chroma format, picture structure and POC type, with cropping
    /// (some of it whole macroblocks) to a size of multiples of 2 in 16..=4096 (of 4 where
    /// interlaced 4:2:0 crops rows in fours); and that size.
    fn any_sps() -> impl Strategy<Value = (Sps, (u64, u64))> {
        let format = prop_oneof![
            Just((66u8, 1u64, false)),
            Just((100, 1, false)),
            Just((122, 2, false)),
            Just((244, 3, false)),
            Just((244, 3, true)),
        ];
        let deltas = proptest::collection::vec(-128i64..=127, 0..70);
        let scaling = proptest::option::of(proptest::collection::vec(
            proptest::option::of(deltas),
            0..12,
        ));
        let offsets = proptest::collection::vec(i64::from(i32::MIN + 1)..=i32::MAX.into(), 0..5);
        (
            (8u64..=2048, 8u64..=2048, any::<bool>()),
            (format, scaling, 0u64..3, offsets),
            (0u64..3, 0u64..3, any::<[u64; 2]>(), any::<bool>()),
        )
            .prop_map(|(size, sps, crop)| {
                let ((w, h, progressive), (format, scaling, poc_type, poc_offsets)) = (size, sps);
                let (extra_mbs_x, extra_mbs_y, split, crop_anyway) = crop;
                let (profile_idc, chroma_format_idc, separate_colour_planes) = format;
                let fields = if progressive { 1 } else { 2 };
                let (unit_x, unit_y) = match (chroma_format_idc, separate_colour_planes) {
                    (1, _) => (2, 2 * fields),
                    (2, _) => (2, fields),
                    _ => (1, fields),
                };
                let (w, h) = (w * 2, h * 2 / unit_y * unit_y);
                let width_mbs = w.div_ceil(16) + extra_mbs_x;
                let height_map_units = h.div_ceil(16 * fields) + extra_mbs_y;
                let crop_x = (width_mbs * 16 - w) / unit_x;
                let crop_y = (height_map_units * 16 * fields - h) / unit_y;
                let (left, top) = (split[0] % (crop_x + 1), split[1] % (crop_y + 1));
                let crop = [left, crop_x - left, top, crop_y - top];
                let sps = Sps {
                    profile_idc,
                    chroma_format_idc,
                    separate_colour_planes,
                    scaling,
                    poc_type,
                    poc_offsets,
                    width_mbs,
                    height_map_units,
                    frame_mbs_only: progressive,
                    crop: (crop_anyway || crop_x + crop_y > 0).then_some(crop),
                };
                (sps, (w, h))
            })
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = keyframe_size(&frame);
            // Behind a start code and an SPS header, the bytes are read as an SPS.
            let _ = keyframe_size(&[&[0, 0, 1, 0x67][..], &frame].concat());
        }

        #[test]
        fn sizes_round_trip((sps, (w, h)) in any_sps()) {
            let size = Some((u32::try_from(w).unwrap(), u32::try_from(h).unwrap()));
            prop_assert_eq!(keyframe_size(&keyframe(&sps.nal())), size);
        }
    }
}
