//! Layer choice for one subscriber: which layer of each video track it receives.
//!
//! The inputs are what LiveKit's stream allocator and adaptive stream use: the subscriber's
//! bandwidth estimate, what each layer costs (measured at the publisher), and how the page
//! shows each tile (visible or not, and its size). Audio is served first, screen shares
//! before cameras; within a priority every track gets a layer before any gets a second.

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
    /// Size of the top layer (0 unknown); each layer below is half as wide and high
    /// (browsers' `scaleResolutionDownBy` 4, 2, 1).
    pub width: u32,
    pub height: u32,
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
        if self.view.width == 0 || self.width == 0 {
            return Some(Layer(top));
        }
        let fits = (0..=top).find(|&l| {
            let shift = u32::from(top - l);
            (self.width >> shift) >= self.view.width && (self.height >> shift) >= self.view.height
        });
        Some(Layer(fits.unwrap_or(top)))
    }
}

/// Bits per second kept for each audio track before any video is placed.
pub(crate) const AUDIO_RESERVE_BPS: u64 = 48_000;

/// The layer of each track in `tracks` (None: paused), for `estimate` bits per second of
/// video and audio together (None: unknown, every tile gets the layer its size asks for).
pub(crate) fn allocate(
    tracks: &[Wanted],
    audio_tracks: usize,
    estimate: Option<u64>,
) -> Vec<Option<Layer>> {
    let caps: Vec<Option<Layer>> = tracks.iter().map(Wanted::cap).collect();
    let Some(estimate) = estimate else {
        return caps;
    };
    let mut budget = estimate.saturating_sub(AUDIO_RESERVE_BPS * audio_tracks as u64);
    let mut chosen: Vec<Option<Layer>> = vec![None; tracks.len()];
    // Screen shares first, then in the order given (the host lists by subscription age).
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|&i| !tracks[i].screen);
    for &i in &order {
        let cost = tracks[i].rates.bps[0];
        if caps[i].is_some() && cost <= budget {
            chosen[i] = Some(Layer(0));
            budget -= cost;
        }
    }
    // Upgrades one layer at a time: the highest priority, then the lowest layer, first.
    loop {
        let next = order
            .iter()
            .copied()
            .filter(|&i| matches!((chosen[i], caps[i]), (Some(c), Some(cap)) if c < cap))
            .filter(|&i| {
                let Some(Layer(c)) = chosen[i] else {
                    return false;
                };
                let r = &tracks[i].rates.bps;
                r[usize::from(c) + 1].saturating_sub(r[usize::from(c)]) <= budget
            })
            .min_by_key(|&i| (!tracks[i].screen, chosen[i]));
        let Some(i) = next else { break };
        let Some(Layer(c)) = chosen[i] else { break };
        let r = &tracks[i].rates.bps;
        budget -= r[usize::from(c) + 1].saturating_sub(r[usize::from(c)]);
        chosen[i] = Some(Layer(c + 1));
    }
    chosen
}
