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
    /// The media peer's sessions: each a stream or two (WHIP, WHEP, SFU pages, echo).
    pub media_sessions: usize,
    /// Share of one core this process used since the last heartbeat (1.0 = a whole core).
    pub cpu: f64,
    /// Unix seconds when the node started.
    pub started: u64,
}

impl NodeRecord {
    /// What placement compares: people (and the media sessions that come without a page: WHIP,
    /// WHEP, echo) weigh more than empty rooms, and CPU (which a node's transcoders or a
    /// neighbour can take) breaks the ties.
    fn load(&self) -> (usize, usize, u64) {
        let people = self.participants.max(self.media_sessions / 2);
        (people, self.rooms, (self.cpu * 1000.0) as u64)
    }
}

/// The node for a new room: of two live, non-draining nodes, the less loaded (the "power of two
/// choices": near-best balance without every node herding onto the one that looked emptiest a
/// heartbeat ago). One choice is `here`, the node the first page reached, when it takes rooms —
/// it wins ties, which spares that page a second connection — the other is picked at random.
pub fn choose<'a, R: Rng>(
    nodes: &'a [NodeRecord],
    here: &str,
    rng: &mut R,
) -> Option<&'a NodeRecord> {
    let live: Vec<&NodeRecord> = nodes.iter().filter(|n| !n.draining).collect();
    let first = match live.iter().position(|n| n.id == here) {
        Some(i) => i,
        None if live.is_empty() => return None,
        None => rng.random_range(0..live.len()),
    };
    if live.len() == 1 {
        return Some(live[first]);
    }
    let second = (first + rng.random_range(1..live.len())) % live.len();
    // `min_by_key` keeps the first of equals: `here` on a tie.
    Some(std::cmp::min_by_key(live[first], live[second], |n| {
        n.load()
    }))
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
            media_sessions: 0,
            cpu: 0.0,
            started: 0,
        }
    }

    #[test]
    fn a_draining_node_is_never_chosen_and_none_live_means_none() {
        let mut rng = StdRng::seed_from_u64(1);
        let nodes = [node("a", 0, true), node("b", 50, false)];
        for _ in 0..100 {
            assert_eq!(choose(&nodes, "a", &mut rng).unwrap().id, "b");
        }
        assert!(choose(&[node("a", 0, true)], "a", &mut rng).is_none());
        assert!(choose(&[], "a", &mut rng).is_none());
    }

    #[test]
    fn the_node_reached_keeps_a_room_unless_the_other_choice_is_lighter() {
        let mut rng = StdRng::seed_from_u64(2);
        let nodes = [
            node("a", 10, false),
            node("b", 20, false),
            node("c", 30, false),
        ];
        let mut wins = std::collections::HashMap::new();
        for _ in 0..3000 {
            *wins
                .entry(choose(&nodes, "c", &mut rng).unwrap().id.clone())
                .or_insert(0) += 1;
        }
        // The heaviest, reached first, always loses to the other choice: a and b, half each.
        assert!(!wins.contains_key("c"), "{wins:?}");
        assert!((1300..1700).contains(&wins["a"]), "{wins:?}");
        // The lightest keeps every room it is reached for; equals keep theirs too.
        assert!((0..100).all(|_| choose(&nodes, "a", &mut rng).unwrap().id == "a"));
        let even = [node("a", 5, false), node("b", 5, false)];
        assert!((0..100).all(|_| choose(&even, "b", &mut rng).unwrap().id == "b"));
        // A node that takes no rooms (draining, unknown) is not a choice: two random live ones.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(choose(&nodes, "gone", &mut rng).unwrap().id.clone());
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn node_ids_are_key_safe() {
        assert!(valid_id("node-1.eu_west"));
        for bad in ["", "a|b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
