//! H.264 decode → [`Transformer`] → encode, with openh264 built from its bundled source.
//!
//! Chromium offers H.264 constrained baseline, which is what openh264 encodes, so transformed
//! sessions negotiate H.264 only. The transcoder works in the decoder's own YUV planes.

use std::time::Duration;

use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSource;

use crate::frame::{Frame, Planes};
use crate::transform::{Transform, Transformer};

/// How openh264 was compiled: with its x86 assembly when `nasm` was found at build time.
pub const BUILD: &str = env!("HUDDLE_H264_BUILD");

/// Bitrate bounds for the encoder, whatever the receiver's estimate says.
pub const MIN_BITRATE: u32 = 150_000;
pub const MAX_BITRATE: u32 = 4_000_000;
const INITIAL_BITRATE: u32 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("H.264 decoder: {0}")]
    Decode(openh264::Error),
    #[error("H.264 encoder: {0}")]
    Encode(openh264::Error),
}

/// One session's decode → transform → encode chain.
pub struct Transcoder {
    decoder: Decoder,
    encoder: Encoder,
    transformer: Transformer,
    picture: Frame,
    bitrate: u32,
    keyframe_pending: bool,
}

/// An encoded access unit (Annex B), ready for str0m's H.264 packetizer.
#[derive(Debug)]
pub struct Encoded {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

impl Transcoder {
    pub fn new(transform: Transform) -> Result<Self, CodecError> {
        let decoder = Decoder::new().map_err(CodecError::Decode)?;
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(INITIAL_BITRATE))
            .max_frame_rate(FrameRate::from_hz(30.0))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .skip_frames(true)
            // Real-time settings: the cheapest mode decision, no pre-analysis passes (background,
            // scene change, adaptive quantisation) that a webcam echo gains nothing from.
            .complexity(Complexity::Low)
            .background_detection(false)
            .scene_change_detect(false)
            .adaptive_quantization(false)
            // One thread per stream: sessions are spread over cores, not frames.
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(CodecError::Encode)?;
        Ok(Transcoder {
            decoder,
            encoder,
            transformer: Transformer::new(transform),
            picture: Frame::default(),
            bitrate: INITIAL_BITRATE,
            keyframe_pending: false,
        })
    }

    /// Decodes one access unit; when `emit` is set and a picture came out, transforms and encodes
    /// it. Callers that fall behind decode every frame (references must stay intact) but emit
    /// only the newest. `time` is the frame's media time since the stream began.
    pub fn process(
        &mut self,
        access_unit: &[u8],
        time: Duration,
        emit: bool,
    ) -> Result<Option<Encoded>, CodecError> {
        let Some(decoded) = self
            .decoder
            .decode(access_unit)
            .map_err(CodecError::Decode)?
        else {
            return Ok(None);
        };
        if !emit {
            return Ok(None);
        }
        let (width, height) = decoded.dimensions();
        let (y_stride, uv_stride, _) = decoded.strides();
        let planes = Planes {
            width,
            height,
            y: decoded.y(),
            u: decoded.u(),
            v: decoded.v(),
            y_stride,
            uv_stride,
        };
        self.transformer.apply(&planes, time, &mut self.picture);
        if std::mem::take(&mut self.keyframe_pending) {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode(&PackedYuv(&self.picture))
            .map_err(CodecError::Encode)?;
        let keyframe = stream.frame_type() == FrameType::IDR;
        if stream.frame_type() == FrameType::Skip {
            return Ok(None);
        }
        Ok(Some(Encoded {
            data: stream.to_vec(),
            keyframe,
        }))
    }

    /// The next encoded frame is a keyframe (the receiver sent PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    /// Follows the receiver's bandwidth estimate, clamped to [`MIN_BITRATE`, `MAX_BITRATE`].
    /// Small changes (under 10 %) are ignored: every change resets the rate controller.
    pub fn set_bitrate(&mut self, bps: u64) {
        let bps = bps.clamp(u64::from(MIN_BITRATE), u64::from(MAX_BITRATE)) as u32;
        if bps.abs_diff(self.bitrate) * 10 < self.bitrate {
            return;
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: bps as i32,
        };
        // SAFETY: the encoder is initialised (constructed above); ENCODER_OPTION_BITRATE takes a
        // pointer to an SBitrateInfo that only needs to live for the call, and changing the
        // target bitrate is one of the options openh264 documents for use while encoding.
        let rc = unsafe {
            self.encoder.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                (&raw mut info).cast(),
            )
        };
        if rc == 0 {
            self.bitrate = bps;
        } else {
            tracing::debug!(rc, bps, "openh264 refused a bitrate change");
        }
    }

    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }
}

/// A packed [`Frame`] as the encoder's input.
struct PackedYuv<'a>(&'a Frame);

