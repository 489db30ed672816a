//! Maps keyed by the ids the server hands out itself ([`SessionId`](crate::SessionId),
//! [`TrackId`](crate::TrackId)), with a multiplicative hash instead of SipHash.
//!
//! Every forwarded packet looks up each subscriber of its track, and the engine each session it
//! writes to: with SipHash (~20 ns a `u64`) those lookups were most of `Sfu::route`'s time in a
//! room of a hundred. SipHash's keyed randomness defends maps whose keys a client chooses
//! (hash flooding); these keys are counters of the server's own, so a client cannot pick them.
//! Maps keyed by anything a client sends — room names, addresses — keep the standard hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` for server-assigned ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of each word written (the constant is 2^64 / φ, odd), folded into the
/// state: rustc's `FxHasher` does the same. The high bits, which hashbrown's control bytes
/// use, depend on every bit of the id.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    #[test]
    fn consecutive_ids_spread_over_the_high_bits() {
        let mut tops = std::collections::HashSet::new();
        for id in 0..128u64 {
            let mut h = IdHasher::default();
            std::hash::Hash::hash(&SessionId(id), &mut h);
            tops.insert(h.finish() >> 57);
        }
        // 128 ids over hashbrown's 7-bit control byte: most values taken, no pile-up.
        assert!(tops.len() > 64, "{}", tops.len());
    }
}
