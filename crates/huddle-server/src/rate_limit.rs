//! Token buckets per client IP: the rate of requests that cost a media session or TURN
//! credentials, and of failed authentications.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use huddle_signal_proto::TokenBucket;

/// A token bucket per client IP.
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
        table.buckets.get(&ip).is_some_and(|b| b.is_empty(now))
    }

    pub fn new(per_second: u32, burst: u32) -> Self {
        Self(Arc::new(Mutex::new(RateTable {
            buckets: HashMap::new(),
            per_second,
            burst,
        })))
    }

    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if table.buckets.len() >= RATE_TRACKED {
            table.buckets.retain(|_, b| !b.is_full(now));
            if table.buckets.len() >= RATE_TRACKED {
                // Tens of thousands of addresses all busy at once: start afresh rather than
                // grow without bound.
                table.buckets.clear();
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
