use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A picture with a stride wider than its width (as decoders hand out), luma from `f(x, y)`,
/// chroma a fixed colour.
struct Strided {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

const PAD: usize = 7;

impl Strided {
    fn new(width: usize, height: usize, luma: impl Fn(usize, usize) -> u8, u: u8, v: u8) -> Self {
        let stride = width + PAD;
        let mut y = vec![0xAA; stride * height];
        for row in 0..height {
            for x in 0..width {
                y[row * stride + x] = luma(x, row);
            }
        }
        let (cw, ch) = crate::frame::chroma_size(width, height);
        let cs = cw + PAD;
        Strided {
            width,
            height,
            y,
            u: vec![u; cs * ch],
            v: vec![v; cs * ch],
        }
    }

    fn planes(&self) -> Planes<'_> {
        let (cw, _) = crate::frame::chroma_size(self.width, self.height);
        Planes {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width + PAD,
            uv_stride: cw + PAD,
        }
    }
}

fn run(t: Transform, src: &Strided, secs: f64) -> Frame {
    let mut out = Frame::default();
    Transformer::new(t).apply(&src.planes(), Duration::from_secs_f64(secs), &mut out);
    out
}

fn luma(f: &Frame, x: usize, y: usize) -> u8 {
    f.y[y * f.width + x]
}

#[test]
fn names_round_trip_and_unknown_is_explained() {
    for t in Transform::ALL {
        assert_eq!(t.name().parse::<Transform>(), Ok(t));
    }
    let err = "sepia".parse::<Transform>().unwrap_err();
    assert!(err.to_string().contains("\"sepia\""), "{err}");
    assert!(err.to_string().contains("edges"), "{err}");
    assert!(!Transform::None.decodes());
    assert!(Transform::Edges.decodes());
}

#[test]
fn none_copies_through_strides() {
    let src = Strided::new(9, 5, |x, y| (x * 10 + y) as u8, 90, 200);
    let out = run(Transform::None, &src, 0.0);
    assert_eq!((out.width, out.height), (9, 5));
    assert_eq!(luma(&out, 8, 4), 84);
    assert!(out.u.iter().all(|&u| u == 90) && out.v.iter().all(|&v| v == 200));
    assert_eq!(out.u.len(), 5 * 3);
}

#[test]
fn grayscale_keeps_luma_and_neutralises_chroma() {
    let src = Strided::new(16, 8, |x, _| (x * 15) as u8, 40, 220);
    let out = run(Transform::Grayscale, &src, 0.0);
    assert_eq!(luma(&out, 5, 3), 75);
    assert!(out.u.iter().chain(&out.v).all(|&c| c == NEUTRAL_UV));
}

#[test]
fn edges_finds_a_step_and_leaves_flat_areas_black() {
    // Left half dark, right half bright: one vertical edge at x = 16.
    let src = Strided::new(32, 16, |x, _| if x < 16 { 30 } else { 220 }, 90, 60);
    let out = run(Transform::Edges, &src, 0.0);
    assert_eq!(luma(&out, 15, 8), 235);
    assert_eq!(luma(&out, 16, 8), 235);
    assert_eq!(luma(&out, 4, 8), BLACK_Y);
    assert_eq!(luma(&out, 28, 8), BLACK_Y);
    let dark = out.y.iter().filter(|&&y| y == BLACK_Y).count();
    assert!(
        dark * 10 > out.y.len() * 8,
        "mostly dark: {dark} of {}",
        out.y.len()
    );
    assert!(out.u.iter().all(|&c| c == NEUTRAL_UV));
}

#[test]
fn edges_of_a_gentle_gradient_are_none() {
    let src = Strided::new(64, 16, |x, _| (x * 3) as u8, 128, 128);
    let out = run(Transform::Edges, &src, 0.0);
    assert!(out.y.iter().all(|&y| y == BLACK_Y));
}

#[test]
fn blur_keeps_flat_pictures_and_spreads_a_point() {
    let flat = Strided::new(20, 10, |_, _| 77, 100, 150);
    let out = run(Transform::Blur, &flat, 0.0);
    assert!(out.y.iter().all(|&y| y == 77));
    assert!(out.u.iter().all(|&u| u == 100) && out.v.iter().all(|&v| v == 150));

    let point = Strided::new(
        21,
        21,
        |x, y| if (x, y) == (10, 10) { 255 } else { 0 },
        128,
        128,
    );
    let out = run(Transform::Blur, &point, 0.0);
    // A 9×9 box: the point is spread evenly over 81 samples (255/81 ≈ 3).
    assert_eq!(luma(&out, 10, 10), 3);
    assert_eq!(luma(&out, 6, 14), 3);
    assert_eq!(luma(&out, 5, 10), 0);
}

#[test]
fn rotate_follows_time_at_45_degrees_per_second() {
    let src = Strided::new(16, 16, |x, y| (y * 16 + x) as u8, 128, 128);
    // t = 0 and t = 8 s (360°) are the picture itself.
    for secs in [0.0, 8.0] {
        let out = run(Transform::Rotate, &src, secs);
        for (x, y) in [(0, 0), (15, 0), (7, 9), (15, 15)] {
            assert_eq!(
                luma(&out, x, y),
                (y * 16 + x) as u8,
                "t={secs} at ({x},{y})"
            );
        }
    }
    // t = 4 s is 180°: (x, y) shows the source's (15 - x, 15 - y).
    let out = run(Transform::Rotate, &src, 4.0);
    for (x, y) in [(0, 0), (3, 12), (15, 0)] {
        assert_eq!(
            luma(&out, x, y),
            ((15 - y) * 16 + (15 - x)) as u8,
            "at ({x},{y})"
        );
    }
    // t = 1 s is 45°: the corners came from outside the picture and are black.
    let out = run(Transform::Rotate, &src, 1.0);
    assert_eq!(luma(&out, 0, 0), BLACK_Y);
    assert_eq!(out.u[0], NEUTRAL_UV);
}

#[test]
fn cartoon_posterizes_and_outlines_dark_lines() {
    // Bright background with one dark 2-sample-wide line at x = 20..22.
    let src = Strided::new(
        40,
        20,
        |x, _| if (20..22).contains(&x) { 40 } else { 200 },
        97,
        161,
    );
    let out = run(Transform::Cartoon, &src, 0.0);
    assert_eq!(luma(&out, 20, 10), BLACK_Y, "the line is outlined");
    let bg = luma(&out, 5, 10);
    assert_ne!(bg, 200, "the background is posterized to a band centre");
    assert_eq!(bg, 220);
    assert!(out.u.iter().all(|&u| u == 108) && out.v.iter().all(|&v| v == 156));
}

proptest! {
    #[test]
    fn every_transform_accepts_any_size(
        w in 1usize..40,
        h in 1usize..40,
        seed in any::<u64>(),
        secs in 0.0f64..100.0,
    ) {
        let src = Strided::new(w, h, |x, y| (seed.rotate_left((x * 7 + y) as u32) & 0xff) as u8, 60, 190);
        for t in Transform::ALL {
            let out = run(t, &src, secs);
            let (cw, ch) = crate::frame::chroma_size(w, h);
            prop_assert_eq!((out.width, out.height), (w, h));
            prop_assert_eq!(out.y.len(), w * h);
            prop_assert_eq!(out.u.len(), cw * ch);
            prop_assert_eq!(out.v.len(), cw * ch);
        }
    }
}
