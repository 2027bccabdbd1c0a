//! Which peers a relay may talk to: CIDR blocks and the default policy.
//!
//! A TURN relay sends UDP wherever its client asks, so an open relay is a way into the server's
//! own network (and a free proxy towards everyone else's). The default is the narrowest that
//! works: a relay reaches the server's own media address(es), the one peer a browser talking to
//! this server needs, on the media port only; nothing else, public or private.
//! `--turn-allow-peer CIDR` opens more: `0.0.0.0/0` and `::/0` open every address but the
//! never-allowed ones below (loopback and private ranges included: the old "public unicast"
//! default plus the private ranges; tests allow `127.0.0.0/8`). Never allowed, whatever is
//! configured: the unspecified address, multicast, broadcast, and the server's own TURN ports (a
//! relay looping into its own listener).
//!
//! [`is_public_unicast`] and [`is_never_target`] also judge the hosts of `rtsp://` pulls
//! ([`crate::rtsp`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network such as `127.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or
/// /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {0:?} (want e.g. 127.0.0.0/8 or ::1/128)")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr { net: mask(ip, prefix), prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & m == u32::from(Ipv4Addr::from(net)) & m
}

fn v6_in(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    let n = Ipv6Addr::new(net[0], net[1], net[2], net[3], net[4], net[5], net[6], net[7]);
    u128::from(ip) & m == u128::from(n) & m
}

/// Never a target (of a relay, of an RTSP pull), whatever is configured: the unspecified address
/// (connecting to it reaches the host itself), multicast and broadcast.
pub fn is_never_target(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// A globally routable unicast address: not loopback, private (RFC 1918, ULA), link-local,
/// shared (RFC 6598), documentation, benchmarking, reserved, multicast, or a v6 transition
/// prefix that embeds an arbitrary IPv4 address (6to4, Teredo, NAT64).
pub fn is_public_unicast(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            const NOT_PUBLIC: &[([u8; 4], u32)] = &[
                ([0, 0, 0, 0], 8),       // "this network"
                ([10, 0, 0, 0], 8),      // private
                ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
                ([127, 0, 0, 0], 8),     // loopback
                ([169, 254, 0, 0], 16),  // link-local
                ([172, 16, 0, 0], 12),   // private
                ([192, 0, 0, 0], 24),    // IETF protocol assignments
                ([192, 0, 2, 0], 24),    // documentation
                ([192, 88, 99, 0], 24),  // 6to4 relay anycast
                ([192, 168, 0, 0], 16),  // private
                ([198, 18, 0, 0], 15),   // benchmarking
                ([198, 51, 100, 0], 24), // documentation
                ([203, 0, 113, 0], 24),  // documentation
                ([224, 0, 0, 0], 4),     // multicast
                ([240, 0, 0, 0], 4),     // reserved, broadcast
            ];
            !NOT_PUBLIC.iter().any(|&(net, p)| v4_in(v4, net, p))
        }
        IpAddr::V6(v6) => {
            const NOT_PUBLIC: &[([u16; 8], u32)] = &[
                ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments, Teredo
                ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
                ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), // 6to4
                ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation
            ];
            // Global unicast is 2000::/3; everything else (::1, fc00::/7, fe80::/10, ff00::/8,
            // 64:ff9b::/96, ...) is not public.
            v6_in(v6, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3)
                && !NOT_PUBLIC.iter().any(|&(net, p)| v6_in(v6, net, p))
        }
    }
}

/// The relay policy of one server: configured CIDRs, its own media addresses and TURN ports.
/// With no CIDR configured, only the own media addresses (address and port) are reachable.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allowed: Vec<Cidr>,
    own_media: Vec<SocketAddr>,
    own_ips: Vec<IpAddr>,
    turn_ports: Vec<u16>,
}

impl PeerPolicy {
    /// `own_media`: the media socket addresses browsers reach the server on (its ICE candidates).
    /// `own_ips`: every address of this server that is known (advertised, bound);
    /// `turn_ports`: the TURN listener ports, never a relay target on those addresses.
    pub fn new(
        allowed: Vec<Cidr>,
        own_media: Vec<SocketAddr>,
        own_ips: Vec<IpAddr>,
        turn_ports: Vec<u16>,
    ) -> Self {
        let mut own_ips: Vec<IpAddr> = own_ips.into_iter().map(canonical).collect();
        own_ips.extend(own_media.iter().map(|a| canonical(a.ip())));
        own_ips.sort();
        own_ips.dedup();
        PeerPolicy { allowed, own_media, own_ips, turn_ports }
    }

