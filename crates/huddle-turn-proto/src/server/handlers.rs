//! One handler per request (RFC 8489 §7 Binding; RFC 8656 §7 Allocate, §8 Refresh,
//! §9 CreatePermission, §11 ChannelBind). Each returns the error response it wants as `Err`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::allocation::{Allocation, BindConflict, ByteBucket};
use super::{
    AllocationEvent, Authed, EndReason, FiveTuple, Output, Pending, PortRequest,
    RESERVATION_LIFETIME, Reject, RelayAddr, Reservation, Server,
};
use crate::auth::NonceCheck;
use crate::channel_data::CHANNEL_RANGE;
use crate::stun::{AttrType, Class, ErrorCode, Message};

/// REQUESTED-TRANSPORT's protocol number for UDP, the only relay transport here.
const UDP: u8 = 17;
/// RFC 8489 §14.3: a USERNAME is at most 513 bytes.
const MAX_USERNAME: usize = 513;

/// Comprehension-required attributes this server acts on (or may ignore, like ICE's, which a
/// Binding request from an ICE agent carries). Anything else below 0x8000 gets 420.
pub(super) fn understood(t: AttrType) -> bool {
    matches!(
        t,
        AttrType::USERNAME
            | AttrType::MESSAGE_INTEGRITY
            | AttrType::MESSAGE_INTEGRITY_SHA256
            | AttrType::REALM
            | AttrType::NONCE
            | AttrType::LIFETIME
            | AttrType::REQUESTED_TRANSPORT
            | AttrType::REQUESTED_ADDRESS_FAMILY
            | AttrType::XOR_PEER_ADDRESS
            | AttrType::CHANNEL_NUMBER
            | AttrType::DATA
            | AttrType::EVEN_PORT
            | AttrType::RESERVATION_TOKEN
            | AttrType::PRIORITY
            | AttrType::USE_CANDIDATE
    )
}

impl<R: RngCore> Server<R> {
    pub(super) fn handle_binding(&mut self, from: FiveTuple, req: &Message) {
        let data = self.response(req, Class::Success, None, |w| {
            w.xor_address(AttrType::XOR_MAPPED_ADDRESS, from.client);
        });
        self.send(from, data);
    }

