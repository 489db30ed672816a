//! Edge detection on luma: a 3×3 Sobel gradient with a hard threshold, white on black — the
//! look of aiortc's `cv2.Canny(img, 100, 200)` without its hysteresis pass.

use super::BLACK_Y;

const WHITE_Y: u8 = 235;
/// Squared gradient magnitude above which a sample is an edge (|∇| > 160 on the Sobel scale,
/// between Canny's two thresholds of 100 and 200).
const THRESHOLD_SQ: i32 = 160 * 160;

pub(crate) fn edges(src: &[u8], stride: usize, width: usize, height: usize, dst: &mut [u8]) {
    dst[..width * height].fill(BLACK_Y);
    if width < 3 || height < 3 {
        return;
    }
    for y in 1..height - 1 {
        let above = &src[(y - 1) * stride..(y - 1) * stride + width];
        let here = &src[y * stride..y * stride + width];
        let below = &src[(y + 1) * stride..(y + 1) * stride + width];
        let out = &mut dst[y * width..(y + 1) * width];
        for x in 1..width - 1 {
            let p = |row: &[u8], dx: usize| i32::from(row[x + dx - 1]);
            let gx = (p(above, 2) + 2 * p(here, 2) + p(below, 2))
                - (p(above, 0) + 2 * p(here, 0) + p(below, 0));
            let gy = (p(below, 0) + 2 * p(below, 1) + p(below, 2))
                - (p(above, 0) + 2 * p(above, 1) + p(above, 2));
            if gx * gx + gy * gy > THRESHOLD_SQ {
                out[x] = WHITE_Y;
            }
        }
    }
}
