//! # The TURN server's pure core: protocol and policy, no IO
//!
//! Everything here is plain code with time passed in; the sockets and the actors that use it
//! are in [`crate::turn`].
//!
//! - [`auth`]: long-term credentials (static users, TURN REST API time-limited users), stateless
//!   nonces, the REST credential issuer's HMAC.
//! - [`policy`]: CIDR blocks and the relay policy (which peers an allocation may reach).
//! - [`framing`]: STUN vs ChannelData, ChannelData encoding (padded over TCP), cutting a TCP
//!   stream into frames.
//! - [`allocation`]: one allocation's lifetime, permissions, channels; the bandwidth bucket.
//! - [`wire`]: TURN requests read into values, responses and Data indications written.
//!
//! ## The codec: `stun-types` + `turn-types`
//! STUN/TURN message encoding and decoding (attributes, XOR addresses, MESSAGE-INTEGRITY,
//! FINGERPRINT) comes from `stun-types` 2.0 and `turn-types` 0.7 (the `stun-proto`/`turn-proto`
//! crates of the librice project, MIT/Apache-2.0). Chosen because they are actively maintained,
//! parse without copying, carry no async runtime, cover RFC 8489 integrity and every RFC
//! 5766/8656 attribute, and stay a *codec*: the server loop, TCP framing, credentials, quotas
//! and policy are ours. The alternatives: webrtc-rs `turn` is a whole tokio server built on its
//! own `util::Conn` layer, not a codec to build on; `stun_codec` sits on the
//! `bytecodec`/`trackable` stack, which nothing else here uses; `turn-server-proto` (same
//! authors) is a complete sans-IO server, which would leave nothing of the protocol for us to
//! own, where the issue asks for our own server loop and TCP framing. Both crates are pinned in
//! the workspace; all TURN message calls are in [`wire`] (and the integrity key in [`auth`]).

pub mod allocation;
pub mod auth;
pub mod framing;
pub mod policy;
pub mod wire;

use std::net::IpAddr;

pub use auth::{IssuedCredentials, Secret, StaticUser};
pub use policy::Cidr;

/// Default TURN port (UDP and TCP), as coturn's.
pub const DEFAULT_PORT: u16 = 3478;
pub const DEFAULT_REALM: &str = "sluice";
/// Allocations one user may hold at once. A browser needs one or two per peer connection and
/// TURN URL; time-limited users are one per issued credential.
pub const DEFAULT_USER_QUOTA: u32 = 64;
/// Allocations the whole server holds at most.
pub const DEFAULT_MAX_ALLOCATIONS: u32 = 2000;
/// Relayed bandwidth per user, both directions, in kbit/s: a few HD streams.
pub const DEFAULT_USER_KBPS: u64 = 20_000;
/// Lifetime of credentials from `/rest-api/turn/credentials`.
pub const DEFAULT_CREDENTIAL_TTL: u64 = 3600;

/// The TURN server's settings, as the configuration gives them.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// UDP and TCP port.
    pub port: u16,
    /// A second, TCP-only port (e.g. 443).
    pub tcp_port: Option<u16>,
    pub realm: String,
    pub users: Vec<StaticUser>,
    /// Shared secret of the time-limited credentials; None: a random one for this run (the REST
    /// endpoint still hands out working credentials).
    pub secret: Option<Secret>,
    pub allow_peers: Vec<Cidr>,
    pub user_quota: u32,
    pub max_allocations: u32,
    /// 0: unlimited.
    pub user_kbps: u64,
    pub credential_ttl: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            port: DEFAULT_PORT,
            tcp_port: None,
            realm: DEFAULT_REALM.into(),
            users: Vec::new(),
            secret: None,
            allow_peers: Vec::new(),
            user_quota: DEFAULT_USER_QUOTA,
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
            user_kbps: DEFAULT_USER_KBPS,
            credential_ttl: DEFAULT_CREDENTIAL_TTL,
        }
    }
}

/// Hands clients time-limited TURN credentials and the URLs to use them with (the REST
/// endpoint's job; no IO here).
#[derive(Debug, Clone)]
pub struct CredentialIssuer {
    pub secret: Secret,
    pub ttl: u64,
    pub realm: String,
    pub host: IpAddr,
    pub port: u16,
    pub tcp_port: Option<u16>,
}

impl CredentialIssuer {
    /// `turn:` URLs: UDP and TCP on the TURN port, TCP on the extra port.
    pub fn urls(&self) -> Vec<String> {
        let host = match self.host {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", self.port),
            format!("turn:{host}:{}?transport=tcp", self.port),
        ];
        if let Some(p) = self.tcp_port {
            urls.push(format!("turn:{host}:{p}?transport=tcp"));
        }
        urls
    }

    pub fn issue(&self, user: &str, now_unix: u64) -> IssuedCredentials {
        auth::issue(&self.secret, user, self.ttl, now_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_urls() {
        let i = CredentialIssuer {
            secret: Secret::new("s"),
            ttl: 60,
            realm: "r".into(),
            host: "127.0.0.1".parse().unwrap(),
            port: 3478,
            tcp_port: Some(443),
        };
        assert_eq!(
            i.urls(),
            [
                "turn:127.0.0.1:3478?transport=udp",
                "turn:127.0.0.1:3478?transport=tcp",
                "turn:127.0.0.1:443?transport=tcp"
            ]
        );
        let v6 = CredentialIssuer { host: "::1".parse().unwrap(), tcp_port: None, ..i };
        assert_eq!(v6.urls()[0], "turn:[::1]:3478?transport=udp");
    }
}
