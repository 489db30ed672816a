//! One subscription's forwarding state: which layer flows, which one it moves to, and the
//! rewriting of RTP sequence numbers and timestamps that makes what the subscriber receives
//! one continuous stream.
//!
//! A switch happens only at a keyframe of the target layer; until one arrives the current
//! layer keeps flowing (LiveKit's simulcast selector does the same), so a switch never shows
//! a frozen or corrupt picture.
//!
//! Each layer is its own RTP stream at the publisher, with its own sequence numbers and its
//! own clock offset. The subscriber sees one stream: a *run* is a stretch of packets forwarded
//! back to back from one layer, and at the start of each run the sequence numbers are shifted
//! to follow the last one sent. Within a run a gap stays a gap (a packet lost on the way in is
//! still missing, so the subscriber's NACK and the publisher's retransmission can fill it), and
//! a packet from before the run began (late, or a retransmission of the old layer's time) is
//! not forwarded. A new layer's first packet is placed at the previous packet's RTP time plus
//! the wall time since; every later packet of that layer keeps the same time offset.

use std::time::Instant;

use crate::Layer;

#[derive(Debug)]
pub(crate) struct Forwarding {
    /// The layer the allocator chose; None pauses the subscription.
    pub target: Option<Layer>,
    /// The layer being forwarded; None until a keyframe of the target arrives.
    pub current: Option<Layer>,
    /// Whether the next packet of `current` continues the run (false: it starts one).
    running: bool,
    /// The publisher's first sequence number of this run: anything older is not forwarded.
    run_start: u64,
    /// Added to the publisher's sequence number (wrapping: the offset may be "negative").
    seq_offset: u64,
    /// Added to the publisher's RTP time (wrapping: RTP time is modular).
    time_offset: u64,
    /// The highest sequence number sent, and the last RTP time sent with when it was sent.
    last: Option<Sent>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    time: u64,
    at: Instant,
}

/// Where one forwarded packet goes in the subscriber's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rewritten {
    pub seq: u64,
    pub time: u64,
    /// The packet starts a run: codec-level counters (VP8's picture id) continue from here.
    pub starts_run: bool,
}

/// A packet as a subscription sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Incoming {
    pub layer: Layer,
    pub keyframe: bool,
    pub seq: u64,
    pub time: u64,
    pub hz: u32,
    /// The track withheld packets just before this one (audio of a quiet speaker): a new run.
    pub after_gap: bool,
}

impl Forwarding {
    /// Waits for a keyframe of `target` (video).
    pub(crate) fn new(target: Option<Layer>) -> Self {
        Forwarding {
            target,
            current: None,
            running: false,
            run_start: 0,
            seq_offset: 0,
            time_offset: 0,
            last: None,
        }
    }

    /// Forwards `layer` from its first packet (audio: every packet can start a stream).
    pub(crate) fn flowing(layer: Layer) -> Self {
        Forwarding {
            current: Some(layer),
            ..Forwarding::new(Some(layer))
        }
    }

    /// Moves to `target`; pausing takes effect at once, a new layer at its next keyframe.
    pub(crate) fn retarget(&mut self, target: Option<Layer>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Whether the subscription waits for a keyframe of its target.
    pub(crate) fn waiting(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// A packet arrived: where it goes in the subscriber's stream, or None if this
    /// subscription does not take it.
    pub(crate) fn on_packet(&mut self, p: Incoming, now: Instant) -> Option<Rewritten> {
        if self.current != Some(p.layer) {
            if self.target != Some(p.layer) || !p.keyframe {
                return None;
            }
            self.current = Some(p.layer);
            self.running = false;
            if let Some(last) = self.last {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = (elapsed.as_micros() as u64 * u64::from(p.hz) / 1_000_000).max(1);
                self.time_offset = last.time.wrapping_add(ticks).wrapping_sub(p.time);
            }
        }
        let starts_run = !self.running || p.after_gap;
        if starts_run {
            // The subscription's stream starts at 0 (the host places it on its line's
            // stream); later runs follow the last sent.
            let first = self.last.map_or(0, |l| l.seq.wrapping_add(1));
            self.seq_offset = first.wrapping_sub(p.seq);
            self.run_start = p.seq;
            self.running = true;
        } else if p.seq < self.run_start {
            return None;
        }
        let seq = p.seq.wrapping_add(self.seq_offset);
        let time = p.time.wrapping_add(self.time_offset);
        let highest = self.last.map_or(seq, |l| l.seq.max(seq));
        self.last = Some(Sent {
            seq: highest,
            time,
            at: now,
        });
        Some(Rewritten {
            seq,
            time,
            starts_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn packet(layer: u8, keyframe: bool, seq: u64, time: u64) -> Incoming {
        Incoming {
            layer: Layer(layer),
            keyframe,
            seq,
            time,
            hz: 90_000,
            after_gap: false,
        }
    }

    #[test]
    fn sequence_numbers_stay_continuous_across_a_layer_switch_and_gaps_stay_gaps() {
        let now = Instant::now();
        let mut f = Forwarding::new(Some(Layer(0)));
        assert_eq!(f.on_packet(packet(0, false, 70_000, 100), now), None);
        let first = f.on_packet(packet(0, true, 70_000, 100), now).unwrap();
        assert_eq!((first.seq, first.starts_run), (0, true));
        // A loss within the run is kept, so the subscriber can ask for it.
        let after_loss = f.on_packet(packet(0, false, 70_002, 100), now).unwrap();
        assert_eq!(after_loss.seq, first.seq + 2);
        let filled = f.on_packet(packet(0, false, 70_001, 100), now).unwrap();
        assert_eq!(filled.seq, first.seq + 1);
        // Switch up: the old layer flows until the new one's keyframe.
        f.retarget(Some(Layer(2)));
        assert!(f.on_packet(packet(2, false, 5, 9_000_000), now).is_none());
        assert!(f.on_packet(packet(0, false, 70_003, 3_100), now).is_some());
        let later = now + Duration::from_millis(33);
        let switched = f.on_packet(packet(2, true, 9, 9_003_000), later).unwrap();
        assert_eq!(switched.seq, first.seq + 4);
        assert!(switched.starts_run);
        assert_eq!(
            switched.time,
            3_100 + 2_970,
            "33 ms at 90 kHz after the last"
        );
        // Old-layer stragglers and packets from before the switch are dropped.
        assert!(
            f.on_packet(packet(0, false, 70_004, 6_100), later)
                .is_none()
        );
        assert!(f.on_packet(packet(2, false, 8, 9_003_000), later).is_none());
        assert_eq!(
            f.on_packet(packet(2, false, 10, 9_003_000), later)
                .unwrap()
                .seq,
            first.seq + 5
        );
    }

    #[test]
    fn withheld_packets_leave_no_gap() {
        let now = Instant::now();
        let mut f = Forwarding::flowing(Layer(0));
        let a = f.on_packet(packet(0, false, 1_000, 0), now).unwrap();
        let gap = Incoming {
            after_gap: true,
            ..packet(0, false, 1_050, 48_000)
        };
        let b = f.on_packet(gap, now).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.time, 48_000, "the same clock: time is not rebased");
    }
}
