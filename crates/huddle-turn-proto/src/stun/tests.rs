//! The codec against RFC 5769's test vectors, and property tests.

use super::*;
use proptest::prelude::*;
use std::net::SocketAddr;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1: a Binding request with short-term credentials (password VOkJxbRl1RmTxUk/WvJxBt).
const SAMPLE_REQUEST: &str = "
    0001 0058 2112a442 b7e7a701 bc34d686 fa87dfae
    8022 0010 5354554e 20746573 7420636c 69656e74
    0024 0004 6e0001ff
    8029 0008 932ff9b1 51263b36
    0006 0009 6576746a 3a683676 59202020
    0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
    8028 0004 e57a3bcf";

/// RFC 5769 §2.2: the IPv4 Binding response, mapped address 192.0.2.1:32853.
const SAMPLE_IPV4_RESPONSE: &str = "
    0101 003c 2112a442 b7e7a701 bc34d686 fa87dfae
    8022 000b 74657374 20766563 746f7220
    0020 0008 0001a147 e112a643
    0008 0014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
    8028 0004 c07d4c96";

/// RFC 5769 §2.3: the IPv6 Binding response, 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
const SAMPLE_IPV6_RESPONSE: &str = "
    0101 0048 2112a442 b7e7a701 bc34d686 fa87dfae
    8022 000b 74657374 20766563 746f7220
    0020 0014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
    0008 0014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
    8028 0004 c8fb0b4c";

/// RFC 5769 §2.4: long-term credentials, user マトリックス, realm example.org, password TheMatrIX.
const SAMPLE_LONG_TERM: &str = "
    0001 0060 2112a442 78ad3433 c6ad72c0 29da412e
    0006 0012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
    0015 001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
    0014 000b 6578616d 706c652e 6f726700
    0008 0014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666";

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Request, Method::BINDING)
    );
    assert_eq!(msg.get_str(AttrType::USERNAME).unwrap(), Some("evtj:h6vY"));
    assert_eq!(
        msg.get_str(AttrType::SOFTWARE).unwrap(),
        Some("STUN test client")
    );
    assert_eq!(msg.integrity_alg(), Some(IntegrityAlg::Sha1));
    assert!(msg.verify_integrity(PASSWORD));
    assert!(!msg.verify_integrity(b"wrong"));
}

#[test]
fn rfc5769_responses() {
    for (vector, expected) in [
        (SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853"),
        (
            SAMPLE_IPV6_RESPONSE,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let bytes = hex(vector);
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.class(), Class::Success);
        let addr = msg
            .get_xor_address(AttrType::XOR_MAPPED_ADDRESS)
            .unwrap()
            .unwrap();
        assert_eq!(addr, expected.parse::<SocketAddr>().unwrap());
        assert!(msg.verify_integrity(PASSWORD));
    }
}

#[test]
fn rfc5769_long_term_credentials() {
    let bytes = hex(SAMPLE_LONG_TERM);
    let msg = Message::parse(&bytes).unwrap();
    let user = msg.get_str(AttrType::USERNAME).unwrap().unwrap();
    assert_eq!(user, "マトリックス");
    let realm = msg.get_str(AttrType::REALM).unwrap().unwrap();
    let key = crate::auth::long_term_key(user, realm, "TheMatrIX");
    assert!(msg.verify_integrity(&key));
}

#[test]
fn writer_output_verifies() {
    let txid = [7u8; 12];
    let mut buf = Vec::new();
    let key = crate::auth::long_term_key("user", "realm", "pass");
    MessageWriter::new(&mut buf, Class::Success, Method::ALLOCATE, txid)
        .xor_address(
            AttrType::XOR_RELAYED_ADDRESS,
            "[2001:db8::1]:50000".parse().unwrap(),
        )
        .xor_address(
            AttrType::XOR_MAPPED_ADDRESS,
            "198.51.100.7:4000".parse().unwrap(),
        )
        .u32(AttrType::LIFETIME, 600)
        .attr(AttrType::SOFTWARE, b"huddle")
        .integrity(IntegrityAlg::Sha256, &key)
        .fingerprint();
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.transaction_id(), txid);
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Success, Method::ALLOCATE)
    );
    assert_eq!(msg.get_u32(AttrType::LIFETIME).unwrap(), Some(600));
    assert_eq!(
        msg.get_xor_address(AttrType::XOR_RELAYED_ADDRESS).unwrap(),
        Some("[2001:db8::1]:50000".parse().unwrap())
    );
    assert_eq!(msg.integrity_alg(), Some(IntegrityAlg::Sha256));
    assert!(msg.verify_integrity(&key));
    assert_eq!(msg.get(AttrType::SOFTWARE), Some(&b"huddle"[..]));
}

