//! The claims of a token, as LiveKit's `auth` package and SDKs write them.

use serde::{Deserialize, Serialize};

/// A token's payload. Unknown claims (LiveKit's `attributes`, `kind`, `sip`, …) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The key that signed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// The participant's identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Not valid before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Not valid from (Unix seconds). Required: a token that never expires cannot be revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default)]
    pub video: VideoGrant,
}

impl Claims {
    /// A participant's token for `room`, valid from `now` for `ttl` seconds, with every
    /// permission (what `huddle token create` starts from).
    pub fn for_room(identity: &str, room: &str, now: u64, ttl: u64) -> Self {
        Self {
            sub: identity.to_owned(),
            nbf: Some(now),
            exp: Some(now.saturating_add(ttl)),
            video: VideoGrant {
                room: Some(room.to_owned()),
                room_join: Some(true),
                ..VideoGrant::default()
            },
            ..Self::default()
        }
    }
}

/// LiveKit's video grant. A permission left unset is allowed, as in LiveKit — except
/// `roomJoin`, which must be granted to join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_join: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_admin: Option<bool>,
    /// May list rooms (LiveKit's `ListRooms`; Huddle's `/api/cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_list: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    /// The sources it may publish; unset or empty means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_sources: Option<Vec<Source>>,
    /// Receives, and appears to nobody (recorders, observers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
}

impl VideoGrant {
    pub fn can_join(&self) -> bool {
        self.room_join == Some(true)
    }

    pub fn is_admin(&self) -> bool {
        self.room_admin == Some(true)
    }

    pub fn can_list(&self) -> bool {
        self.room_list == Some(true)
    }

    pub fn can_publish(&self) -> bool {
        self.can_publish != Some(false)
    }

    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe != Some(false)
    }

    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data != Some(false)
    }

    pub fn is_hidden(&self) -> bool {
        self.hidden == Some(true)
    }

    /// Whether it may publish `source`: publishing at all, and the source listed (or no list).
    pub fn can_publish_source(&self, source: Source) -> bool {
        self.can_publish()
            && match &self.can_publish_sources {
                Some(list) if !list.is_empty() => list.contains(&source),
                _ => true,
            }
    }
}

/// A track source, as LiveKit names them in `canPublishSources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Camera,
        Source::Microphone,
        Source::ScreenShare,
        Source::ScreenShareAudio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Camera => "camera",
            Source::Microphone => "microphone",
            Source::ScreenShare => "screen_share",
            Source::ScreenShareAudio => "screen_share_audio",
        }
    }
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|src| src.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown source {s:?}: camera, microphone, screen_share or screen_share_audio"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn livekits_payload_reads_as_written() {
        // What livekit-server-sdk 2.19 signs for an admin limited to camera and microphone.
        let payload = r#"{"metadata":"m","name":"Alice","video":{"room":"r1","roomJoin":true,
            "canPublish":true,"canPublishSources":["camera","microphone"],"roomAdmin":true},
            "iss":"devkey","exp":1796165568,"nbf":1796161968,"sub":"alice","attributes":{}}"#;
        let claims: Claims = serde_json::from_str(payload).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.iss, "devkey");
        assert!(claims.video.can_join() && claims.video.is_admin());
        assert!(claims.video.can_publish_source(Source::Camera));
        assert!(!claims.video.can_publish_source(Source::ScreenShare));
        assert!(claims.video.can_subscribe(), "unset means allowed");
    }

    #[test]
    fn unset_permissions_are_allowed_but_join_must_be_granted() {
        let grant = VideoGrant::default();
        assert!(grant.can_publish() && grant.can_subscribe() && grant.can_publish_data());
        assert!(Source::ALL.iter().all(|s| grant.can_publish_source(*s)));
        assert!(!grant.can_join() && !grant.is_admin() && !grant.is_hidden());
        let muted = VideoGrant {
            can_publish: Some(false),
            ..VideoGrant::default()
        };
        assert!(!muted.can_publish_source(Source::Microphone));
    }
}
