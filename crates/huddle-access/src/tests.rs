//! Every way a token can be wrong has its own reason; tokens the CLI makes and LiveKit's SDK
//! makes verify with the same grants.

use proptest::prelude::*;

use crate::jwt::encode;
use crate::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn keys() -> Keys {
    Keys::parse_list(&[
        format!("main:{SECRET}"),
        format!("other:{}", "x".repeat(40)),
    ])
    .unwrap()
}

fn token(claims: &Claims) -> String {
    keys().mint("main", claims).unwrap()
}

fn claims() -> Claims {
    Claims::for_room("alice", "standup", NOW, 3600)
}

/// A token with a hand-made header and payload, signed with `main`'s secret.
fn forged(header: &str, payload: &str) -> String {
    signed_with(SECRET, header, payload)
}

fn signed_with(secret: &str, header: &str, payload: &str) -> String {
    let signed = format!(
        "{}.{}",
        encode(header.as_bytes()),
        encode(payload.as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", encode(tag.as_ref()))
}

#[test]
fn a_minted_token_verifies_with_its_claims() {
    let mut c = claims();
    c.name = Some("Alice".into());
    c.video.room_admin = Some(true);
    let access = keys().verify(&token(&c), "standup", NOW + 10).unwrap();
    assert_eq!(access.identity, "alice");
    assert_eq!(access.name.as_deref(), Some("Alice"));
    assert_eq!(access.key, "main");
    assert_eq!(access.expires, NOW + 3600);
    assert!(access.grant.is_admin() && access.grant.can_publish());
}

#[test]
fn livekit_server_sdk_tokens_verify() {
    // Made by livekit-server-sdk 2.19.2 (`new AccessToken("devkey", secret, {identity: "alice",
    // name: "Alice", ttl: "1h", metadata: "m"})`, grant room r1, roomJoin, canPublish, sources
    // camera + microphone, roomAdmin); header {"alg":"HS256"} only, no jti.
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJtZXRhZGF0YSI6Im0iLCJuYW1lIjoiQWxpY2UiLCJ2aWRlbyI6eyJyb29tIjoicjEiLCJyb29tSm9pbiI6dHJ1ZSwiY2FuUHVibGlzaCI6dHJ1ZSwiY2FuUHVibGlzaFNvdXJjZXMiOlsiY2FtZXJhIiwibWljcm9waG9uZSJdLCJyb29tQWRtaW4iOnRydWV9LCJpc3MiOiJkZXZrZXkiLCJleHAiOjE3OTYxNjU1NjgsIm5iZiI6MTc5NjE2MTk2OCwic3ViIjoiYWxpY2UifQ.GgXQtKOfe5jnXtp6JkXjPHBsN-APzrhT2Ter9UZAbr0";
    let keys = Keys::parse_list(&["devkey:secretsecretsecretsecretsecret12"]).unwrap();
    let access = keys.verify(token, "r1", 1_796_162_000).unwrap();
    assert_eq!(access.identity, "alice");
    assert_eq!(access.metadata.as_deref(), Some("m"));
    assert!(access.grant.is_admin());
    assert!(access.grant.can_publish_source(Source::Camera));
    assert!(!access.grant.can_publish_source(Source::ScreenShare));
    assert_eq!(
        access.revocation_id.len(),
        32,
        "the signature stands in for jti"
    );
}

#[test]
fn every_refusal_has_its_reason() {
    let k = keys();
    let good = token(&claims());
    let cases: Vec<(String, TokenError)> = vec![
        ("x".repeat(MAX_TOKEN_BYTES + 1), TokenError::TooLong),
        ("abc".into(), TokenError::Malformed),
        ("a.b.c.d".into(), TokenError::Malformed),
        ("!!!.e30.sig".into(), TokenError::BadBase64("header")),
        (
            format!("{}.e30.", encode(b"[1]")),
            TokenError::BadJson("header"),
        ),
        (
            forged(r#"{"alg":"none"}"#, r#"{"sub":"a"}"#),
            TokenError::AlgNone,
        ),
        (
            forged(r#"{"alg":"HS512"}"#, r#"{"sub":"a"}"#),
            TokenError::WrongAlgorithm("HS512".into()),
        ),
        (
            forged(r#"{"alg":"RS256"}"#, r#"{"sub":"a"}"#),
            TokenError::WrongAlgorithm("RS256".into()),
        ),
        (
            format!("{}.!!!.x", encode(br#"{"alg":"HS256"}"#)),
            TokenError::BadBase64("payload"),
        ),
        (
            forged(r#"{"alg":"HS256"}"#, r#"{"iss":"nobody","sub":"a"}"#),
            TokenError::UnknownKey("nobody".into()),
        ),
        (
            // One character of the signature changed.
            {
                let at = good.len() - 10;
                let swap = if &good[at..=at] == "A" { "B" } else { "A" };
                format!("{}{swap}{}", &good[..at], &good[at + 1..])
            },
            TokenError::BadSignature,
        ),
        (
            // Claims naming `main`, signed with another secret.
            signed_with(
                &"y".repeat(40),
                r#"{"alg":"HS256"}"#,
                &serde_json::to_string(&Claims {
                    iss: "main".into(),
                    ..claims()
                })
                .unwrap(),
            ),
            TokenError::BadSignature,
        ),
        (
            forged(r#"{"alg":"HS256"}"#, r#"{"iss":"main","sub":"a"}"#),
            TokenError::NoExpiry,
        ),
        (
            token(&Claims::for_room("a", "standup", NOW - 7200, 3600)),
            TokenError::Expired(NOW - 3600),
        ),
        (
            token(&Claims::for_room("a", "standup", NOW + 600, 3600)),
            TokenError::NotYetValid(NOW + 600),
        ),
        (
            token(&Claims::for_room("", "standup", NOW, 3600)),
            TokenError::NoIdentity,
        ),
        (
            token(&Claims::for_room("a", "other-room", NOW, 3600)),
            TokenError::WrongRoom {
                token: Some("other-room".into()),
                wanted: "standup".into(),
            },
        ),
        (
            token(&Claims {
                video: VideoGrant {
                    room_join: Some(false),
                    ..claims().video
                },
                ..claims()
            }),
            TokenError::JoinNotAllowed,
        ),
    ];
    for (token, reason) in cases {
        assert_eq!(
            k.verify(&token, "standup", NOW),
            Err(reason.clone()),
            "{reason}"
        );
    }
}

#[test]
fn a_minute_of_clock_skew_is_tolerated() {
    let k = keys();
    let expired_just = token(&Claims::for_room("a", "standup", NOW - 3630, 3600));
    assert!(k.verify(&expired_just, "standup", NOW).is_ok());
    let early = token(&Claims::for_room("a", "standup", NOW + 45, 3600));
    assert!(k.verify(&early, "standup", NOW).is_ok());
}

#[test]
fn keys_parse_from_flags_and_files_and_never_show_their_secrets() {
    let mut k = Keys::parse_list(&[format!("a:{SECRET}")]).unwrap();
    k.add_file(&format!(
        "# LiveKit's keys file\n\nb: {SECRET}\n  c : {SECRET}  # trailing\n"
    ))
    .unwrap();
    assert_eq!(k.names(), ["a", "b", "c"]);
    assert!(!format!("{k:?}").contains(SECRET));
    assert_eq!(
        Keys::parse_list(&["nocolon"]).unwrap_err(),
        KeyError::NoSeparator
    );
    assert_eq!(
        Keys::parse_list(&["a:short"]).unwrap_err(),
        KeyError::ShortSecret("a".into())
    );
    assert_eq!(
        Keys::parse_list(&[format!(":{SECRET}")]).unwrap_err(),
        KeyError::EmptyName
    );
    assert_eq!(
        Keys::parse_list(&[format!("a:{SECRET}"), format!("a:{SECRET}")]).unwrap_err(),
        KeyError::Duplicate("a".into())
    );
    let err = Keys::default().add_file("\n\nbroken\n").unwrap_err();
    assert_eq!(err.to_string(), "line 3: a key is not NAME:SECRET");
}

proptest! {
    /// Whatever the claims, what is minted verifies to them.
    #[test]
    fn minted_claims_come_back(
        identity in "[a-z0-9]{1,20}",
        name in proptest::option::of(".{1,30}"),
        admin in proptest::option::of(any::<bool>()),
        publish in proptest::option::of(any::<bool>()),
        ttl in 60u64..100_000,
    ) {
        let mut c = Claims::for_room(&identity, "room", NOW, ttl);
        c.name = name.clone();
        c.video.room_admin = admin;
        c.video.can_publish = publish;
        let access = keys().verify(&token(&c), "room", NOW).unwrap();
        prop_assert_eq!(access.identity, identity);
        prop_assert_eq!(access.name, name.filter(|n| !n.is_empty()));
        prop_assert_eq!(access.grant, c.video);
    }

    /// Any string: a reason, never a panic.
    #[test]
    fn any_string_is_refused_or_verified(s in ".{0,300}") {
        let _ = keys().verify(&s, "room", NOW);
    }

    /// One changed character anywhere makes a good token fail.
    #[test]
    fn tampering_is_detected(at in 0usize..200, with in "[A-Za-z0-9_-]") {
        let good = token(&claims());
        let at = at % good.len();
        prop_assume!(good[at..=at] != with && &good[at..=at] != ".");
        let bad = format!("{}{}{}", &good[..at], with, &good[at + 1..]);
        prop_assert!(keys().verify(&bad, "standup", NOW).is_err());
    }
}
