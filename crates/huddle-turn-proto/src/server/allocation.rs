//! One allocation (RFC 8656 §5): its relayed address, permissions (§9) and channels (§11).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Map;
use crate::stun::TransactionId;

/// After a channel binding expires, neither its number nor its peer may be bound differently for
/// this long (RFC 8656 §11: "the binding MUST NOT be reused ... for 5 minutes").
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

pub struct Allocation {
    /// The relay socket's address as bound.
    pub relay: SocketAddr,
    /// The address given to the client in XOR-RELAYED-ADDRESS (`--external-ip`).
    pub advertised: SocketAddr,
    pub username: String,
    pub expires: Instant,
    /// The Allocate that created it and our answer, resent on a retransmit (RFC 8656 §7.2).
    pub created_by: TransactionId,
    pub created_response: Vec<u8>,
    permissions: Map<IpAddr, Instant>,
    channels: Map<u16, Channel>,
    peer_channel: Map<SocketAddr, u16>,
    bandwidth: Option<ByteBucket>,
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Why a channel cannot be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindConflict {
    NumberTaken,
    PeerTaken,
}

impl Allocation {
    pub fn new(
        relay: SocketAddr,
        advertised: SocketAddr,
        username: String,
        expires: Instant,
        created_by: TransactionId,
        bandwidth: Option<ByteBucket>,
        hasher: &foldhash::fast::FixedState,
    ) -> Self {
        Self {
            relay,
            advertised,
            username,
            expires,
            created_by,
            created_response: Vec::new(),
            permissions: Map::with_hasher(hasher.clone()),
            channels: Map::with_hasher(hasher.clone()),
            peer_channel: Map::with_hasher(hasher.clone()),
            bandwidth,
        }
    }

    pub fn permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&peer.to_canonical())
            .is_some_and(|exp| *exp > now)
    }

    /// Number of permissions still in force.
    pub fn permission_count(&self, now: Instant) -> usize {
        self.permissions.values().filter(|exp| **exp > now).count()
    }

    pub fn permit(&mut self, peer: IpAddr, until: Instant) {
        self.permissions.insert(peer.to_canonical(), until);
    }

    /// The peer of a channel that is in force.
    pub fn channel_peer(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The channel in force for a peer.
    pub fn peer_channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let channel = *self.peer_channel.get(&peer)?;
        self.channel_peer(channel, now).map(|_| channel)
    }

    /// Binds or refreshes `channel` to `peer`; a channel or peer bound otherwise — or expired less
    /// than five minutes ago — is a conflict.
    pub fn bind_channel(
        &mut self,
        channel: u16,
        peer: SocketAddr,
        until: Instant,
        now: Instant,
    ) -> Result<(), BindConflict> {
        self.forget_cooled_channels(now);
        if let Some(c) = self.channels.get(&channel)
            && c.peer != peer
        {
            return Err(BindConflict::NumberTaken);
        }
        if let Some(other) = self.peer_channel.get(&peer)
            && *other != channel
        {
            return Err(BindConflict::PeerTaken);
        }
        self.channels.insert(
            channel,
            Channel {
                peer,
                expires: until,
            },
        );
        self.peer_channel.insert(peer, channel);
        Ok(())
    }

    /// Drops permissions that expired and channels whose cooldown is over, so an allocation that
    /// lives long does not keep what it no longer uses.
    pub fn forget_expired(&mut self, now: Instant) {
        self.permissions.retain(|_, exp| *exp > now);
        self.forget_cooled_channels(now);
    }

    fn forget_cooled_channels(&mut self, now: Instant) {
        let peer_channel = &mut self.peer_channel;
        self.channels.retain(|_, c| {
            let keep = c.expires + CHANNEL_COOLDOWN > now;
            if !keep {
                peer_channel.remove(&c.peer);
            }
            keep
        });
    }

    /// Charges `bytes` to the bandwidth cap; false when the packet must be dropped.
    pub fn take_bandwidth(&mut self, bytes: usize, now: Instant) -> bool {
        self.bandwidth.as_mut().is_none_or(|b| b.take(bytes, now))
    }
}

/// A byte-rate cap with one second of burst.
pub struct ByteBucket {
    per_second: u64,
    tokens: u64,
    last: Instant,
}

impl ByteBucket {
    pub fn new(per_second: u64, now: Instant) -> Self {
        Self {
            per_second,
            tokens: per_second,
            last: now,
        }
    }

    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        if !elapsed.is_zero() {
            let refill = (elapsed.as_nanos() * u128::from(self.per_second) / 1_000_000_000) as u64;
            if refill > 0 {
                self.tokens = (self.tokens + refill).min(self.per_second);
                self.last = now;
            }
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}
