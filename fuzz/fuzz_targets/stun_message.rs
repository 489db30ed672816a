//! The STUN decoder: any bytes parse or fail cleanly, and every lookup on a parsed message is safe.
#![no_main]

use huddle_turn_proto::stun::{AttrType, ErrorCode, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let _ = (msg.class(), msg.method(), msg.transaction_id());
    for (ty, value) in msg.attributes() {
        let _ = (ty.comprehension_required(), value.len());
    }
    for ty in [
        AttrType::XOR_PEER_ADDRESS,
        AttrType::XOR_MAPPED_ADDRESS,
        AttrType::XOR_RELAYED_ADDRESS,
    ] {
        let _ = msg.get_xor_address(ty);
    }
    let _ = msg.get_u32(AttrType::LIFETIME);
    let _ = msg.get_str(AttrType::USERNAME);
    let _ = msg.get(AttrType::ERROR_CODE).map(ErrorCode::decode);
    let _ = msg.integrity_alg();
    let _ = msg.verify_integrity(b"0123456789abcdef");
});