    /// In a configured CIDR (`--turn-allow-peer`); nothing is by default.
    fn allowed_ip(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|c| c.contains(ip))
    }

    fn is_own_media_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.own_media.iter().any(|a| canonical(a.ip()) == ip)
    }

    /// May a permission for `ip` be installed (CreatePermission; permissions are per address).
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        !is_never_target(ip) && (self.allowed_ip(ip) || self.is_own_media_ip(ip))
    }

    /// May datagrams go to, or come from, `peer` (ChannelBind, Send, Data, ChannelData).
    pub fn permits_addr(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if is_never_target(ip) {
            return false;
        }
        let own = ip.is_loopback() || self.own_ips.contains(&ip);
        if own && self.turn_ports.contains(&peer.port()) {
            return false;
        }
        self.allowed_ip(ip)
            || self.own_media.iter().any(|a| canonical(a.ip()) == ip && a.port() == peer.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("127.1.2.3")));
        assert!(c.contains(ip("::ffff:127.0.0.1")));
        assert!(!c.contains(ip("128.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let c: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd00::2")) && !v6.contains(ip("fe80::1")));
        for bad in ["", "1.2.3.4/33", "::/129", "x/8", "1.2.3.4/", "1.2.3/8", "1.2.3.4/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn public_unicast() {
        for p in ["8.8.8.8", "1.1.1.1", "203.0.114.1", "2606:4700::1111", "::ffff:8.8.4.4"] {
            assert!(is_public_unicast(ip(p)), "{p}");
        }
        for n in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.2",
            "::1",
            "::",
            "fd00::2",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "64:ff9b::a00:1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_unicast(ip(n)), "{n}");
        }
    }

    #[test]
    fn default_policy_is_own_media_only() {
        let p = PeerPolicy::new(vec![], vec![sa("192.168.1.5:31000")], vec![], vec![3478]);
        // The server's own media address: the address is permitted, only the media port is.
        assert!(p.permits_ip(ip("192.168.1.5")));
        assert!(p.permits_ip(ip("::ffff:192.168.1.5")));
        assert!(p.permits_addr(sa("192.168.1.5:31000")));
        assert!(!p.permits_addr(sa("192.168.1.5:22")));
        assert!(!p.permits_addr(sa("192.168.1.5:3478")));
        // Nothing else: neither public addresses (no free proxy) nor private ones.
        for denied in [
            "8.8.8.8",
            "2606:4700::1111",
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.6",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(!p.permits_ip(ip(denied)), "{denied}");
            assert!(!p.permits_addr(SocketAddr::new(ip(denied), 31000)), "{denied}");
        }
    }

    #[test]
    fn allowed_cidrs_open_more_but_never_everything() {
        let allow = vec!["127.0.0.0/8".parse().unwrap(), "0.0.0.0/0".parse().unwrap()];
        let p = PeerPolicy::new(allow, vec![sa("127.0.0.1:31000")], vec![ip("127.0.0.1")], vec![3478, 443]);
        assert!(p.permits_ip(ip("127.0.0.1")));
        assert!(p.permits_addr(sa("127.0.0.1:40000")));
        assert!(!p.permits_addr(sa("127.0.0.1:3478")), "own TURN port");
        assert!(!p.permits_addr(sa("127.0.0.2:443")), "loopback TURN port");
        assert!(!p.permits_ip(ip("224.0.0.1")));
        assert!(!p.permits_ip(ip("255.255.255.255")));
        assert!(!p.permits_ip(ip("0.0.0.0")));
        assert!(p.permits_ip(ip("10.0.0.1")));
        assert!(p.permits_addr(sa("8.8.8.8:5000")), "0.0.0.0/0: public addresses too");
        assert!(!p.permits_ip(ip("2606:4700::1111")), "0.0.0.0/0 is IPv4 only");
        // A CIDR opens just itself.
        let p = PeerPolicy::new(vec!["203.0.113.0/24".parse().unwrap()], vec![], vec![], vec![3478]);
        assert!(p.permits_addr(sa("203.0.113.9:5000")));
        assert!(!p.permits_addr(sa("203.0.114.9:5000")) && !p.permits_ip(ip("8.8.8.8")));
    }

    #[test]
    fn never_targets() {
        for n in ["0.0.0.0", "::", "224.0.0.1", "239.1.2.3", "255.255.255.255", "ff02::1", "::ffff:224.0.0.1"]
        {
            assert!(is_never_target(ip(n)), "{n}");
        }
        for t in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1"] {
            assert!(!is_never_target(ip(t)), "{t}");
        }
    }
}
