//! Where the server may connect out to, on a client's word: RTSP pulls (`--rtsp-allow`), RTMP
//! re-publishing (`--rtmp-push-allow`) and WebRTC pulls from other servers (`--pull-allow`) all
//! connect to a URL somebody else chose, so each obeys an allow-list of [`HostPattern`]s:
//!
//! - empty (the default): only hosts whose **every** address is public unicast
//!   ([`is_public_unicast`]: never loopback, RFC 1918 or fc00::/7, link-local, CGNAT 100.64/10,
//!   documentation, reserved...), so a stream name or URL cannot reach the host's own network;
//! - with patterns, only what they match, private hosts included: a host name pattern
//!   (`*.cams.example.com`) matches the name as written (the operator's DNS is trusted for it);
//!   an address pattern (`192.168.1.*`, `fd00::*`) or CIDR (`192.168.1.0/24`) must match every
//!   address the host resolves to; `*` alone allows any host;
//! - never, whatever is configured: unspecified, multicast, broadcast ([`is_never_target`]).
//!
//! [`resolve_checked`] resolves a host once (off the arbiter's thread), checks every address and
//! returns them: the caller connects to a checked address itself, so a second DNS answer cannot
//! send it elsewhere (DNS rebinding).

use std::net::{IpAddr, SocketAddr};

use crate::turn_core::policy::{canonical, is_never_target, is_public_unicast, Cidr};

/// A pattern of the allow-list (case-insensitive):
/// - `*` alone: any host;
/// - an address pattern, IPv4 (digits, dots, `*`: `192.168.1.*`) or IPv6 (with `:`: `fd00::*`,
///   matched against the compressed form), or a CIDR (`192.168.1.0/24`, `fd00::/8`): matches
///   addresses, the ones a host resolves to;
/// - anything else is a host name pattern, `*` matching any run of characters
///   (`*.cams.example.com`): matches the URL's host name as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HostPattern(PatternKind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    Any,
    Name(String),
    Address(String),
    Cidr(Cidr),
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err =
            || format!("{s:?} is not a host pattern (a host name or address, '*' as wildcard, or a CIDR)");
        let p = s.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if p.contains('/') {
            return p.parse::<Cidr>().map(|c| HostPattern(PatternKind::Cidr(c))).map_err(|_| err());
        }
        let ok = !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-.:*_".contains(c));
        if !ok {
            return Err(err());
        }
        let kind = if p.chars().all(|c| c == '*') {
            PatternKind::Any
        } else if p.contains(':') || p.chars().all(|c| c.is_ascii_digit() || ".*".contains(c)) {
            PatternKind::Address(p)
        } else {
            PatternKind::Name(p)
        };
        Ok(HostPattern(kind))
    }
}

impl HostPattern {
    /// Does the pattern match `host` as written in a URL (an address literal is matched as an
    /// address, anything else as a name)?
    pub fn matches(&self, host: &str) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        match h.parse::<IpAddr>() {
            Ok(ip) => self.matches_ip(ip),
            Err(_) => self.matches_name(h),
        }
    }

    /// Does a name pattern (or `*`) match the host name `host`?
    pub fn matches_name(&self, host: &str) -> bool {
        match &self.0 {
            PatternKind::Any => true,
            PatternKind::Name(p) => glob(p.as_bytes(), host.to_ascii_lowercase().as_bytes()),
            PatternKind::Address(_) | PatternKind::Cidr(_) => false,
        }
    }

    /// Does an address pattern or CIDR (or `*`) match `ip`?
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match &self.0 {
            PatternKind::Any => true,
            PatternKind::Address(p) => glob(p.as_bytes(), ip.to_string().as_bytes()),
            PatternKind::Cidr(c) => c.contains(ip),
            PatternKind::Name(_) => false,
        }
    }

    pub fn is_name(&self) -> bool {
        matches!(self.0, PatternKind::Any | PatternKind::Name(_))
    }
}

/// `*` matches any run of bytes; everything else itself.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// May the server connect to `host` (as written in the URL), which resolves to `addrs` (all of
/// them), under the allow-list `allow`? See the module docs.
pub fn permits(allow: &[HostPattern], host: &str, addrs: &[IpAddr]) -> bool {
    if addrs.is_empty() || addrs.iter().any(|&ip| is_never_target(ip)) {
        return false;
    }
    if allow.is_empty() {
        return addrs.iter().all(|&ip| is_public_unicast(ip));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let by_name = host.parse::<IpAddr>().is_err() && allow.iter().any(|p| p.matches_name(host));
    by_name || addrs.iter().all(|&ip| allow.iter().any(|p| p.matches_ip(ip)))
}

/// What can be decided before resolving `host`: Some(verdict) for an address literal, or for a
/// name no pattern could allow; None when the answer depends on the addresses.
pub fn precheck(allow: &[HostPattern], host: &str) -> Option<bool> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(permits(allow, h, &[ip]));
    }
    let only_names = !allow.is_empty() && allow.iter().all(HostPattern::is_name);
    (only_names && !allow.iter().any(|p| p.matches_name(h))).then_some(false)
}

/// Why a host may not be connected to.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    /// The host is, or resolves to, an address the allow-list does not allow.
    #[error("{host} ({addresses}) is not allowed: loopback, private and link-local hosts need an allow-list entry")]
    Refused { host: String, addresses: String },
}

/// Resolve `host` (an address literal: itself; a name: with tokio's resolver, off the
/// arbiter's thread), check every address against `allow`, and return them with `port`.
pub async fn resolve_checked(
    allow: &[HostPattern],
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, OutboundError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| OutboundError::Resolve { host: host.to_string(), why: e.to_string() })?
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
            .collect(),
    };
    if addrs.is_empty() {
        return Err(OutboundError::Resolve { host: host.to_string(), why: "no address".into() });
    }
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    if !permits(allow, host, &ips) {
        let addresses = ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        return Err(OutboundError::Refused { host: host.to_string(), addresses });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<HostPattern> {
        p.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn loopback_needs_an_entry_and_the_checked_addresses_come_back() {
        let e = resolve_checked(&[], "127.0.0.1", 80).await.unwrap_err();
        assert!(matches!(e, OutboundError::Refused { .. }), "{e}");
        let ok = resolve_checked(&pats(&["127.0.0.1"]), "127.0.0.1", 8080).await.unwrap();
        assert_eq!(ok, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(resolve_checked(&pats(&["*"]), "0.0.0.0", 80).await.is_err());
        assert_eq!(precheck(&[], "10.1.2.3"), Some(false));
        assert_eq!(precheck(&pats(&["*.lan"]), "evil.example"), Some(false));
        assert_eq!(precheck(&pats(&["10.0.0.0/8"]), "cam.lan"), None);
    }
}
