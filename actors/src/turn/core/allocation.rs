//! The state of one allocation, without its socket: lifetime, permissions, channel bindings
//! (RFC 8656 §§7–12), and the token bucket that caps a user's bandwidth. Time is passed in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::framing::{CHANNEL_MAX, CHANNEL_MIN};

/// Lifetime of an allocation when the client asks for none (or less), and the most it gets.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// A permission lasts 5 minutes from its last CreatePermission or ChannelBind.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// A channel binding lasts 10 minutes from its last ChannelBind.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions and channels one allocation may hold: a browser needs a handful; the cap keeps a
/// client from growing the server's memory.
pub const MAX_PERMISSIONS: usize = 64;
pub const MAX_CHANNELS: usize = 64;

/// The lifetime granted for a requested LIFETIME: default when absent or smaller, capped at the
/// maximum; an explicit 0 (Refresh only) means "delete now".
pub fn grant_lifetime(requested: Option<u32>) -> Duration {
    match requested {
        Some(0) => Duration::ZERO,
        Some(s) => Duration::from_secs(s as u64).clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
        None => DEFAULT_LIFETIME,
    }
}

/// Why a request about an allocation was refused: the STUN error code to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// 400: channel number out of range, or already bound to another peer (or the peer to
    /// another channel).
    BadChannel,
    /// 508: too many permissions or channels on this allocation.
    TooMany,
}

impl StateError {
    pub fn code(self) -> u16 {
        match self {
            StateError::BadChannel => 400,
            StateError::TooMany => 508,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
pub struct AllocationState {
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    by_peer: HashMap<SocketAddr, u16>,
}

impl AllocationState {
    pub fn new(now: Instant, lifetime: Duration) -> Self {
        AllocationState {
            expires: now + lifetime,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_peer: HashMap::new(),
        }
    }

    /// Refresh: a zero lifetime expires the allocation now.
    pub fn refresh(&mut self, now: Instant, lifetime: Duration) {
        self.expires = now + lifetime;
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires
    }

    /// Seconds left, for the LIFETIME attribute.
    pub fn remaining_secs(&self, now: Instant) -> u32 {
        self.expires.saturating_duration_since(now).as_secs().min(u32::MAX as u64) as u32
    }

    /// Install or refresh permissions for all of `ips`, or none of them.
    pub fn add_permissions(&mut self, ips: &[IpAddr], now: Instant) -> Result<(), StateError> {
        self.prune(now);
        let new = ips.iter().filter(|ip| !self.permissions.contains_key(ip)).count();
        if self.permissions.len() + new > MAX_PERMISSIONS {
            return Err(StateError::TooMany);
        }
        for ip in ips {
            self.permissions.insert(*ip, now + PERMISSION_LIFETIME);
        }
        Ok(())
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&e| e > now)
    }

    /// Bind (or refresh) `number` to `peer`; installs or refreshes the peer's permission too.
    pub fn bind_channel(&mut self, number: u16, peer: SocketAddr, now: Instant) -> Result<(), StateError> {
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return Err(StateError::BadChannel);
        }
        self.prune(now);
        match (self.channels.get(&number), self.by_peer.get(&peer)) {
            (Some(c), _) if c.peer != peer => return Err(StateError::BadChannel),
            (_, Some(&n)) if n != number => return Err(StateError::BadChannel),
            (None, _) if self.channels.len() >= MAX_CHANNELS => return Err(StateError::TooMany),
            _ => {}
        }
        self.add_permissions(&[peer.ip()], now)?;
        self.channels.insert(number, Channel { peer, expires: now + CHANNEL_LIFETIME });
        self.by_peer.insert(peer, number);
        Ok(())
    }

    /// The peer a channel is bound to.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels.get(&number).filter(|c| c.expires > now).map(|c| c.peer)
    }

    /// The channel bound to a peer.
    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let n = *self.by_peer.get(&peer)?;
        self.channel_peer(n, now).map(|_| n)
    }

    /// Forget expired permissions and channels.
    pub fn prune(&mut self, now: Instant) {
        self.permissions.retain(|_, e| *e > now);
        let before = self.channels.len();
        self.channels.retain(|_, c| c.expires > now);
        if self.channels.len() != before {
            let channels = &self.channels;
            self.by_peer.retain(|_, n| channels.contains_key(n));
        }
    }

    pub fn permissions(&self) -> usize {
        self.permissions.len()
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }
}

