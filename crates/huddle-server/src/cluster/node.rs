//! A node as the cluster sees it: the record it keeps in Redis, and the choice of a node for a
//! new room.

use huddle_signal_proto::home::rendezvous_order;
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
    /// What placement compares: people, and the media sessions that come without a page
    /// (WHIP, WHEP, echo).
    fn people(&self) -> usize {
        self.participants.max(self.media_sessions / 2)
    }
}

/// A room's home node keeps it unless it has more people than its second choice by a quarter
/// and this many: rendezvous hashing alone spreads rooms evenly, not people, and a small margin
/// would send rooms (and their pages, `moved`) away from home at every difference of a call.
const SPILL_SLACK: usize = 8;

/// The node for a new room: of its two first rendezvous choices among the live, non-draining
/// nodes (`huddle_signal_proto::home`), the home unless it is clearly busier than the second —
/// the "power of two choices", with the two fixed per room so that its pages know where to go
/// (consistent hashing with bounded loads).
pub fn choose<'a>(nodes: &'a [NodeRecord], room: &str) -> Option<&'a NodeRecord> {
    let live: Vec<&NodeRecord> = nodes.iter().filter(|n| !n.draining).collect();
    let urls: Vec<&str> = live.iter().map(|n| n.url.as_str()).collect();
    let order = rendezvous_order(room, &urls);
    let home = live[*order.first()?];
    let Some(&second) = order.get(1) else {
        return Some(home);
    };
    let second = live[second];
    let busier = home.people() > second.people() + SPILL_SLACK.max(second.people() / 4);
    Some(if busier { second } else { home })
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

    fn home_of<'a>(room: &str, nodes: &'a [NodeRecord]) -> &'a str {
        let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
        &nodes[rendezvous_order(room, &urls)[0]].id
    }

    #[test]
    fn a_draining_node_is_never_chosen_and_none_live_means_none() {
        let nodes = [node("a", 0, true), node("b", 50, false)];
        for i in 0..100 {
            assert_eq!(choose(&nodes, &format!("r{i}")).unwrap().id, "b");
        }
        assert!(choose(&[node("a", 0, true)], "r").is_none());
        assert!(choose(&[], "r").is_none());
    }

    #[test]
    fn a_room_goes_home_unless_home_is_clearly_busier_than_the_second_choice() {
        let even = [
            node("a", 40, false),
            node("b", 45, false),
            node("c", 50, false),
        ];
        for i in 0..100 {
            let room = format!("r{i}");
            assert_eq!(choose(&even, &room).unwrap().id, home_of(&room, &even));
        }
        // Every room whose home is c (80 people) goes to its second choice (20); the others
        // stay home.
        let uneven = [
            node("a", 20, false),
            node("b", 20, false),
            node("c", 80, false),
        ];
        let mut spilled = 0;
        for i in 0..300 {
            let room = format!("r{i}");
            let chosen = &choose(&uneven, &room).unwrap().id;
            if home_of(&room, &uneven) == "c" {
                assert_ne!(chosen, "c");
                spilled += 1;
            } else {
                assert_eq!(chosen, home_of(&room, &uneven));
            }
        }
        assert!((60..140).contains(&spilled), "{spilled}");
    }

    #[test]
    fn node_ids_are_key_safe() {
        assert!(valid_id("node-1.eu_west"));
        for bad in ["", "a|b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
