//! Which of a subscriber's subscriptions are on a line of its connection.
//!
//! A member subscribes to every track of its room, but its connection carries at most
//! [`VIDEO_LINES`] video and [`AUDIO_LINES`] audio lines, and a line freed by one track is
//! given to the next (Jitsi's bridge rewrites SSRCs for the same reason). Every line is a media
//! section of every offer and answer of that connection, so a line per track would make a room
//! of a hundred renegotiate two hundred sections with each of its pages at every arrival — SDP
//! work growing with the cube of the room — and most of those lines would carry nothing: a page
//! shows 25 tiles at a time and hears the loudest three.
//!
//! Video lines go to the tiles on screen, screen shares first; a hidden tile keeps its line
//! until a tile on screen needs one, and gets none while it is hidden. Audio lines go to the
//! microphones as they are forwarded: a speaker who starts to rank takes the line of the one
//! forwarded longest ago.

use crate::TrackId;

/// Video lines of a receiving connection: a page of the grid (25) and a few screen shares.
pub const VIDEO_LINES: usize = 32;
/// Audio lines of a receiving connection: the microphones forwarded at once, and as many
/// again for those who stop ranking but are held so that no word is cut.
pub const AUDIO_LINES: usize = 2 * crate::speakers::MAX_FORWARDED_SPEAKERS;

/// One video subscription as line choice sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VideoCandidate {
    pub track: TrackId,
    pub visible: bool,
    pub screen: bool,
    pub lined: bool,
}

/// Whether each candidate is to be on a line, in the candidates' order: tiles on screen first
/// (screen shares before cameras), then those that have a line already, then the oldest track.
/// A tile off screen keeps a line it has but is given none: a line, once offered, is the
/// connection's for good.
pub(crate) fn choose_video(candidates: &[VideoCandidate]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].visible || candidates[i].lined)
        .collect();
    order.sort_by_key(|&i| {
        let c = &candidates[i];
        (!c.visible, !c.screen, !c.lined, c.track)
    });
    let mut lined = vec![false; candidates.len()];
    for i in order.into_iter().take(VIDEO_LINES) {
        lined[i] = true;
    }
    lined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(track: u64, visible: bool, lined: bool) -> VideoCandidate {
        VideoCandidate {
            track: TrackId(track),
            visible,
            screen: false,
            lined,
        }
    }

    #[test]
    fn every_tile_on_screen_has_a_line_while_there_are_enough_and_hidden_ones_get_none() {
        let c: Vec<_> = (0..VIDEO_LINES as u64)
            .map(|t| camera(t, t % 2 == 0, false))
            .collect();
        let lined = choose_video(&c);
        for (c, lined) in c.iter().zip(lined) {
            assert_eq!(lined, c.visible, "track {:?}", c.track);
        }
    }

    #[test]
    fn tiles_on_screen_take_the_lines_of_hidden_ones() {
        // Lines all taken by hidden tiles; two tiles without a line come on screen.
        let mut c: Vec<_> = (0..VIDEO_LINES as u64)
            .map(|t| camera(t, false, true))
            .collect();
        c.push(camera(100, true, false));
        c.push(camera(101, true, false));
        let lined = choose_video(&c);
        assert!(lined[VIDEO_LINES] && lined[VIDEO_LINES + 1]);
        // The newest hidden tracks give their lines up; the others keep theirs.
        assert_eq!(lined.iter().filter(|l| **l).count(), VIDEO_LINES);
        assert!(!lined[VIDEO_LINES - 1] && !lined[VIDEO_LINES - 2]);
        assert!(lined[..VIDEO_LINES - 2].iter().all(|l| *l));
    }

    #[test]
    fn a_hidden_tile_keeps_its_line_against_another_hidden_one() {
        let mut c: Vec<_> = (1..=VIDEO_LINES as u64)
            .map(|t| camera(t, false, true))
            .collect();
        // An older track, hidden and without a line, does not take one.
        c.push(camera(0, false, false));
        let lined = choose_video(&c);
        assert!(!lined[VIDEO_LINES]);
    }

    #[test]
    fn screen_shares_on_screen_come_first() {
        let mut c: Vec<_> = (0..VIDEO_LINES as u64)
            .map(|t| camera(t, true, true))
            .collect();
        c.push(VideoCandidate {
            track: TrackId(500),
            visible: true,
            screen: true,
            lined: false,
        });
        let lined = choose_video(&c);
        assert!(lined[VIDEO_LINES]);
        assert!(!lined[VIDEO_LINES - 1]);
    }
}
