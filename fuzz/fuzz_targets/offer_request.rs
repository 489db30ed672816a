//! `POST /offer`'s body: any bytes decode to an offer or a refusal, never a panic.
#![no_main]

use huddle_media::OfferRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = OfferRequest::decode(data) {
        // What decodes came from JSON: its SDP is whole UTF-8, the transform a known one.
        assert!(std::str::from_utf8(request.sdp.as_bytes()).is_ok());
        let _ = request.transform.name();
    }
});
