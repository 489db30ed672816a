//! Pictures in the decoder's own layout: planar YUV 4:2:0 (I420), 8 bits per sample.
//!
//! Transforms read a borrowed [`Planes`] (the decoder's buffers, with their strides) and write an
//! owned [`Frame`] (tightly packed), so a frame is touched once between decode and encode — no RGB
//! round trip, no intermediate copy.

/// Borrowed I420 planes with strides, as a decoder hands them out.
#[derive(Clone, Copy, Debug)]
pub struct Planes<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
}

impl Planes<'_> {
    /// Width and height of the chroma planes (rounded up, as I420 does for odd sizes).
    pub fn chroma_size(&self) -> (usize, usize) {
        chroma_size(self.width, self.height)
    }

    /// Whether every plane is large enough for the claimed size and strides.
    pub fn is_consistent(&self) -> bool {
        let (cw, ch) = self.chroma_size();
        self.width > 0
            && self.height > 0
            && self.y_stride >= self.width
            && self.uv_stride >= cw
            && self.y.len() >= (self.height - 1) * self.y_stride + self.width
            && self.u.len() >= (ch - 1) * self.uv_stride + cw
            && self.v.len() >= (ch - 1) * self.uv_stride + cw
    }
}

/// An owned, tightly packed I420 picture (strides equal widths).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl Frame {
    /// A black picture of the given size.
    pub fn black(width: usize, height: usize) -> Frame {
        let mut f = Frame::default();
        f.resize(width, height);
        f.y.fill(16);
        f.u.fill(128);
        f.v.fill(128);
        f
    }

    /// Sets the size, reusing the buffers (contents are unspecified afterwards).
    pub fn resize(&mut self, width: usize, height: usize) {
        let (cw, ch) = chroma_size(width, height);
        self.width = width;
        self.height = height;
        self.y.resize(width * height, 0);
        self.u.resize(cw * ch, 0);
        self.v.resize(cw * ch, 0);
    }

    pub fn chroma_size(&self) -> (usize, usize) {
        chroma_size(self.width, self.height)
    }
}

pub(crate) fn chroma_size(width: usize, height: usize) -> (usize, usize) {
    (width.div_ceil(2), height.div_ceil(2))
}

/// Copies a `width`×`height` plane with stride `stride` into a packed destination.
pub(crate) fn copy_plane(src: &[u8], stride: usize, width: usize, height: usize, dst: &mut [u8]) {
    for (row, out) in dst.chunks_exact_mut(width).take(height).enumerate() {
        out.copy_from_slice(&src[row * stride..row * stride + width]);
    }
}
