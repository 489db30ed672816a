//! A node as the cluster sees it: the record it keeps in Redis, and the choice of a node for a
//! new room.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// What a node publishes about itself under `huddle:node:{id}`, refreshed every heartbeat and
/// gone when it stops refreshing it: the key's expiry is the node's liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Where browsers and media reach this node (`--public-url`).
    pub url: String,
    /// Stopping: takes no new rooms, its pages are moving away.
    pub draining: bool,
    pub rooms: usize,
    pub participants: usize,
    /// Share of one core this process used since the last heartbeat (1.0 = a whole core).
    pub cpu: f64,
    /// Unix seconds when the node started.
    pub started: u64,
}

impl NodeRecord {
    /// What placement compares: people weigh more than empty rooms, and CPU (which a node's
    /// transcoders or a neighbour can take) breaks the ties.
    fn load(&self) -> (usize, usize, u64) {
        (self.participants, self.rooms, (self.cpu * 1000.0) as u64)
    }
}

/// The node for a new room: of two live, non-draining nodes picked at random, the less loaded
/// (the "power of two choices": near-best balance without every node herding onto the one that
/// looked emptiest a heartbeat ago).
pub fn choose<'a, R: Rng>(nodes: &'a [NodeRecord], rng: &mut R) -> Option<&'a NodeRecord> {
    let live: Vec<&NodeRecord> = nodes.iter().filter(|n| !n.draining).collect();
    match live.len() {
        0 => None,
        1 => Some(live[0]),
        n => {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            Some(std::cmp::min_by_key(live[a], live[b], |n| n.load()))
        }
    }
}

/// A node id: what a Redis key and a lease may carry unescaped.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn node(id: &str, participants: usize, draining: bool) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            url: format!("https://{id}:8443"),
            draining,
            rooms: 0,
            participants,
            cpu: 0.0,
            started: 0,
        }
    }

    #[test]
    fn a_draining_node_is_never_chosen_and_none_live_means_none() {
        let mut rng = StdRng::seed_from_u64(1);
        let nodes = [node("a", 0, true), node("b", 50, false)];
        for _ in 0..100 {
            assert_eq!(choose(&nodes, &mut rng).unwrap().id, "b");
        }
        assert!(choose(&[node("a", 0, true)], &mut rng).is_none());
        assert!(choose(&[], &mut rng).is_none());
    }

    #[test]
    fn of_two_choices_the_lighter_wins_and_the_heaviest_never_does() {
        let mut rng = StdRng::seed_from_u64(2);
        let nodes = [
            node("a", 10, false),
            node("b", 20, false),
            node("c", 30, false),
        ];
        let mut wins = std::collections::HashMap::new();
        for _ in 0..3000 {
            *wins
                .entry(choose(&nodes, &mut rng).unwrap().id.clone())
                .or_insert(0) += 1;
        }
        assert!(!wins.contains_key("c"), "{wins:?}");
        // a wins whenever it is drawn (2 pairs of 3), b only against c (1 of 3).
        assert!(wins["a"] > wins["b"], "{wins:?}");
    }

    #[test]
    fn node_ids_are_key_safe() {
        assert!(valid_id("node-1.eu_west"));
        for bad in ["", "a|b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