#[test]
fn error_code_round_trip() {
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, Class::Error, Method::ALLOCATE, [1; 12])
        .error_code(ErrorCode::STALE_NONCE)
        .fingerprint();
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(
        ErrorCode::decode(msg.get(AttrType::ERROR_CODE).unwrap()),
        Some(438)
    );
}

#[test]
fn structural_errors() {
    let good = hex(SAMPLE_REQUEST);
    assert_eq!(
        Message::parse(&good[..19]).unwrap_err(),
        StunError::TooShort
    );
    let mut bad = good.clone();
    bad[4] ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::NotStun);
    assert!(matches!(
        Message::parse(&good[..good.len() - 4]),
        Err(StunError::LengthMismatch { .. })
    ));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::BadFingerprint);
    // An attribute claiming more bytes than there are.
    let mut bad = good.clone();
    bad[22..24].copy_from_slice(&0x00FFu16.to_be_bytes());
    assert!(matches!(
        Message::parse(&bad),
        Err(StunError::TruncatedAttribute(20))
    ));
    // Attributes after MESSAGE-INTEGRITY do not count.
    let msg = Message::parse(&good).unwrap();
    assert!(msg.get(AttrType::FINGERPRINT).is_none());
}

#[test]
fn message_type_bits() {
    for class in [
        Class::Request,
        Class::Indication,
        Class::Success,
        Class::Error,
    ] {
        for method in [
            Method::BINDING,
            Method::ALLOCATE,
            Method::CHANNEL_BIND,
            Method(0xFFF),
        ] {
            assert_eq!(split_type(message_type(class, method)), (class, method));
        }
    }
    assert_eq!(message_type(Class::Error, Method::ALLOCATE), 0x0113);
    assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(msg) = Message::parse(&bytes) {
            for (_, _) in msg.attributes() {}
            let _ = msg.verify_integrity(b"k");
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(pos in 0usize..108, byte in any::<u8>()) {
        let mut bytes = hex(SAMPLE_REQUEST);
        bytes[pos] = byte;
        if let Ok(msg) = Message::parse(&bytes) {
            let _ = msg.get_xor_address(AttrType::XOR_PEER_ADDRESS);
            let _ = msg.verify_integrity(PASSWORD);
        }
    }

    #[test]
    fn written_messages_parse_back(
        method in 0u16..0x1000,
        txid in any::<[u8; 12]>(),
        ip in any::<[u8; 16]>(),
        port in any::<u16>(),
        data in proptest::collection::vec(any::<u8>(), 0..100),
        user in "[a-z0-9:]{1,40}",
    ) {
        let addr = SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port);
        let mut buf = Vec::new();
        MessageWriter::new(&mut buf, Class::Indication, Method(method), txid)
            .xor_address(AttrType::XOR_PEER_ADDRESS, addr)
            .attr(AttrType::DATA, &data)
            .attr(AttrType::USERNAME, user.as_bytes())
            .integrity(IntegrityAlg::Sha1, b"key")
            .fingerprint();
        let msg = Message::parse(&buf).unwrap();
        prop_assert_eq!(msg.method(), Method(method));
        prop_assert_eq!(msg.get_xor_address(AttrType::XOR_PEER_ADDRESS).unwrap(), Some(addr));
        prop_assert_eq!(msg.get(AttrType::DATA), Some(&data[..]));
        prop_assert_eq!(msg.get_str(AttrType::USERNAME).unwrap(), Some(user.as_str()));
        prop_assert!(msg.verify_integrity(b"key"));
    }
}
