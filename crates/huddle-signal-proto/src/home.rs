//! A room's home node on a cluster: where the room is placed unless that node is much busier
//! than the next choice, and so where a page connects first.
//!
//! Every node's public URL gets a weight for the room — highest-random-weight ("rendezvous")
//! hashing — and the heaviest is the room's home, the next its second choice. Nodes and pages
//! compute the same order from the same list of URLs (the page has it from the HTML it was served
//! and from `welcome.nodes`), so a page reaches its room's node without a detour through another
//! (`moved`), and a node that joins or leaves moves only the rooms it gains or loses.
//!
//! The weight is FNV-1a (32-bit) over the room's canonical name, a NUL byte and the URL,
//! finished with MurmurHash3's `fmix32`: a few lines in any language (docs/protocol.md has the
//! page's), and URLs that differ in one digit still get unrelated weights.

/// The weight of node `url` for `room` (its canonical, case-folded name).
pub fn weight(room: &str, url: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.bytes().chain([0]).chain(url.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The indices of `urls` in the order they serve `room`: its home first. Equal weights go to
/// the smaller URL, so the order never depends on the order of the list.
pub fn rendezvous_order(room: &str, urls: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..urls.len()).collect();
    order.sort_by(|&a, &b| {
        weight(room, urls[b])
            .cmp(&weight(room, urls[a]))
            .then_with(|| urls[a].cmp(urls[b]))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weights_match_the_pages_implementation() {
        // The same vectors are checked against web/signaling.js in tests/e2e/cluster.test.mjs.
        assert_eq!(weight("standup", "https://a.example:8443"), 0x0b28_fb5c);
        assert_eq!(weight("standup", "https://b.example:8443"), 0x4f25_5098);
        assert_eq!(weight("", ""), 0x0578_ab1b);
    }

    #[test]
    fn rooms_spread_over_the_nodes() {
        let urls = [
            "http://10.0.0.1:8443",
            "http://10.0.0.2:8443",
            "http://10.0.0.3:8443",
        ];
        let mut homes = [0usize; 3];
        for i in 0..3000 {
            homes[rendezvous_order(&format!("room-{i}"), &urls)[0]] += 1;
        }
        for count in homes {
            assert!((850..=1150).contains(&count), "{homes:?}");
        }
    }

    proptest! {
        #[test]
        fn a_node_leaving_moves_only_its_own_rooms(room in "[a-z0-9_-]{1,64}", gone in 0usize..4) {
            let urls = ["https://a:1", "https://b:1", "https://c:1", "https://d:1"];
            let home = rendezvous_order(&room, &urls)[0];
            let rest: Vec<&str> = urls.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, u)| *u).collect();
            let new_home = rest[rendezvous_order(&room, &rest)[0]];
            if home != gone {
                prop_assert_eq!(new_home, urls[home]);
            }
        }

        #[test]
        fn the_order_does_not_depend_on_the_lists_order(room in "[a-z0-9]{1,16}", rotate in 0usize..3) {
            let urls = ["https://a:1", "https://b:1", "https://c:1"];
            let mut rotated = urls;
            rotated.rotate_left(rotate);
            let a: Vec<&str> = rendezvous_order(&room, &urls).into_iter().map(|i| urls[i]).collect();
            let b: Vec<&str> = rendezvous_order(&room, &rotated).into_iter().map(|i| rotated[i]).collect();
            prop_assert_eq!(a, b);
        }
    }
}
