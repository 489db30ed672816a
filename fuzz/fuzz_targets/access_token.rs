//! The access-token decoder: any string is verified or refused with a reason, never a panic; a
//! token that verifies is current and names someone, and a signed token with one byte changed
//! fails.
#![no_main]

use std::sync::OnceLock;

use huddle_access::{Claims, Keys};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys::parse_list(&["main:0123456789abcdef0123456789abcdef"]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        // Arbitrary text as a token.
        let text = String::from_utf8_lossy(rest);
        if let Ok(access) = keys().decode(&text, NOW) {
            assert!(!access.identity.is_empty());
            assert!(access.expires + huddle_access::LEEWAY >= NOW);
        }
        let _ = keys().verify(&text, "room", NOW);
    } else {
        // A real token with one byte changed: it must not verify as the original.
        let claims = Claims::for_room("fuzz", "room", NOW, 600);
        let token = keys().mint("main", &claims).unwrap();
        let mut bytes = token.clone().into_bytes();
        let (Some(&at), Some(&with)) = (rest.first(), rest.get(1)) else {
            return;
        };
        let at = usize::from(at) * 7 % bytes.len();
        if bytes[at] == with {
            return;
        }
        bytes[at] = with;
        let Ok(tampered) = String::from_utf8(bytes) else {
            return;
        };
        // base64url is read canonically, so every changed character changes what is signed.
        assert!(keys().verify(&tampered, "room", NOW).is_err(), "{tampered}");
    }
});
