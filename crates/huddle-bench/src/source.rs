//! Real H.264 to send: a moving synthetic picture encoded once with openh264, then looped by
//! every simulated camera (encoding live would make the load generator, not the server, the
//! limit).

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
};
use openh264::formats::YUVBuffer;

/// Frames between IDRs; a loop is whole groups of them.
pub const GOP: usize = 60;

/// `width` × `height` at 30 fps and `bitrate` bit/s, as a loop of whole GOPs that starts with an
/// IDR, so a decoder can follow it round and round (and any multiple of `GOP` is an IDR).
pub fn h264(width: usize, height: usize, bitrate: u32) -> anyhow::Result<Vec<Vec<u8>>> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bitrate))
        .max_frame_rate(FrameRate::from_hz(30.0))
        .rate_control_mode(RateControlMode::Bitrate)
        .intra_frame_period(IntraFramePeriod::from_num_frames(GOP as u32))
        .skip_frames(true);
    let mut encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), config)?;
    let mut yuv = vec![0u8; width * height * 3 / 2];
    let mut out = Vec::new();
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    // The square and the gradient move with the frame number and scale with the picture, so
    // every layer shows the same scene.
    let (sq_w, sq_h) = (width / 4, height / 4);
    for i in 0..3 * GOP {
        let (y, uv) = yuv.split_at_mut(width * height);
        for (k, p) in y.iter_mut().enumerate() {
            let (x, row) = (k % width, k / width);
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let square = (x + 4 * i * width / 640) % width < sq_w
                && (row + 2 * i * height / 480) % height < sq_h;
            *p = if square {
                220
            } else {
                ((x + row + 3 * i) % 200) as u8 + 16
            } ^ (noise as u8 & 7);
        }
        for (k, p) in uv.iter_mut().enumerate() {
            *p = 100 + ((k / (width / 2) + i) % 56) as u8;
        }
        let buf = YUVBuffer::from_vec(yuv.clone(), width, height);
        let frame = encoder.encode(&buf)?.to_vec();
        if !frame.is_empty() {
            out.push(frame);
        }
    }
    // Keep the IDR period aligned with the loop: the loop is whole groups.
    out.truncate(out.len() / GOP * GOP);
    anyhow::ensure!(!out.is_empty(), "the encoder skipped too many frames");
    Ok(out)
}
