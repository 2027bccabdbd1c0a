//! Limits against abuse: sessions per client address (loopback exempt), published streams, viewers per stream and
//! WebSocket messages per second. Each refusal is a clear error to the client, logged once per
//! client (session) and counted ([`LimitStats`], in `/health`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;

/// The configured limits (0 means unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    pub sessions_per_ip: usize,
    pub streams: usize,
    pub viewers_per_stream: usize,
    /// Sustained WebSocket messages per second per session; bursts of twice as many pass.
    pub messages_per_sec: u32,
    /// Video kbit/s a WebRTC publisher may send (see [`crate::publisher::OVER_LIMIT_SECONDS`]
    /// and [`crate::media_socket::MediaSocket::set_publish_limit`]).
    pub publish_kbps: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            sessions_per_ip: 100,
            streams: 1000,
            viewers_per_stream: 1000,
            messages_per_sec: 50,
            publish_kbps: 20_000,
        }
    }
}

/// Refusals so far, by limit.
#[derive(Debug, Default)]
pub struct LimitStats {
    pub sessions: AtomicU64,
    pub streams: AtomicU64,
    pub viewers: AtomicU64,
    pub messages: AtomicU64,
}

/// The reasons clients get.
pub const TOO_MANY_SESSIONS: &str = "Too many sessions from this address";
pub const TOO_MANY_STREAMS: &str = "Too many streams on this server";
pub const TOO_MANY_VIEWERS: &str = "Too many viewers of this stream";
pub const TOO_MANY_MESSAGES: &str = "Too many messages: slow down";

/// The limits and the live counts they need.
#[derive(Debug, Default)]
pub struct Limits {
    pub cfg: LimitConfig,
    sessions: DashMap<IpAddr, usize>,
    pub stats: LimitStats,
}

impl Limits {
    pub fn new(cfg: LimitConfig) -> Self {
        Limits { cfg, sessions: DashMap::new(), stats: LimitStats::default() }
    }

    /// Count a new session of `ip`; false (and nothing counted) when it has too many. Loopback
    /// clients are not limited: a reverse proxy on this host brings every client from there.
    pub fn open_session(&self, ip: IpAddr) -> bool {
        let mut n = self.sessions.entry(ip).or_insert(0);
        if self.cfg.sessions_per_ip > 0 && *n >= self.cfg.sessions_per_ip && !ip.is_loopback() {
            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *n += 1;
        true
    }

    /// WebSocket sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions.iter().map(|e| *e.value()).sum()
    }

    /// A session of `ip` counted by [`Limits::open_session`] ended.
    pub fn close_session(&self, ip: IpAddr) {
        if let dashmap::Entry::Occupied(mut e) = self.sessions.entry(ip) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// May one more stream be published, with `published` running now?
    pub fn may_publish(&self, published: usize) -> bool {
        let ok = self.cfg.streams == 0 || published < self.cfg.streams;
        if !ok {
            self.stats.streams.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// May one more viewer join a stream that has `viewers` now?
    pub fn may_view(&self, viewers: usize) -> bool {
        let ok = self.cfg.viewers_per_stream == 0 || viewers < self.cfg.viewers_per_stream;
        if !ok {
            self.stats.viewers.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn message_bucket(&self) -> MessageBucket {
        let rate = self.cfg.messages_per_sec as f64;
        MessageBucket { rate, burst: rate * 2.0, tokens: rate * 2.0, at: Instant::now() }
    }

    pub fn count_message_refusal(&self) {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
    }
}

/// A session's message budget (token bucket); a rate of 0 never refuses.
#[derive(Debug, Clone)]
pub struct MessageBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl MessageBucket {
    /// Take one message; false when over the rate.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sessions_streams_viewers() {
        let l = Limits::new(LimitConfig {
            sessions_per_ip: 2,
            streams: 1,
            viewers_per_stream: 3,
            messages_per_sec: 0,
            publish_kbps: 0,
        });
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        assert!(l.open_session(ip) && l.open_session(ip) && !l.open_session(ip));
        l.close_session(ip);
        assert!(l.open_session(ip));
        l.close_session(ip);
        l.close_session(ip);
        l.close_session(ip); // more closes than opens: harmless
        assert!(l.sessions.is_empty());
        assert!(l.may_publish(0) && !l.may_publish(1));
        assert!(l.may_view(2) && !l.may_view(3));
        assert_eq!(l.stats.sessions.load(Ordering::Relaxed), 1);
        assert!(Limits::new(LimitConfig { streams: 0, ..Default::default() }).may_publish(1_000_000));
    }

    #[test]
    fn message_bucket() {
        let l = Limits::new(LimitConfig { messages_per_sec: 10, ..Default::default() });
        let mut b = l.message_bucket();
        let t0 = Instant::now();
        let passed = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(passed, 20, "the burst");
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(150)), "refilled at the rate");
        let mut open =
            Limits::new(LimitConfig { messages_per_sec: 0, ..Default::default() }).message_bucket();
        assert!((0..1000).all(|_| open.take(t0)));
    }
}
