//! A cartoon look in YUV: smoothed, posterized colour with dark outlines where a sample is
//! clearly darker than its neighbourhood — aiortc's bilateral filter + adaptive threshold, done
//! with box blurs.

use super::BLACK_Y;
use super::blur::box_blur;
use crate::frame::{Frame, Planes};

/// Luma bands of the posterized picture.
const LUMA_STEP: u8 = 40;
/// Chroma bands, finer: hue survives, gradients flatten.
const CHROMA_STEP: u8 = 24;
/// How much darker than the local mean (luma levels) a sample must be to draw an outline.
const OUTLINE_CONTRAST: u8 = 8;

pub(crate) fn cartoon(
    src: &Planes<'_>,
    scratch: &mut Vec<u8>,
    mean: &mut Vec<u8>,
    dst: &mut Frame,
) {
    let (w, h) = (src.width, src.height);
    let (cw, ch) = src.chroma_size();
    // Smoothed luma into dst.y, then its wider mean for the outline test.
    box_blur(src.y, src.y_stride, w, h, 1, scratch, &mut dst.y);
    mean.resize(w * h, 0);
    box_blur(&dst.y, w, w, h, 5, scratch, mean);
    for (y, m) in dst.y.iter_mut().zip(mean.iter()) {
        *y = if y.saturating_add(OUTLINE_CONTRAST) < *m {
            BLACK_Y
        } else {
            posterize(*y, LUMA_STEP)
        };
    }
    box_blur(src.u, src.uv_stride, cw, ch, 2, scratch, &mut dst.u);
    box_blur(src.v, src.uv_stride, cw, ch, 2, scratch, &mut dst.v);
    for c in dst.u.iter_mut().chain(dst.v.iter_mut()) {
        *c = posterize(*c, CHROMA_STEP);
    }
}

/// Snaps a sample to the middle of its band.
fn posterize(v: u8, step: u8) -> u8 {
    let band = v / step;
    (u16::from(band) * u16::from(step) + u16::from(step / 2)).min(255) as u8
}
