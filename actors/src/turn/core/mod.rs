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
//! - here: [`CredentialIssuer`] (what `/rest-api/turn/credentials` hands out) and
//!   [`CredentialRateLimiter`] (how often one client address may ask).
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
/// Credentials one client address may take from `/rest-api/turn/credentials` per minute, on
/// average. A page asks once per load (the Firewall Traversal demo: once per page), so this is
/// far above any honest use and far below a credential farm.
pub const DEFAULT_CREDENTIAL_RATE: u32 = 30;
/// Credentials one client address may take at once (the bucket's size; at most the rate).
pub const CREDENTIAL_BURST: u32 = 10;
/// Client addresses the credential rate limiter keeps at most. Only clients seen within the last
/// `CREDENTIAL_BURST / rate` minutes carry state (one whose bucket has refilled is forgotten);
/// when more than this many are active at once, new ones are refused until some refill.
pub const MAX_RATE_LIMITED_CLIENTS: usize = 10_000;

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
    /// Credentials per client address per minute from the REST endpoint; 0: unlimited.
    pub credential_rate: u32,
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
            credential_rate: DEFAULT_CREDENTIAL_RATE,
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
    /// Credentials per client address per minute; 0: unlimited ([`CredentialRateLimiter`]).
    pub rate_per_minute: u32,
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

/// A refusal of the credential rate limiter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimited {
    /// When the client may ask again (at least a second: the `Retry-After` header's unit).
    pub retry_after: Duration,
    /// The first refusal since this client's last success (log it once, not per request).
    pub first: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    refused: bool,
}

/// A token bucket per client address: [`CREDENTIAL_BURST`] at once, then `rate_per_minute`
/// (IPv6 clients by /64, the block one host usually has). Memory is bounded: clients whose
/// bucket has refilled are forgotten (pruned every [`CredentialRateLimiter::PRUNE_EVERY`], and
/// whenever the table is full), and the table holds at most [`MAX_RATE_LIMITED_CLIENTS`].
/// Time is passed in.
#[derive(Debug)]
pub struct CredentialRateLimiter {
    /// Tokens per second; 0: unlimited.
    rate: f64,
    burst: f64,
    clients: HashMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

impl CredentialRateLimiter {
    pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
    /// A full table is pruned at most this often (pruning walks it).
    const PRUNE_FULL_EVERY: Duration = Duration::from_secs(1);

    /// `per_minute`: credentials per client per minute, 0 for unlimited.
    pub fn new(per_minute: u32) -> Self {
        CredentialRateLimiter {
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(CREDENTIAL_BURST.min(per_minute).max(1)),
            clients: HashMap::new(),
            last_prune: None,
        }
    }

