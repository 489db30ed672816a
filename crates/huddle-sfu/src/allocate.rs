//! Layer choice for one subscriber: which layer of each video track it receives.
//!
//! The inputs are what LiveKit's stream allocator and adaptive stream use: the subscriber's
//! bandwidth estimate, what each layer costs (measured at the publisher), and how the page
//! shows each tile (visible or not, and its size). Audio is served first, screen shares
//! before cameras; every tile on screen gets its smallest layer whatever the estimate, and the
//! estimate decides the upgrades: within a priority every track gets a second layer before any
//! gets a third.

use crate::{Layer, MAX_LAYERS};

/// How a subscriber's page shows one track's tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// A tile off the page (another page of the grid, a hidden tab) receives no video.
    pub visible: bool,
    /// The tile's size in device pixels; 0 when the page has not said (no cap).
    pub width: u32,
    pub height: u32,
}

impl View {
    /// Off screen, size unknown.
    pub const HIDDEN: View = View {
        visible: false,
        width: 0,
        height: 0,
    };
}

impl Default for View {
    fn default() -> Self {
        View {
            visible: true,
            width: 0,
            height: 0,
        }
    }
}

/// What each layer of a track carries, in bits per second, smallest layer first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerRates {
    pub bps: [u64; MAX_LAYERS],
    pub layers: u8,
}

/// One video track to place, as the allocator sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    pub view: View,
    pub rates: LayerRates,
    /// Each layer's size as last seen in a keyframe, (0, 0) where unknown; a layer of unknown
    /// size is taken as half as wide and high as the one above (browsers'
    /// `scaleResolutionDownBy` 4, 2, 1).
    pub sizes: [(u32, u32); MAX_LAYERS],
    /// Layers that may be chosen: a layer the publisher was asked for and did not send (an
    /// encoder that drops its top layer for a small camera or a busy CPU) is not, for a while.
    pub usable: [bool; MAX_LAYERS],
    /// Screen shares are placed before cameras.
    pub screen: bool,
}

impl Wanted {
    /// The smallest layer at least as large as the tile; the top one if no size is known.
    fn cap(&self) -> Option<Layer> {
        if !self.view.visible || self.rates.layers == 0 {
            return None;
        }
        let top = self.rates.layers - 1;
        // The largest layer whose size is known anchors the guesses for the others.
        let known = (0..=top)
            .rev()
            .find(|&l| self.sizes[usize::from(l)] != (0, 0));
        let (Some(anchor), true) = (known, self.view.width > 0) else {
            return Some(self.nearest_usable(Layer(top)));
        };
        let size = |l: u8| match self.sizes[usize::from(l)] {
            (0, 0) => {
                let (w, h) = self.sizes[usize::from(anchor)];
                let shift = |v: u32| match l.cmp(&anchor) {
                    std::cmp::Ordering::Less => v >> (anchor - l),
                    _ => v << (l - anchor).min(4),
                };
                (shift(w), shift(h))
            }
            known => known,
        };
        let fits = (0..=top).find(|&l| {
            let (w, h) = size(l);
            w >= self.view.width && h >= self.view.height
        });
        Some(self.nearest_usable(Layer(fits.unwrap_or(top))))
    }

    /// `want`, or the largest usable layer below it, or the smallest above; the smallest layer
    /// if none is usable (the one an encoder is likeliest to send).
    fn nearest_usable(&self, want: Layer) -> Layer {
        let top = self.rates.layers.saturating_sub(1);
        let usable = |l: &u8| self.usable[usize::from(*l)];
        (0..=want.0)
            .rev()
            .find(usable)
            .or_else(|| (want.0..=top).find(usable))
            .map_or(Layer(0), Layer)
    }

    /// The smallest usable layer (where a paused track starts).
    fn lowest(&self) -> Layer {
        self.nearest_usable(Layer(0))
    }

    /// The next usable layer above `c`, up to `cap`.
    fn above(&self, c: Layer, cap: Layer) -> Option<Layer> {
        (c.0 + 1..=cap.0)
            .find(|l| self.usable[usize::from(*l)])
            .map(Layer)
    }
}

/// Bits per second kept for each audio track before any video is placed.
pub(crate) const AUDIO_RESERVE_BPS: u64 = 48_000;

/// A subscriber's layers and what its link should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// The layer of each track (None: its tile is hidden).
    pub layers: Vec<Option<Layer>>,
    /// The layer each track's tile asks for, whatever the link (None: hidden).
    pub caps: Vec<Option<Layer>>,
    /// Bits per second of everything chosen, and of everything at the layer its tile asks for:
    /// the estimator keeps `used` plus the next upgrade flowing and probes towards `desired`.
    pub used: u64,
    pub next_upgrade: u64,
    pub desired: u64,
}

/// The layer of each track in `tracks`, for `estimate` bits per second of video and audio
/// together (None: unknown, every tile gets the layer its size asks for).
pub(crate) fn allocate(
    tracks: &[Wanted],
    audio_tracks: usize,
    estimate: Option<u64>,
) -> Allocation {
    let caps: Vec<Option<Layer>> = tracks.iter().map(Wanted::cap).collect();
    let audio = AUDIO_RESERVE_BPS * audio_tracks as u64;
    let cost =
        |i: usize, l: Option<Layer>| l.map_or(0, |Layer(l)| tracks[i].rates.bps[usize::from(l)]);
    let used = |layers: &[Option<Layer>]| {
        audio + (0..tracks.len()).map(|i| cost(i, layers[i])).sum::<u64>()
    };
    let desired = used(&caps);
    let finish = |layers: Vec<Option<Layer>>| {
        let used = used(&layers);
        let next_upgrade = (0..tracks.len())
            .filter(|&i| layers[i] < caps[i])
            .filter_map(|i| {
                let Layer(l) = layers[i]?;
                Some(cost(i, Some(Layer(l + 1))).saturating_sub(cost(i, Some(Layer(l)))))
            })
            .min()
            .unwrap_or(0);
        Allocation {
            layers,
            caps: caps.clone(),
            used,
            next_upgrade,
            desired,
        }
    };
    let Some(estimate) = estimate else {
        return finish(caps.clone());
    };
    // Every tile on screen shows a picture, however short the link: its smallest layer is
    // never withheld. An estimate measured while little was sent (str0m's, like libwebrtc's,
    // falls towards what was acknowledged when delay rises) would otherwise pause the very
    // tracks that could raise it, and a tile would stay black for good.
    let mut chosen: Vec<Option<Layer>> = (0..tracks.len())
        .map(|i| Some(tracks[i].lowest().min(caps[i]?)))
        .collect();
    let mut budget = estimate.saturating_sub(used(&chosen));
    // Upgrades one layer at a time: screen shares first, then the lowest layer first, then in
    // the order given (the host lists by subscription age).
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|&i| !tracks[i].screen);
    let step = |i: usize, c: Layer| -> Option<(Layer, u64)> {
        let next = tracks[i].above(c, caps[i]?)?;
        let r = &tracks[i].rates.bps;
        Some((
            next,
            r[usize::from(next.0)].saturating_sub(r[usize::from(c.0)]),
        ))
    };
    loop {
        let next = order
            .iter()
            .copied()
            .filter_map(|i| {
                let (to, cost) = step(i, chosen[i]?)?;
                (cost <= budget).then_some((i, to, cost))
            })
            .min_by_key(|&(i, _, _)| (!tracks[i].screen, chosen[i]));
        let Some((i, to, cost)) = next else { break };
        budget -= cost;
        chosen[i] = Some(to);
    }
    finish(chosen)
}
