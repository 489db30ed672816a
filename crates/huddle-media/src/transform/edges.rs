//! Edge detection on luma: a 3×3 Sobel gradient with a hard threshold, white on black — the
//! look of aiortc's `cv2.Canny(img, 100, 200)` without its hysteresis pass.
//!
//! The gradient is taken with the L1 norm |gx| + |gy| (Canny's default) in 16-bit lanes, and
//! each row is written as whole slices of one length, so the compiler vectorises the loop.

use super::BLACK_Y;

const WHITE_Y: u8 = 235;
/// Gradient magnitude (L1, Sobel scale) above which a sample is an edge: between Canny's two
/// thresholds of 100 and 200.
const THRESHOLD: i16 = 160;

pub(crate) fn edges(src: &[u8], stride: usize, width: usize, height: usize, dst: &mut [u8]) {
    dst[..width * height].fill(BLACK_Y);
    if width < 3 || height < 3 {
        return;
    }
    let n = width - 2;
    for y in 1..height - 1 {
        let row = |r: usize| &src[r * stride..r * stride + width];
        let (above, here, below) = (row(y - 1), row(y), row(y + 1));
        let (a0, a1, a2) = (&above[..n], &above[1..n + 1], &above[2..n + 2]);
        let (h0, h2) = (&here[..n], &here[2..n + 2]);
        let (b0, b1, b2) = (&below[..n], &below[1..n + 1], &below[2..n + 2]);
        let out = &mut dst[y * width + 1..y * width + 1 + n];
        for i in 0..n {
            let v = |s: &[u8]| i16::from(s[i]);
            let gx = (v(a2) + 2 * v(h2) + v(b2)) - (v(a0) + 2 * v(h0) + v(b0));
            let gy = (v(b0) + 2 * v(b1) + v(b2)) - (v(a0) + 2 * v(a1) + v(a2));
            out[i] = if gx.abs() + gy.abs() > THRESHOLD {
                WHITE_Y
            } else {
                BLACK_Y
            };
        }
    }
}
