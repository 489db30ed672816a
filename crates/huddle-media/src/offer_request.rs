//! aiortc's `POST /offer` request body, `{"sdp": …, "type": "offer", "video_transform": …}`:
//! the one body of the HTTP API with a shape of its own (WHIP and WHEP bodies are bare SDP, which
//! [`crate::Engine::accept`] reads).

use serde::Deserialize;

use crate::transform::{Transform, UnknownTransform};

/// A decoded `/offer` request: the SDP to answer and the transform to echo through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRequest {
    pub sdp: String,
    pub transform: Transform,
}

/// Why an `/offer` body was refused (a 400 saying so).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferRequestError {
    #[error("the body is not an offer in JSON: {0}")]
    NotJson(String),
    #[error("\"type\" must be \"offer\", not {0:?}")]
    NotAnOffer(String),
    #[error(transparent)]
    Transform(#[from] UnknownTransform),
}

#[derive(Deserialize)]
struct Body {
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
    /// aiortc's client always sends it; a missing one means `none`.
    video_transform: Option<String>,
}

impl OfferRequest {
    pub fn decode(body: &[u8]) -> Result<Self, OfferRequestError> {
        let body: Body =
            serde_json::from_slice(body).map_err(|e| OfferRequestError::NotJson(e.to_string()))?;
        if body.kind != "offer" {
            return Err(OfferRequestError::NotAnOffer(body.kind));
        }
        let transform = body.video_transform.as_deref().unwrap_or("none").parse()?;
        Ok(Self {
            sdp: body.sdp,
            transform,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aiortcs_body_and_every_refusal() {
        let ok = br#"{"sdp": "v=0\r\n", "type": "offer", "video_transform": "edges"}"#;
        assert_eq!(
            OfferRequest::decode(ok),
            Ok(OfferRequest {
                sdp: "v=0\r\n".into(),
                transform: Transform::Edges
            })
        );
        let plain = OfferRequest::decode(br#"{"sdp": "", "type": "offer"}"#).unwrap();
        assert_eq!(plain.transform, Transform::None);
        assert!(matches!(
            OfferRequest::decode(b"{"),
            Err(OfferRequestError::NotJson(_))
        ));
        assert!(matches!(
            OfferRequest::decode(br#"{"type": "offer"}"#),
            Err(OfferRequestError::NotJson(_))
        ));
        assert_eq!(
            OfferRequest::decode(br#"{"sdp": "", "type": "answer"}"#),
            Err(OfferRequestError::NotAnOffer("answer".into()))
        );
        assert!(matches!(
            OfferRequest::decode(br#"{"sdp": "", "type": "offer", "video_transform": "x"}"#),
            Err(OfferRequestError::Transform(_))
        ));
    }

    proptest! {
        /// Whatever an offer's SDP and transform, the body aiortc's client would make of them
        /// decodes back to them.
        #[test]
        fn bodies_of_any_offer_decode_to_it(sdp in ".*", t in 0..Transform::ALL.len()) {
            let transform = Transform::ALL[t];
            let body = serde_json::json!({
                "sdp": sdp, "type": "offer", "video_transform": transform.name()
            });
            let decoded = OfferRequest::decode(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(decoded, OfferRequest { sdp, transform });
        }

        /// Any bytes at all: an answer or a refusal, never a panic.
        #[test]
        fn any_bytes_decode_or_are_refused(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = OfferRequest::decode(&body);
        }
    }
}
