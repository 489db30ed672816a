//! Per-connection message rate limit.

use std::time::Instant;

/// A token bucket: `burst` messages at once, refilled at `per_second`.
///
/// A join into a full mesh room legitimately bursts (one offer and a dozen trickled candidates per
/// peer), so the burst is generous; what it stops is a client that *sustains* more than `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            last: now,
        }
    }

    /// Whether the bucket would be full at `now`: its owner has been quiet long enough that
    /// forgetting the bucket changes nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.per_second >= self.burst
    }

    /// Whether [`TokenBucket::take`] would refuse at `now`.
    pub fn is_empty(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.per_second < 1.0
    }

    /// Takes one token; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(1, now)
    }

    /// Takes `n` tokens at once (a message that costs as much as `n` small ones); `false`, and
    /// nothing taken, when fewer are left.
    pub fn take_n(&mut self, n: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn full_again_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 10, t0);
        assert!(b.is_full(t0));
        assert!(!b.is_empty(t0));
        assert!(b.take(t0));
        assert!(!b.is_full(t0));
        assert!(!b.is_full(t0 + Duration::from_millis(400)));
        assert!(b.is_full(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        assert!((0..100).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 50/s sustained is allowed indefinitely...
        let mut now = t0;
        for _ in 0..1000 {
            now += Duration::from_millis(20);
            assert!(b.take(now));
        }
        // ...60/s is not.
        let mut refused = 0;
        for _ in 0..1000 {
            now += Duration::from_micros(16_667);
            if !b.take(now) {
                refused += 1;
            }
        }
        assert!(refused > 100, "refused {refused}");
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }
}