    /// The key a client is counted under: IPv4 as is (IPv4-mapped IPv6 as IPv4), IPv6 by /64.
    fn key(ip: IpAddr) -> IpAddr {
        match policy::canonical(ip) {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u64::MAX as u128)).into()),
            v4 => v4,
        }
    }

    /// How many client addresses are tracked.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Forget the clients whose bucket is full again (they are as good as new).
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.clients
            .retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        self.last_prune = Some(now);
    }

    /// May `client` take credentials now? Takes one from its bucket if so.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), RateLimited> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let since_prune = |l: Option<Instant>| l.map_or(Duration::MAX, |l| now.saturating_duration_since(l));
        if since_prune(self.last_prune) >= Self::PRUNE_EVERY {
            self.prune(now);
        }
        let key = Self::key(client);
        if !self.clients.contains_key(&key) && self.clients.len() >= MAX_RATE_LIMITED_CLIENTS {
            if since_prune(self.last_prune) >= Self::PRUNE_FULL_EVERY {
                self.prune(now);
            }
            if self.clients.len() >= MAX_RATE_LIMITED_CLIENTS {
                return Err(RateLimited { retry_after: self.wait_for(0.0), first: false });
            }
        }
        let burst = self.burst;
        let b = self.clients.entry(key).or_insert(Bucket { tokens: burst, at: now, refused: false });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.refused = false;
            return Ok(());
        }
        let first = !b.refused;
        b.refused = true;
        let tokens = b.tokens;
        Err(RateLimited { retry_after: self.wait_for(tokens), first })
    }

    /// Until a bucket holding `tokens` holds one, rounded up to whole seconds.
    fn wait_for(&self, tokens: f64) -> Duration {
        Duration::from_secs((((1.0 - tokens) / self.rate).ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn credential_rate_per_client() {
        let t0 = Instant::now();
        let mut l = CredentialRateLimiter::new(DEFAULT_CREDENTIAL_RATE);
        // A burst, then refused, with the wait for one credential (2 s at 30 a minute).
        for i in 0..CREDENTIAL_BURST {
            assert_eq!(l.check(ip("203.0.113.5"), t0), Ok(()), "{i}");
        }
        let e = l.check(ip("203.0.113.5"), t0).unwrap_err();
        assert_eq!((e.retry_after, e.first), (Duration::from_secs(2), true));
        assert!(!l.check(ip("203.0.113.5"), t0).unwrap_err().first, "logged once");
        // Another client has a bucket of its own; the IPv4-mapped form is the same client.
        assert_eq!(l.check(ip("203.0.113.6"), t0), Ok(()));
        assert!(l.check(ip("::ffff:203.0.113.5"), t0).is_err());
        // Sustained: 30 a minute, no more.
        let mut ok = 0;
        for s in 0..60 {
            let now = t0 + Duration::from_secs(s);
            while l.check(ip("203.0.113.5"), now).is_ok() {
                ok += 1;
            }
        }
        assert!((29..=30).contains(&ok), "{ok} in a minute");
        // IPv6 clients count by /64.
        for _ in 0..CREDENTIAL_BURST {
            l.check(ip("2001:db8:1:2::1"), t0).unwrap();
        }
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert!(l.check(ip("2001:db8:1:3::1"), t0).is_ok());
        // A small rate has a small burst; 0 is unlimited.
        let mut two = CredentialRateLimiter::new(2);
        assert!(two.check(ip("10.0.0.1"), t0).is_ok() && two.check(ip("10.0.0.1"), t0).is_ok());
        assert_eq!(two.check(ip("10.0.0.1"), t0).unwrap_err().retry_after, Duration::from_secs(30));
        let mut none = CredentialRateLimiter::new(0);
        assert!((0..1000).all(|_| none.check(ip("10.0.0.1"), t0).is_ok()) && none.is_empty());
    }

    #[test]
    fn credential_rate_memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = CredentialRateLimiter::new(DEFAULT_CREDENTIAL_RATE);
        let addr = |i: usize| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_RATE_LIMITED_CLIENTS {
            l.check(addr(i), t0).unwrap();
        }
        assert_eq!(l.len(), MAX_RATE_LIMITED_CLIENTS);
        // Full of active clients: a new one waits, a known one still gets its share.
        assert!(l.check(addr(MAX_RATE_LIMITED_CLIENTS), t0 + Duration::from_millis(10)).is_err());
        assert!(l.check(addr(0), t0 + Duration::from_millis(10)).is_ok());
        assert_eq!(l.len(), MAX_RATE_LIMITED_CLIENTS);
        // Once their buckets refill (one token in 2 s), they are forgotten.
        let later = t0 + Duration::from_secs(3);
        assert!(l.check(addr(MAX_RATE_LIMITED_CLIENTS + 1), later).is_ok());
        assert!(l.len() <= 2, "{}", l.len());
        // And idle clients go at the periodic prune.
        let much_later = t0 + Duration::from_secs(200);
        l.check(addr(7), much_later).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn issuer_urls() {
        let i = CredentialIssuer {
            secret: Secret::new("s"),
            ttl: 60,
            realm: "r".into(),
            host: "127.0.0.1".parse().unwrap(),
            port: 3478,
            tcp_port: Some(443),
            rate_per_minute: DEFAULT_CREDENTIAL_RATE,
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