/// A token bucket in bytes: `rate` bytes per second, bursts up to one second's worth (at least
/// 64 KiB). Rate 0 is unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        let rate = bytes_per_sec as f64;
        let burst = rate.max(65_536.0);
        TokenBucket { rate, burst, tokens: burst, last: now }
    }

    /// Take `n` bytes; false (and nothing taken) when over the cap.
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lifetimes() {
        assert_eq!(grant_lifetime(None), DEFAULT_LIFETIME);
        assert_eq!(grant_lifetime(Some(0)), Duration::ZERO);
        assert_eq!(grant_lifetime(Some(30)), DEFAULT_LIFETIME);
        assert_eq!(grant_lifetime(Some(1200)), Duration::from_secs(1200));
        assert_eq!(grant_lifetime(Some(u32::MAX)), MAX_LIFETIME);
        let t0 = Instant::now();
        let mut a = AllocationState::new(t0, DEFAULT_LIFETIME);
        assert_eq!(a.remaining_secs(t0), 600);
        assert!(!a.is_expired(t0 + Duration::from_secs(599)));
        assert!(a.is_expired(t0 + Duration::from_secs(600)));
        a.refresh(t0 + Duration::from_secs(500), Duration::from_secs(600));
        assert!(!a.is_expired(t0 + Duration::from_secs(1000)));
        a.refresh(t0, Duration::ZERO);
        assert!(a.is_expired(t0));
    }

    #[test]
    fn permissions_expire_and_are_capped() {
        let t0 = Instant::now();
        let mut a = AllocationState::new(t0, DEFAULT_LIFETIME);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!a.has_permission(ip, t0));
        a.add_permissions(&[ip], t0).unwrap();
        assert!(a.has_permission(ip, t0 + Duration::from_secs(299)));
        assert!(!a.has_permission(ip, t0 + Duration::from_secs(300)));
        let many: Vec<IpAddr> =
            (0..=MAX_PERMISSIONS as u32).map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes())).collect();
        assert_eq!(a.add_permissions(&many, t0), Err(StateError::TooMany));
        assert_eq!(a.permissions(), 1, "all or nothing");
        assert!(a.add_permissions(&many[..MAX_PERMISSIONS - 1], t0).is_ok());
        a.prune(t0 + Duration::from_secs(301));
        assert_eq!(a.permissions(), 0);
    }

    #[test]
    fn channel_binding_rules() {
        let t0 = Instant::now();
        let mut a = AllocationState::new(t0, DEFAULT_LIFETIME);
        let (p1, p2) = (sa("127.0.0.1:5000"), sa("127.0.0.1:5001"));
        assert_eq!(a.bind_channel(0x3fff, p1, t0), Err(StateError::BadChannel));
        assert_eq!(a.bind_channel(0x8000, p1, t0), Err(StateError::BadChannel));
        a.bind_channel(0x4000, p1, t0).unwrap();
        assert!(a.has_permission(p1.ip(), t0));
        assert_eq!(a.channel_peer(0x4000, t0), Some(p1));
        assert_eq!(a.channel_of(p1, t0), Some(0x4000));
        a.bind_channel(0x4000, p1, t0 + Duration::from_secs(100)).unwrap();
        assert_eq!(a.bind_channel(0x4000, p2, t0), Err(StateError::BadChannel), "number taken");
        assert_eq!(a.bind_channel(0x4001, p1, t0), Err(StateError::BadChannel), "peer taken");
        a.bind_channel(0x4001, p2, t0).unwrap();
        let later = t0 + Duration::from_secs(650);
        assert_eq!(a.channel_peer(0x4001, later), None, "expired");
        assert_eq!(a.channel_peer(0x4000, later), Some(p1), "refreshed at 100 s");
        a.prune(later);
        assert_eq!(a.channels(), 1);
        assert_eq!(a.channel_of(p2, later), None);
        a.bind_channel(0x4002, p2, later).unwrap();
    }

    #[test]
    fn channels_are_capped() {
        let t0 = Instant::now();
        let mut a = AllocationState::new(t0, DEFAULT_LIFETIME);
        for i in 0..MAX_CHANNELS as u16 {
            a.bind_channel(0x4000 + i, SocketAddr::from(([127, 0, 0, 1], 6000 + i)), t0).unwrap();
        }
        assert_eq!(a.bind_channel(0x5000, sa("127.0.0.1:7000"), t0), Err(StateError::TooMany));
    }

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100_000, t0);
        assert!(b.take(100_000, t0), "one second of burst");
        assert!(!b.take(1, t0));
        assert!(b.take(10_000, t0 + Duration::from_millis(100)));
        assert!(!b.take(10_000, t0 + Duration::from_millis(100)));
        let mut free = TokenBucket::new(0, t0);
        assert!(free.take(usize::MAX, t0));
        let mut small = TokenBucket::new(1000, t0);
        assert!(small.take(65_536, t0), "burst is at least 64 KiB");
        assert!(!small.take(1000, t0 + Duration::from_millis(500)));
    }
}
