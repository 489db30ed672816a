//! One subscription's forwarding state: which layer flows, which one it moves to, and the
//! RTP time rebase that keeps the subscriber's timestamps continuous across a switch.
//!
//! A switch happens only at a keyframe of the target layer; until one arrives the current
//! layer keeps flowing (LiveKit's simulcast selector does the same), so a switch never shows
//! a frozen or corrupt picture. Each layer has its own RTP clock offset at the publisher, so
//! the first frame of the new layer is placed at the previous frame's time plus the wall time
//! since, and every later frame of that layer keeps the same offset.

use std::time::Instant;

use crate::Layer;

#[derive(Debug)]
pub(crate) struct Forwarding {
    /// The layer the allocator chose; None pauses the subscription.
    pub target: Option<Layer>,
    /// The layer being forwarded; None until a keyframe of the target arrives.
    pub current: Option<Layer>,
    /// Added to the publisher's RTP time (wrapping: RTP time is modular).
    offset: u64,
    /// The last forwarded frame's RTP time and when it was forwarded.
    last: Option<(u64, Instant)>,
}

impl Forwarding {
    /// Waits for a keyframe of `target` (video).
    pub(crate) fn new(target: Option<Layer>) -> Self {
        Forwarding {
            target,
            current: None,
            offset: 0,
            last: None,
        }
    }

    /// Forwards `layer` from its first frame (audio: every frame can start a stream).
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

    /// A frame of `layer` at RTP time `time` (`hz` ticks a second) arrived: the time to
    /// forward it at, or None if this subscription does not take it.
    pub(crate) fn on_frame(
        &mut self,
        layer: Layer,
        keyframe: bool,
        time: u64,
        hz: u32,
        now: Instant,
    ) -> Option<u64> {
        if self.current != Some(layer) {
            if self.target != Some(layer) || !keyframe {
                return None;
            }
            self.current = Some(layer);
            if let Some((last, at)) = self.last {
                let elapsed = now.saturating_duration_since(at);
                let ticks = (elapsed.as_micros() as u64 * u64::from(hz) / 1_000_000).max(1);
                self.offset = last.wrapping_add(ticks).wrapping_sub(time);
            }
        }
        let out = time.wrapping_add(self.offset);
        self.last = Some((out, now));
        Some(out)
    }
}
