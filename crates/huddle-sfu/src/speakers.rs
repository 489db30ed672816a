//! The loudest speakers of a room, from the audio level each packet carries (RFC 6464: 0 is
//! the loudest, 127 silence, in -dBov).
//!
//! In a room of many microphones only the loudest few are forwarded (the rest is mostly
//! background noise that costs every subscriber bandwidth and decoding), and the pages are
//! told who speaks. A speaker who was forwarded stays forwarded for a while after they stop
//! ranking, so a word is never cut in half.

use std::time::{Duration, Instant};

use crate::TrackId;

/// Microphones forwarded at once in a room that has more.
pub const MAX_FORWARDED_SPEAKERS: usize = 3;
/// Levels quieter than this (-dBov) count as silence.
const SPEAKING_LEVEL: u8 = 50;
/// How long a forwarded speaker keeps its place after falling out of the loudest.
const HOLD: Duration = Duration::from_millis(1500);
/// The smoothed level falls by half every this long without loud packets.
const DECAY: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Voice {
    track: TrackId,
    /// Smoothed loudness: 127 - level, so higher is louder.
    loudness: f32,
    updated: Instant,
    /// Until when this voice is forwarded regardless of its rank.
    held_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Speakers {
    voices: Vec<Voice>,
    /// The last ranking reported, loudest first.
    reported: Vec<TrackId>,
}

impl Speakers {
    pub(crate) fn add(&mut self, track: TrackId, now: Instant) {
        self.voices.push(Voice {
            track,
            loudness: 0.0,
            updated: now,
            held_until: None,
        });
    }

    pub(crate) fn remove(&mut self, track: TrackId) {
        self.voices.retain(|v| v.track != track);
        self.reported.retain(|t| *t != track);
    }

    /// A packet of `track` with `level` arrived; whether it is forwarded.
    pub(crate) fn on_audio(&mut self, track: TrackId, level: Option<u8>, now: Instant) -> bool {
        let Some(i) = self.voices.iter().position(|v| v.track == track) else {
            return false;
        };
        let v = &mut self.voices[i];
        let sample = f32::from(127 - level.unwrap_or(127).min(127));
        let decay = decay_factor(now.saturating_duration_since(v.updated));
        v.loudness = (v.loudness * decay).max(sample * 0.3 + v.loudness * decay * 0.7);
        v.updated = now;
        let loudness = v.loudness;
        if self.voices.len() <= MAX_FORWARDED_SPEAKERS {
            return true;
        }
        // Only a voice loud enough to speak is ranked (most microphones of a large room are
        // quiet, and ranking one walks every voice).
        if loudness >= f32::from(127 - SPEAKING_LEVEL) {
            let louder = self
                .voices
                .iter()
                .filter(|o| o.track != track && current(o, now) > loudness)
                .count();
            if louder < MAX_FORWARDED_SPEAKERS {
                self.voices[i].held_until = Some(now + HOLD);
            }
        }
        self.voices[i].held_until.is_some_and(|t| now < t)
    }

    /// Whether `track` is forwarded now (or would be, in a room of few microphones).
    pub(crate) fn held(&self, track: TrackId, now: Instant) -> bool {
        self.voices.len() <= MAX_FORWARDED_SPEAKERS
            || self
                .voices
                .iter()
                .any(|v| v.track == track && v.held_until.is_some_and(|t| now < t))
    }

    /// The speaking tracks, loudest first, if that changed since the last call.
    pub(crate) fn changed_ranking(&mut self, now: Instant) -> Option<Vec<TrackId>> {
        let mut speaking: Vec<(f32, TrackId)> = self
            .voices
            .iter()
            .map(|v| (current(v, now), v.track))
            .filter(|(l, _)| *l >= f32::from(127 - SPEAKING_LEVEL))
            .collect();
        speaking.sort_by(|a, b| b.0.total_cmp(&a.0));
        let ranking: Vec<TrackId> = speaking.into_iter().map(|(_, t)| t).collect();
        if ranking == self.reported {
            return None;
        }
        self.reported = ranking.clone();
        Some(ranking)
    }
}

/// A voice's loudness as of `now`, decayed since its last packet.
fn current(v: &Voice, now: Instant) -> f32 {
    v.loudness * decay_factor(now.saturating_duration_since(v.updated))
}

fn decay_factor(elapsed: Duration) -> f32 {
    0.5f32.powf(elapsed.as_secs_f32() / DECAY.as_secs_f32())
}