impl YUVSource for PackedYuv<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width, self.0.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let cw = self.0.chroma_size().0;
        (self.0.width, cw, cw)
    }

    fn y(&self) -> &[u8] {
        &self.0.y
    }

    fn u(&self) -> &[u8] {
        &self.0.u
    }

    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moving colour pattern, encoded by one transcoder with `none` so another can decode it.
    fn source_frames(n: usize) -> Vec<Vec<u8>> {
        let mut enc = Transcoder::new(Transform::None).unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let mut f = Frame::black(64, 48);
            for (k, y) in f.y.iter_mut().enumerate() {
                *y = ((k % 64) * 3 + i * 5) as u8;
            }
            f.u.fill(90);
            f.v.fill(200);
            let e = enc.encoder.encode(&PackedYuv(&f)).unwrap();
            out.push(e.to_vec());
        }
        out
    }

    #[test]
    fn grayscale_round_trip_through_h264() {
        let frames = source_frames(5);
        let mut t = Transcoder::new(Transform::Grayscale).unwrap();
        let mut emitted = 0;
        for (i, au) in frames.iter().enumerate() {
            if let Some(e) = t
                .process(au, Duration::from_millis(33 * i as u64), true)
                .unwrap()
            {
                assert!(!e.data.is_empty());
                assert!(e.data.starts_with(&[0, 0, 0, 1]), "Annex B start code");
                if emitted == 0 {
                    assert!(e.keyframe, "the first frame out is a keyframe");
                }
                emitted += 1;
            }
        }
        assert!(emitted >= 4, "{emitted} frames out of 5");
        // Decode what came out: chroma is neutral.
        let mut check = Decoder::new().unwrap();
        let mut last = None;
        let mut t = Transcoder::new(Transform::Grayscale).unwrap();
        for au in &frames {
            if let Some(e) = t.process(au, Duration::ZERO, true).unwrap()
                && let Some(pic) = check.decode(&e.data).unwrap()
            {
                last = Some(pic.u()[0]);
            }
        }
        let u = last.expect("a decoded picture");
        assert!((i32::from(u) - 128).abs() <= 2, "chroma {u}");
    }

    #[test]
    fn frames_decoded_but_not_emitted_keep_the_stream_decodable() {
        let frames = source_frames(6);
        let mut t = Transcoder::new(Transform::Edges).unwrap();
        for au in &frames[..5] {
            assert!(t.process(au, Duration::ZERO, false).unwrap().is_none());
        }
        let e = t
            .process(&frames[5], Duration::ZERO, true)
            .unwrap()
            .expect("a frame");
        assert!(e.keyframe, "the encoder's first output is a keyframe");
    }

    #[test]
    fn keyframe_on_request_and_bitrate_follows_estimate() {
        let frames = source_frames(4);
        let mut t = Transcoder::new(Transform::Blur).unwrap();
        t.process(&frames[0], Duration::ZERO, true).unwrap();
        t.process(&frames[1], Duration::ZERO, true).unwrap();
        t.request_keyframe();
        let e = t
            .process(&frames[2], Duration::ZERO, true)
            .unwrap()
            .expect("a frame");
        assert!(e.keyframe);
        t.set_bitrate(500_000);
        assert_eq!(t.bitrate(), 500_000);
        t.set_bitrate(520_000);
        assert_eq!(t.bitrate(), 500_000, "changes under 10 % are ignored");
        t.set_bitrate(100);
        assert_eq!(t.bitrate(), MIN_BITRATE);
        t.process(&frames[3], Duration::ZERO, true).unwrap();
    }

    #[test]
    fn grayscale_keeps_luma_through_the_codec() {
        let mut enc = Transcoder::new(Transform::None).unwrap();
        let mut f = Frame::black(64, 48);
        f.y.fill(91);
        f.u.fill(60);
        f.v.fill(60);
        let au = enc.encoder.encode(&PackedYuv(&f)).unwrap().to_vec();
        let mut t = Transcoder::new(Transform::Grayscale).unwrap();
        let out = t
            .process(&au, Duration::ZERO, true)
            .unwrap()
            .expect("a frame");
        let mut check = Decoder::new().unwrap();
        let pic = check.decode(&out.data).unwrap().expect("a picture");
        assert!(pic.y()[100].abs_diff(91) <= 2, "luma {}", pic.y()[100]);
        assert!(pic.u()[10].abs_diff(128) <= 2, "chroma {}", pic.u()[10]);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_crash() {
        let mut t = Transcoder::new(Transform::Edges).unwrap();
        let r = t.process(&[0, 0, 0, 1, 0x65, 0xff, 0x00, 0x12], Duration::ZERO, true);
        assert!(matches!(r, Err(CodecError::Decode(_)) | Ok(None)), "{r:?}");
    }
}
