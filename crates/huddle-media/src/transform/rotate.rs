//! Rotation about the picture's centre with nearest-sample lookup; corners that fall outside
//! the source become black, as with aiortc's `cv2.warpAffine`.

use super::{BLACK_Y, NEUTRAL_UV};
use crate::frame::{Frame, Planes};

pub(crate) fn rotate(src: &Planes<'_>, radians: f64, dst: &mut Frame) {
    let (cw, ch) = src.chroma_size();
    rotate_plane(
        src.y,
        src.y_stride,
        src.width,
        src.height,
        radians,
        BLACK_Y,
        &mut dst.y,
    );
    rotate_plane(
        src.u,
        src.uv_stride,
        cw,
        ch,
        radians,
        NEUTRAL_UV,
        &mut dst.u,
    );
    rotate_plane(
        src.v,
        src.uv_stride,
        cw,
        ch,
        radians,
        NEUTRAL_UV,
        &mut dst.v,
    );
}

/// 16.16 fixed point: the inner loop only adds.
const ONE: f64 = 65536.0;

fn rotate_plane(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    radians: f64,
    outside: u8,
    dst: &mut [u8],
) {
    let (sin, cos) = radians.sin_cos();
    let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
    // Destination (x, y) samples source R(-θ)·(x - c) + c; step along x adds (cos, -sin).
    let step_x = ((cos * ONE) as i64, (-sin * ONE) as i64);
    for y in 0..height {
        let dy = y as f64 + 0.5 - cy;
        let dx = 0.5 - cx;
        let mut sx = ((cos * dx + sin * dy + cx) * ONE) as i64;
        let mut sy = ((-sin * dx + cos * dy + cy) * ONE) as i64;
        let out = &mut dst[y * width..(y + 1) * width];
        for o in out.iter_mut() {
            let (ix, iy) = (sx >> 16, sy >> 16);
            *o = if ix >= 0 && iy >= 0 && (ix as usize) < width && (iy as usize) < height {
                src[iy as usize * stride + ix as usize]
            } else {
                outside
            };
            sx += step_x.0;
            sy += step_x.1;
        }
    }
}
