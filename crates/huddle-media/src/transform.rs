//! Per-frame picture operations, the Rust counterparts of aiortc's `VideoTransformTrack` examples.
//!
//! Every operation reads the decoder's planes and writes the encoder's input in one pass over the
//! picture; colour is never converted to RGB (none of these looks needs it). The operations are
//! pure functions of the picture and its timestamp, so they are tested on synthetic frames.

mod blur;
mod cartoon;
mod edges;
mod rotate;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::frame::{Frame, Planes, copy_plane};

/// Luma of black and the neutral chroma value in limited-range BT.601, what browsers send.
pub(crate) const BLACK_Y: u8 = 16;
pub(crate) const NEUTRAL_UV: u8 = 128;

/// The names aiortc's `examples/server` accepts in `video_transform`, plus `grayscale` and `blur`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    /// The track is sent back as it came, without decoding (Janus's echotest).
    None,
    /// White edges on black (aiortc: Canny).
    Edges,
    /// Flat colours with dark outlines (aiortc: bilateral filter + adaptive threshold).
    Cartoon,
    /// The picture turning 45° per second around its centre (aiortc: warpAffine by `frame.time`).
    Rotate,
    /// Luma only.
    Grayscale,
    /// A soft box blur.
    Blur,
}

impl Transform {
    pub const ALL: [Transform; 6] = [
        Transform::None,
        Transform::Edges,
        Transform::Cartoon,
        Transform::Rotate,
        Transform::Grayscale,
        Transform::Blur,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Edges => "edges",
            Transform::Cartoon => "cartoon",
            Transform::Rotate => "rotate",
            Transform::Grayscale => "grayscale",
            Transform::Blur => "blur",
        }
    }

    /// Whether frames must be decoded and encoded again (everything but `none`).
    pub fn decodes(self) -> bool {
        self != Transform::None
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `video_transform` named no transform Huddle has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown video_transform {0:?}; expected one of none, edges, cartoon, rotate, grayscale, blur"
)]
pub struct UnknownTransform(pub String);

impl FromStr for Transform {
    type Err = UnknownTransform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transform::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTransform(s.to_owned()))
    }
}

/// Applies one [`Transform`], keeping its scratch buffers between frames.
#[derive(Debug)]
pub struct Transformer {
    transform: Transform,
    scratch: Vec<u8>,
    scratch2: Vec<u8>,
}

impl Transformer {
    pub fn new(transform: Transform) -> Self {
        Transformer {
            transform,
            scratch: Vec::new(),
            scratch2: Vec::new(),
        }
    }

    pub fn transform(&self) -> Transform {
        self.transform
    }

    /// Writes the transformed `src` into `dst` (resized to `src`'s size). `time` is the frame's
    /// media time since the stream began; only `rotate` looks at it.
    ///
    /// # Panics
    /// If `src`'s planes are smaller than its size and strides claim (a decoder bug).
    pub fn apply(&mut self, src: &Planes<'_>, time: Duration, dst: &mut Frame) {
        assert!(
            src.is_consistent(),
            "decoder planes smaller than their size"
        );
        dst.resize(src.width, src.height);
        let (cw, ch) = src.chroma_size();
        match self.transform {
            Transform::None => {
                copy_plane(src.y, src.y_stride, src.width, src.height, &mut dst.y);
                copy_plane(src.u, src.uv_stride, cw, ch, &mut dst.u);
                copy_plane(src.v, src.uv_stride, cw, ch, &mut dst.v);
            }
            Transform::Grayscale => {
                copy_plane(src.y, src.y_stride, src.width, src.height, &mut dst.y);
                dst.u.fill(NEUTRAL_UV);
                dst.v.fill(NEUTRAL_UV);
            }
            Transform::Edges => {
                edges::edges(src.y, src.y_stride, src.width, src.height, &mut dst.y);
                dst.u.fill(NEUTRAL_UV);
                dst.v.fill(NEUTRAL_UV);
            }
            Transform::Blur => {
                let s = &mut self.scratch;
                blur::box_blur(src.y, src.y_stride, src.width, src.height, 4, s, &mut dst.y);
                blur::box_blur(src.u, src.uv_stride, cw, ch, 2, s, &mut dst.u);
                blur::box_blur(src.v, src.uv_stride, cw, ch, 2, s, &mut dst.v);
            }
            Transform::Cartoon => cartoon::cartoon(src, &mut self.scratch, &mut self.scratch2, dst),
            Transform::Rotate => {
                let degrees = time.as_secs_f64() * 45.0;
                rotate::rotate(src, degrees.to_radians(), dst);
            }
        }
    }
}

#[cfg(test)]
mod tests;
