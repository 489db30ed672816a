//! ChannelData messages (RFC 8656 §12.4) and stream framing for TURN over TCP/TLS (§12.5):
//! on a stream, STUN messages and ChannelData follow each other back to back, ChannelData padded
//! to a multiple of four bytes.

use crate::stun::HEADER_LEN;

/// Channel numbers a client may bind. RFC 8656 §12 narrowed the range to 0x4000–0x4FFF, but
/// RFC 5766 clients (coturn's own tools among them) still pick up to 0x7FFF; like coturn we
/// accept the old range, which still cannot collide with STUN, DTLS or RTP on the wire.
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

pub const HEADER: usize = 4;

/// Is this the first byte of a ChannelData message (top bits `01`)?
pub fn is_channel_data(first: u8) -> bool {
    first & 0xC0 == 0x40
}

/// Splits a datagram into channel number and payload, reading only the 4-byte header.
/// Bytes after the declared length (padding) are ignored, as RFC 8656 §12.5 allows.
pub fn parse(buf: &[u8]) -> Option<(u16, &[u8])> {
    if buf.len() < HEADER || !is_channel_data(buf[0]) {
        return None;
    }
    let channel = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    buf.get(HEADER..HEADER + len)
        .map(|payload| (channel, payload))
}

pub fn header(channel: u16, len: usize) -> [u8; HEADER] {
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = (len as u16).to_be_bytes();
    [c0, c1, l0, l1]
}

/// The length of a ChannelData message carrying `payload_len` bytes: padded to a multiple of
/// four on a stream (RFC 8656 §12.5), as it is over UDP.
pub fn framed_len(payload_len: usize, stream: bool) -> usize {
    match stream {
        true => (HEADER + payload_len).div_ceil(4) * 4,
        false => HEADER + payload_len,
    }
}

/// Completes a ChannelData message around a payload already at `buf[HEADER..][..payload_len]`:
/// the header in front and, on a stream, zero padding behind. Returns the message's length;
/// `buf` must hold [`framed_len`] bytes.
pub fn frame_in_place(buf: &mut [u8], channel: u16, payload_len: usize, stream: bool) -> usize {
    let len = framed_len(payload_len, stream);
    buf[..HEADER].copy_from_slice(&header(channel, payload_len));
    buf[HEADER + payload_len..len].fill(0);
    len
}

/// Why a stream cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    #[error("stream carries neither STUN nor ChannelData (first byte {0:#04x})")]
    Invalid(u8),
}

/// The length of the frame at the start of `buf`: `Ok(None)` while it is incomplete (read more),
/// `Err` when the stream is not TURN at all (close it).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = match first & 0xC0 {
        0x00 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]]))
        }
        0x40 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            framed_len(usize::from(u16::from_be_bytes([buf[2], buf[3]])), true)
        }
        _ => return Err(FramingError::Invalid(first)),
    };
    Ok((buf.len() >= len).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_frame() {
        let mut msg = header(0x4001, 3).to_vec();
        msg.extend_from_slice(b"abc\0");
        assert_eq!(parse(&msg), Some((0x4001, &b"abc"[..])));
        assert_eq!(frame_len(&msg), Ok(Some(8)));
        assert_eq!(frame_len(&msg[..7]), Ok(None));
        assert_eq!(parse(&msg[..5]), None, "payload shorter than declared");
        assert_eq!(
            frame_len(&[0x80, 0, 0, 0]),
            Err(FramingError::Invalid(0x80))
        );
        let stun_header = [0x00, 0x01, 0x00, 0x08];
        assert_eq!(frame_len(&stun_header), Ok(None));
        assert_eq!(frame_len(&[0u8; 28][..]), Ok(Some(20)));
    }

    proptest! {
        #[test]
        fn framing_never_panics_and_frames_fit(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some(n)) = frame_len(&bytes) {
                prop_assert!(n <= bytes.len() && n >= 4);
            }
            let _ = parse(&bytes);
        }

        #[test]
        fn round_trip(channel in 0x4000u16..0x5000, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut msg = header(channel, payload.len()).to_vec();
            msg.extend_from_slice(&payload);
            msg.resize(msg.len().div_ceil(4) * 4, 0);
            prop_assert_eq!(frame_len(&msg).unwrap(), Some(msg.len()));
            prop_assert_eq!(parse(&msg), Some((channel, &payload[..])));
            let mut built = vec![0xFF; HEADER + payload.len() + 3];
            built[HEADER..HEADER + payload.len()].copy_from_slice(&payload);
            let n = frame_in_place(&mut built, channel, payload.len(), true);
            prop_assert_eq!(&built[..n], &msg[..]);
            prop_assert_eq!(framed_len(payload.len(), false), HEADER + payload.len());
        }
    }
}
