//! A room's owner lease: the one key that says which node hosts a room.
//!
//! `huddle:room:{name}` holds `FENCE|NODE|URL` with an expiry the owner renews. It is written
//! only by scripts that compare what is there first, so two nodes can never both hold it: a
//! claim succeeds only over nothing (or over exactly the stale value the claimer saw), a renewal
//! or a release only over the owner's own value. The fence is Redis's own clock in microseconds
//! at the claim — it grows with every new owner, and needs no counter key left behind.

use std::sync::LazyLock;

use redis::Script;

/// A lease as read from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The raw value, which every compare-and-set compares.
    pub raw: String,
    pub fence: u64,
    pub node: String,
    pub url: String,
}

impl Lease {
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(3, '|');
        let fence = parts.next()?.parse().ok()?;
        let node = parts.next()?.to_owned();
        let url = parts.next()?.to_owned();
        Some(Self {
            raw: raw.to_owned(),
            fence,
            node,
            url,
        })
    }
}

/// KEYS[1] the lease, KEYS[2] the new owner's record; ARGV: the value seen (`''`: none), the
/// new owner's id and URL, the expiry in ms. Answers `{1, value}` when claimed, `{0, current}`
/// when another claim won, `{2, ''}` when the new owner is gone or draining (the claimer's view
/// of the nodes was stale).
pub fn claim() -> &'static Script {
    static CLAIM: LazyLock<Script> = LazyLock::new(|| {
        Script::new(
            r"
local cur = redis.call('GET', KEYS[1])
if (ARGV[1] == '' and cur) or (ARGV[1] ~= '' and cur ~= ARGV[1]) then
  return {0, cur or ''}
end
local owner = redis.call('GET', KEYS[2])
if not owner or cjson.decode(owner)['draining'] then
  return {2, ''}
end
local t = redis.call('TIME')
local value = t[1] .. string.format('%06d', tonumber(t[2])) .. '|' .. ARGV[2] .. '|' .. ARGV[3]
redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
return {1, value}
",
        )
    });
    &CLAIM
}

/// What [`renew`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// Still ours; expiry pushed back.
    Held,
    /// Gone (expired, or Redis restarted empty) and written back: nobody had taken it.
    Restored,
    /// Another node holds it now.
    Lost,
}

/// KEYS[1] the lease; ARGV: our value, the expiry in ms. Answers 1 (held), 2 (restored), 0 (lost).
pub fn renew() -> &'static Script {
    static RENEW: LazyLock<Script> = LazyLock::new(|| {
        Script::new(
            r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
",
        )
    });
    &RENEW
}

impl Renewed {
    pub fn from_reply(reply: i64) -> Self {
        match reply {
            1 => Self::Held,
            2 => Self::Restored,
            _ => Self::Lost,
        }
    }
}

/// KEYS[1] the lease; ARGV[1] our value: deleted only if it is still ours.
pub fn release() -> &'static Script {
    static RELEASE: LazyLock<Script> = LazyLock::new(|| {
        Script::new(
            r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
        )
    });
    &RELEASE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_value_names_fence_node_and_url() {
        let lease = Lease::parse("1764770000123456|node-a|https://a.example:8443").unwrap();
        assert_eq!(lease.fence, 1_764_770_000_123_456);
        assert_eq!(lease.node, "node-a");
        assert_eq!(lease.url, "https://a.example:8443");
        for bad in ["", "x|a|u", "12|a"] {
            assert_eq!(Lease::parse(bad), None, "{bad:?}");
        }
    }
}
