//! Token buckets per client IP: the rate of requests that cost a media session or TURN
//! credentials, and of failed authentications.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use huddle_signal_proto::TokenBucket;

pub use huddle_turn_proto::client_key;

/// A token bucket per client (by [`client_key`]).
#[derive(Clone)]
pub struct PerIpRate(Arc<Mutex<RateTable>>);

struct RateTable {
    buckets: HashMap<IpAddr, TokenBucket>,
    per_second: u32,
    burst: u32,
}

/// Addresses tracked at once; past it, those whose bucket has refilled are forgotten.
const RATE_TRACKED: usize = 65_536;

impl PerIpRate {
    /// Whether `ip` has spent its budget, without spending more.
    pub fn exhausted(&self, ip: IpAddr, now: Instant) -> bool {
        let table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        table
            .buckets
            .get(&client_key(ip))
            .is_some_and(|b| b.is_empty(now))
    }

    pub fn new(per_second: u32, burst: u32) -> Self {
        Self(Arc::new(Mutex::new(RateTable {
            buckets: HashMap::new(),
            per_second,
            burst,
        })))
    }

    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = client_key(ip);
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if table.buckets.len() >= RATE_TRACKED && !table.buckets.contains_key(&ip) {
            table.buckets.retain(|_, b| !b.is_full(now));
            if table.buckets.len() >= RATE_TRACKED {
                // Tens of thousands of addresses all busy at once: a new one goes untracked
                // rather than the table growing without bound — or being cleared, which would
                // hand every tracked address a fresh budget.
                return true;
            }
        }
        let (per_second, burst) = (table.per_second, table.burst);
        table
            .buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(per_second, burst, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_64_shares_one_budget() {
        let rate = PerIpRate::new(1, 3);
        let now = Instant::now();
        let hosts = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4"];
        let admitted: Vec<bool> = hosts
            .iter()
            .map(|h| rate.admit(h.parse().unwrap(), now))
            .collect();
        assert_eq!(admitted, [true, true, true, false]);
        assert!(rate.exhausted("2001:db8::99".parse().unwrap(), now));
    }
}
