//! The ICE servers handed to each joining client.

use huddle_signal_proto::IceServer;

/// What `welcome` and `GET /api/ice-servers` carry: the operator's static servers, plus
/// short-lived credentials for Huddle's own TURN server when it runs.
#[derive(Clone, Default)]
pub struct IceServers {
    pub static_servers: Vec<IceServer>,
}

impl IceServers {
    pub fn for_peer(&self, _peer: &str) -> Vec<IceServer> {
        self.static_servers.clone()
    }
}
