//! Separable box blur with running sums: O(1) per sample whatever the radius, and both passes
//! walk memory row by row.

/// Blurs a `width`×`height` plane (stride `stride`) into the packed `dst` with a
/// (2·`radius`+1)² box; windows are clipped at the borders. `scratch` holds the horizontal pass.
pub(crate) fn box_blur(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    radius: usize,
    scratch: &mut Vec<u8>,
    dst: &mut [u8],
) {
    scratch.resize(width * height, 0);
    for row in 0..height {
        let line = &src[row * stride..row * stride + width];
        blur_line(line, radius, &mut scratch[row * width..(row + 1) * width]);
    }
    // Vertical pass: one running sum per column, rows entering and leaving the window.
    let row = |y: usize| &scratch[y * width..(y + 1) * width];
    let mut sums = vec![0u32; width];
    let mut count = 0u32;
    for y in 0..=radius.min(height - 1) {
        add_row(&mut sums, row(y));
        count += 1;
    }
    for y in 0..height {
        let out = &mut dst[y * width..(y + 1) * width];
        for (o, s) in out.iter_mut().zip(&sums) {
            *o = ((s + count / 2) / count) as u8;
        }
        let enter = y + radius + 1;
        if enter < height {
            add_row(&mut sums, row(enter));
            count += 1;
        }
        if y >= radius {
            for (s, v) in sums.iter_mut().zip(row(y - radius)) {
                *s -= u32::from(*v);
            }
            count -= 1;
        }
    }
}

fn add_row(sums: &mut [u32], row: &[u8]) {
    for (s, v) in sums.iter_mut().zip(row) {
        *s += u32::from(*v);
    }
}

/// One row of the box blur.
fn blur_line(src: &[u8], radius: usize, dst: &mut [u8]) {
    let n = src.len();
    let at = |i: usize| u32::from(src[i]);
    let mut sum: u32 = (0..=radius.min(n - 1)).map(at).sum();
    let mut count = radius.min(n - 1) as u32 + 1;
    for (i, d) in dst.iter_mut().enumerate().take(n) {
        *d = ((sum + count / 2) / count) as u8;
        let enter = i + radius + 1;
        if enter < n {
            sum += at(enter);
            count += 1;
        }
        if i >= radius {
            sum -= at(i - radius);
            count -= 1;
        }
    }
}
