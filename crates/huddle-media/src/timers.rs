//! Every session's next deadline in one min-heap, so finding the next wake-up and the sessions
//! due is O(log n), not a scan of every session on every datagram.
//!
//! Entries are never removed in place: a session's current deadline is kept beside the heap, and
//! entries that no longer match it are stale, skipped when they come to the top. The heap is
//! rebuilt when stale entries pile up (deadlines that keep moving), so it stays within a small
//! multiple of the session count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use huddle_sfu::SessionId;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, SessionId)>>,
    armed: HashMap<SessionId, Instant>,
}

impl Timers {
    /// Sets `id`'s deadline to `at` (replacing any earlier one).
    pub(crate) fn arm(&mut self, id: SessionId, at: Instant) {
        if self.armed.insert(id, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, id)));
        if self.heap.len() > 2 * self.armed.len() + 64 {
            self.heap = self
                .armed
                .iter()
                .map(|(id, at)| Reverse((*at, *id)))
                .collect();
        }
    }

    pub(crate) fn disarm(&mut self, id: SessionId) {
        self.armed.remove(&id);
    }

    /// The earliest deadline. Stale entries on top are dropped first: a deadline that moves with
    /// every packet (the pacer's turn after one) would otherwise wake the loop for nothing.
    pub(crate) fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.armed.get(id) == Some(at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes every session whose deadline is at or before `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<SessionId> {
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.armed.get(&id) == Some(&at) {
                self.armed.remove(&id);
                due.push(id);
            }
        }
        due
    }

    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_sessions_come_out_once_in_order_and_moved_deadlines_are_skipped() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Timers::default();
        t.arm(SessionId(1), ms(30));
        t.arm(SessionId(2), ms(10));
        t.arm(SessionId(3), ms(20));
        t.arm(SessionId(3), ms(50)); // moved later: the 20 ms entry is stale
        t.arm(SessionId(4), ms(5));
        t.disarm(SessionId(4));
        assert_eq!(
            t.next(),
            Some(ms(10)),
            "a disarmed deadline is not the next"
        );
        assert_eq!(t.pop_due(ms(25)), vec![SessionId(2)]);
        assert_eq!(t.next(), Some(ms(30)), "nor a moved one");
        assert_eq!(t.pop_due(ms(40)), vec![SessionId(1)]);
        assert!(t.pop_due(ms(40)).is_empty(), "once");
        assert_eq!(t.pop_due(ms(60)), vec![SessionId(3)]);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn deadlines_that_keep_moving_do_not_grow_the_heap() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..10_000u64 {
            t.arm(
                SessionId(i % 3),
                t0 + Duration::from_secs(3600) - Duration::from_millis(i),
            );
        }
        assert!(t.heap_len() <= 2 * 3 + 64 + 1, "{}", t.heap_len());
        assert_eq!(t.pop_due(t0 + Duration::from_secs(7200)).len(), 3);
    }
}