    pub(super) fn handle_allocate(
        &mut self,
        from: FiveTuple,
        req: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let auth = self.authenticate(from, req, now)?;
        if let Some(existing) = self.allocations.get(&from) {
            if existing.created_by == req.transaction_id() {
                let again = existing.created_response.clone();
                self.send(from, again);
                return Ok(());
            }
            return Err(ErrorCode::ALLOCATION_MISMATCH.into());
        }
        if self.pending.contains_key(&from) {
            return Ok(()); // a retransmit while the relay socket is being bound
        }
        match req.get(AttrType::REQUESTED_TRANSPORT) {
            None => return Err(ErrorCode::BAD_REQUEST.into()),
            Some(v) if v.len() != 4 => return Err(ErrorCode::BAD_REQUEST.into()),
            Some(v) if v[0] != UDP => return Err(ErrorCode::UNSUPPORTED_TRANSPORT.into()),
            Some(_) => {}
        }
        let mut v6 = match req.get(AttrType::REQUESTED_ADDRESS_FAMILY) {
            None => false,
            Some([0x01, ..]) => false,
            Some([0x02, ..]) => true,
            Some(_) => return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED.into()),
        };
        let token = match req.get(AttrType::RESERVATION_TOKEN) {
            None => None,
            Some(t) => Some(<[u8; 8]>::try_from(t).map_err(|_| ErrorCode::BAD_REQUEST)?),
        };
        let request = match (req.get(AttrType::EVEN_PORT), token) {
            (Some(_), Some(_)) => return Err(ErrorCode::BAD_REQUEST.into()),
            (Some([flags, ..]), None) if flags & 0x80 != 0 => PortRequest::EvenReserveNext,
            (Some([_, ..]), None) => PortRequest::Even,
            (Some([]), None) => return Err(ErrorCode::BAD_REQUEST.into()),
            (None, Some(_)) => PortRequest::Reserved,
            (None, None) => PortRequest::Any,
        };
        if token.is_some() && req.get(AttrType::REQUESTED_ADDRESS_FAMILY).is_some() {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        if self.relay_of(v6).is_none() {
            return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED.into());
        }
        let held = self.per_user.get(&auth.username).copied().unwrap_or(0);
        let from_ip = self
            .per_ip
            .get(&crate::client_key(from.client.ip()))
            .copied()
            .unwrap_or(0);
        if self.config.user_quota.is_some_and(|q| held >= q)
            || self.config.ip_quota.is_some_and(|q| from_ip >= q)
            || self
                .config
                .total_quota
                .is_some_and(|q| self.allocations.len() + self.pending.len() >= q)
        {
            return Err(ErrorCode::ALLOCATION_QUOTA_REACHED.into());
        }
        let lifetime = self.lifetime(req)?.max(self.config.default_lifetime);
        let port = match token {
            Some(token) => {
                let r = self
                    .reservations
                    .remove(&token)
                    .ok_or(ErrorCode::INSUFFICIENT_CAPACITY)?;
                v6 = r.v6;
                r.port
            }
            None => self
                .pick_port(v6, request)
                .ok_or(ErrorCode::INSUFFICIENT_CAPACITY)?,
        };
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        *self
            .per_ip
            .entry(crate::client_key(from.client.ip()))
            .or_default() += 1;
        let pending = Pending {
            txid: req.transaction_id(),
            username: auth.username,
            key: auth.key,
            alg: auth.alg,
            lifetime,
            v6,
            port,
            attempts: 0,
            ports: request,
        };
        self.request_bind(from, pending);
        Ok(())
    }

    pub(super) fn request_bind(&mut self, client: FiveTuple, pending: Pending) {
        // `handle_allocate` checked that this family has a relay address.
        let Some(addr) = self.relay_bind_addr(pending.v6, pending.port) else {
            return;
        };
        let hold_next = pending.ports == PortRequest::EvenReserveNext;
        self.pending.insert(client, pending);
        self.outputs.push_back(super::Output::BindRelay {
            client,
            addr,
            hold_next,
        });
    }

    /// Where a relay socket of this family binds for `port`; `None` if the family has no relay.
    pub(super) fn relay_bind_addr(&self, v6: bool, port: u16) -> Option<SocketAddr> {
        self.relay_of(v6).map(|r| SocketAddr::new(r.bind, port))
    }

    /// The configured relay address of one family.
    fn relay_of(&self, v6: bool) -> Option<RelayAddr> {
        if v6 {
            self.config.relay_v6
        } else {
            self.config.relay_v4
        }
    }

    pub(super) fn finish_allocate(
        &mut self,
        client: FiveTuple,
        p: Pending,
        relay: SocketAddr,
        now: Instant,
    ) {
        let advertised = SocketAddr::new(
            self.relay_of(p.v6).map_or(relay.ip(), |r| r.advertised),
            relay.port(),
        );
        let expires = now + p.lifetime;
        let token = (p.ports == PortRequest::EvenReserveNext).then(|| {
            let mut token = [0u8; 8];
            self.rng.fill_bytes(&mut token);
            self.reservations.insert(
                token,
                Reservation {
                    v6: p.v6,
                    port: relay.port() + 1,
                    expires: now + RESERVATION_LIFETIME,
                },
            );
            token
        });
        let username = p.username.clone();
        let mut alloc = Allocation::new(
            relay,
            advertised,
            p.username,
            expires,
            p.txid,
            self.config.max_bps.map(|bps| ByteBucket::new(bps, now)),
            &self.hasher,
        );
        // The response answers the original request, so rebuild its header from the pending data.
        let response = {
            let mut buf = Vec::with_capacity(128);
            let mut w = crate::stun::MessageWriter::new(
                &mut buf,
                Class::Success,
                crate::stun::Method::ALLOCATE,
                p.txid,
            );
            w.xor_address(AttrType::XOR_RELAYED_ADDRESS, advertised)
                .xor_address(AttrType::XOR_MAPPED_ADDRESS, client.client)
                .u32(AttrType::LIFETIME, p.lifetime.as_secs() as u32);
            if let Some(token) = &token {
                w.attr(AttrType::RESERVATION_TOKEN, token);
            }
            w.attr(AttrType::SOFTWARE, self.config.software.as_bytes())
                .integrity(p.alg, &p.key)
                .fingerprint();
            buf
        };
        alloc.created_response = response.clone();
        self.allocations.insert(client, alloc);
        self.by_relay.insert(relay, client);
        self.by_advertised.insert(advertised, client);
        self.timers.push(std::cmp::Reverse((expires, client)));
        self.stats.allocations_created += 1;
        self.send(client, response);
        self.outputs
            .push_back(Output::Allocation(AllocationEvent::Created {
                client,
                username,
                relay: advertised,
                lifetime: p.lifetime,
            }));
    }

    pub(super) fn fail_pending(&mut self, client: FiveTuple, p: Pending) {
        if p.ports == PortRequest::EvenReserveNext {
            self.ports_in_use.remove(&(p.v6, p.port + 1));
        }
        self.release_quota(&p.username, client.client.ip());
        let mut buf = Vec::with_capacity(96);
        crate::stun::MessageWriter::new(
            &mut buf,
            Class::Error,
            crate::stun::Method::ALLOCATE,
            p.txid,
        )
        .error_code(ErrorCode::INSUFFICIENT_CAPACITY)
        .attr(AttrType::SOFTWARE, self.config.software.as_bytes())
        .integrity(p.alg, &p.key)
        .fingerprint();
        self.stats.error_responses += 1;
        self.send(client, buf);
    }

    pub(super) fn handle_refresh(
        &mut self,
        from: FiveTuple,
        req: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let auth = self.authenticate(from, req, now)?;
        let alloc = self
            .allocations
            .get(&from)
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        if alloc.username != auth.username {
            return Err(ErrorCode::WRONG_CREDENTIALS.into());
        }
        if let Some(family) = req.get(AttrType::REQUESTED_ADDRESS_FAMILY) {
            let v6 = family.first() == Some(&0x02);
            if v6 != alloc.relay.is_ipv6() {
                return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH.into());
            }
        }
        let lifetime = self.lifetime(req)?;
        if lifetime.is_zero() {
            self.delete_allocation(&from, EndReason::Released);
        } else if let Some(alloc) = self.allocations.get_mut(&from) {
            alloc.expires = now + lifetime;
            alloc.forget_expired(now);
        }
        let data = self.response(req, Class::Success, Some((&auth.key, auth.alg)), |w| {
            w.u32(AttrType::LIFETIME, lifetime.as_secs() as u32);
        });
        self.send(from, data);
        Ok(())
    }

    pub(super) fn handle_create_permission(
        &mut self,
        from: FiveTuple,
        req: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let auth = self.authenticate(from, req, now)?;
        let relay = self.owned_allocation(from, &auth)?;
        let mut peers = Vec::new();
        for (t, value) in req.attributes() {
            if t == AttrType::XOR_PEER_ADDRESS {
                let peer = crate::stun::decode_xor_address(value, &req.transaction_id())
                    .ok_or(ErrorCode::BAD_REQUEST)?;
                self.check_peer(relay, peer)?;
                peers.push(peer);
            }
        }
        if peers.is_empty() {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        let until = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let alloc = self
            .allocations
            .get_mut(&from)
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        alloc.forget_expired(now);
        let new = peers
            .iter()
            .filter(|p| !alloc.permitted(p.ip(), now))
            .count();
        if alloc.permission_count(now) + new > max {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY.into());
        }
        for peer in peers {
            alloc.permit(peer.ip(), until);
        }
        let data = self.response(req, Class::Success, Some((&auth.key, auth.alg)), |_| {});
        self.send(from, data);
        Ok(())
    }

    pub(super) fn handle_channel_bind(
        &mut self,
        from: FiveTuple,
        req: &Message,
        now: Instant,
    ) -> Result<(), Reject> {
        let auth = self.authenticate(from, req, now)?;
        let relay = self.owned_allocation(from, &auth)?;
        let channel = match req.get(AttrType::CHANNEL_NUMBER) {
            Some([a, b, _, _]) => u16::from_be_bytes([*a, *b]),
            _ => return Err(ErrorCode::BAD_REQUEST.into()),
        };
        if !CHANNEL_RANGE.contains(&channel) {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        let peer = req
            .get_xor_address(AttrType::XOR_PEER_ADDRESS)
            .map_err(|_| ErrorCode::BAD_REQUEST)?
            .ok_or(ErrorCode::BAD_REQUEST)?;
        self.check_peer(relay, peer)?;
        let (channel_until, permission_until) = (
            now + self.config.channel_lifetime,
            now + self.config.permission_lifetime,
        );
        let alloc = self
            .allocations
            .get_mut(&from)
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        alloc
            .bind_channel(channel, peer, channel_until, now)
            .map_err(|_: BindConflict| ErrorCode::BAD_REQUEST)?;
        alloc.permit(peer.ip(), permission_until);
        let data = self.response(req, Class::Success, Some((&auth.key, auth.alg)), |_| {});
        self.send(from, data);
        Ok(())
    }

    /// The long-term credential check (RFC 8489 §9.2.4): challenge without integrity, 438 for a
    /// stale nonce, 401 for an unknown user or a wrong key.
    fn authenticate(
        &mut self,
        from: FiveTuple,
        req: &Message,
        now: Instant,
    ) -> Result<Authed, Reject> {
        let Some(alg) = req.integrity_alg() else {
            return Err(Reject::challenge(ErrorCode::UNAUTHORIZED));
        };
        let (Ok(Some(username)), Ok(Some(realm)), Ok(Some(nonce))) = (
            req.get_str(AttrType::USERNAME),
            req.get_str(AttrType::REALM),
            req.get_str(AttrType::NONCE),
        ) else {
            return Err(ErrorCode::BAD_REQUEST.into());
        };
        if username.len() > MAX_USERNAME {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        if self.nonces.check(nonce, from.client.ip(), self.secs(now)) == NonceCheck::Stale {
            return Err(Reject::challenge(ErrorCode::STALE_NONCE));
        }
        if realm != self.config.credentials.realm {
            return Err(Reject::challenge(ErrorCode::UNAUTHORIZED));
        }
        let key = self
            .config
            .credentials
            .key_for(username, self.unix(now))
            .map_err(|_| Reject::challenge(ErrorCode::UNAUTHORIZED))?;
        if !req.verify_integrity(&key) {
            return Err(Reject::challenge(ErrorCode::UNAUTHORIZED));
        }
        Ok(Authed {
            username: username.to_owned(),
            key,
            alg,
        })
    }

    /// The relay address of `from`'s allocation, which `auth` must own.
    fn owned_allocation(&self, from: FiveTuple, auth: &Authed) -> Result<SocketAddr, Reject> {
        let alloc = self
            .allocations
            .get(&from)
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        if alloc.username != auth.username {
            return Err(ErrorCode::WRONG_CREDENTIALS.into());
        }
        Ok(alloc.relay)
    }

    /// A peer must be of the relay's family (443) and allowed by policy (403). This server's own
    /// relayed addresses are always allowed: data for them never leaves the process.
    fn check_peer(&self, relay: SocketAddr, peer: SocketAddr) -> Result<(), Reject> {
        if relay.is_ipv4() != peer.ip().to_canonical().is_ipv4() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH.into());
        }
        if !self.is_own_relay_ip(peer.ip()) && !self.config.peers.permits_addr(peer) {
            return Err(ErrorCode::FORBIDDEN.into());
        }
        Ok(())
    }

    /// The LIFETIME asked for, capped at the maximum; the default when absent.
    fn lifetime(&self, req: &Message) -> Result<Duration, Reject> {
        let asked = req
            .get_u32(AttrType::LIFETIME)
            .map_err(|_| ErrorCode::BAD_REQUEST)?;
        Ok(asked
            .map_or(self.config.default_lifetime, |s| {
                Duration::from_secs(u64::from(s))
            })
            .min(self.config.max_lifetime))
    }
}
