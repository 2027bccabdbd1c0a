//! The media socket's UDP system calls: `recvmsg` that also reports which local address each
//! datagram was sent to (`IP_PKTINFO`, `IPV6_PKTINFO`), and `sendmsg` that sends from a chosen
//! local address and, for a run of equal datagrams, in segments (`UDP_SEGMENT`).
//!
//! Why the local address matters: the media socket is bound to the wildcard address by default.
//! On a host with several addresses, the kernel picks the source of each answer from its routing
//! table, which is not always the address the browser sent to; a browser drops a STUN answer
//! from another address (RFC 8445 §7.2.5.2.1), so that path never connects. Answering from the
//! address each datagram arrived at is what a socket bound per address would do.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

/// Ask the kernel to report every datagram's local destination address ([`recv`]).
pub fn enable_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) =
        if v6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) } else { (libc::IPPROTO_IP, libc::IP_PKTINFO) };
    // SAFETY: a c_int option value that outlives the call, with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram read by [`recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub source: SocketAddr,
    /// The local address it was sent to (plain IPv4 for IPv4 on a dual-stack socket); None when
    /// the kernel did not say (the option could not be set).
    pub local: Option<IpAddr>,
}

/// Room for the control messages of one datagram: `in6_pktinfo` (20 bytes) with its header is
/// 40 bytes, plus `UDP_SEGMENT`'s u16 (16 bytes); 8-byte aligned.
type Control = [u64; 12];

/// Read one datagram (non-blocking socket: `WouldBlock` when there is none).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut control: Control = [0; 12];
    // SAFETY: msghdr over buffers (name, iov, control) that outlive the call; the kernel writes
    // at most the lengths given; control messages are read with the cmsg(3) macros within
    // msg_controllen as the kernel set it.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut name as *mut libc::sockaddr_storage as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of::<Control>() as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let source = socket_addr(&name).ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
        let mut local = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)).to_canonical());
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(Received { len: n as usize, source, local })
    }
}

/// The IP address and port in a `sockaddr_storage` the kernel filled.
fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which sockaddr the storage holds; the storage is large and
    // aligned enough for either.
    unsafe {
        match name.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(name as *const libc::sockaddr_storage as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                let a = &*(name as *const libc::sockaddr_storage as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let port = u16::from_be(a.sin6_port);
                // The scope: a link-local source is answered on its link.
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id)))
            }
            _ => None,
        }
    }
}

/// Send `iov` to `to` in one `sendmsg`: from the local address `from` when given (it must be
/// an address of this host, of the socket's family or IPv4 on a dual-stack socket), and cut
/// into datagrams of `segment` bytes when given (`UDP_SEGMENT`; the last may be shorter).
/// An address `from` that is no longer this host's (renumbered) leaves the choice to the
/// routing table. Returns the bytes sent.
pub fn send(
    fd: RawFd,
    to: &socket2::SockAddr,
    iov: &mut [libc::iovec],
    from: Option<IpAddr>,
    segment: Option<u16>,
) -> io::Result<usize> {
    match sendmsg(fd, to, iov, from, segment) {
        Err(e) if from.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
            sendmsg(fd, to, iov, None, segment)
        }
        r => r,
    }
}

fn sendmsg(
    fd: RawFd,
    to: &socket2::SockAddr,
    iov: &mut [libc::iovec],
    from: Option<IpAddr>,
    segment: Option<u16>,
) -> io::Result<usize> {
    let mut control: Control = [0; 12];
    // SAFETY: the header points into `to`, `iov` and `control`, which outlive the call;
    // sendmsg keeps none of them.
    let sent = unsafe {
        let msg = header(to, iov, from, segment, &mut control);
        libc::sendmsg(fd, &msg, 0)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// The space a [`header`] needs for its control messages.
pub type SendControl = Control;

/// A `sendmsg` header for `iov` to `to`, from the local address `from` when given and cut into
/// datagrams of `segment` bytes when given, its control messages written into `control`.
///
/// # Safety
/// The header points into `to`, `iov` and `control`: it must not be used after any of them
/// moves or is dropped.
pub unsafe fn header(
    to: &socket2::SockAddr,
    iov: &mut [libc::iovec],
    from: Option<IpAddr>,
    segment: Option<u16>,
    control: &mut Control,
) -> libc::msghdr {
    let v6_socket = to.is_ipv6();
    // SAFETY: msghdr and control messages built as cmsg(3) describes; the control space
    // reserved covers every message written (at most one pktinfo and one u16).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = to.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = to.len();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        let pktinfo_len = match (from, v6_socket) {
            (Some(IpAddr::V4(_)), false) => std::mem::size_of::<libc::in_pktinfo>(),
            (Some(_), true) => std::mem::size_of::<libc::in6_pktinfo>(),
            _ => 0,
        };
        let mut space = 0;
        if pktinfo_len > 0 {
            space += libc::CMSG_SPACE(pktinfo_len as u32) as usize;
        }
        if segment.is_some() {
            space += libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        }
        if space == 0 {
            return msg;
        }
        *control = [0; 12];
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        if pktinfo_len > 0 {
            (*cmsg).cmsg_len = libc::CMSG_LEN(pktinfo_len as u32) as _;
            match from {
                Some(IpAddr::V4(ip)) if !v6_socket => {
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    let mut info: libc::in_pktinfo = std::mem::zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                }
                Some(ip) => {
                    // IPv4 on a dual-stack socket goes as v4-mapped (the kernel's IPv4 path
                    // takes IPV6_PKTINFO with a mapped address).
                    let v6 = match ip {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    let mut info: libc::in6_pktinfo = std::mem::zeroed();
                    info.ipi6_addr.s6_addr = v6.octets();
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                }
                None => unreachable!("pktinfo_len is 0 without an address"),
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if let Some(size) = segment {
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, size);
        }
        msg
    }
}

/// Send several messages ([`header`]s) in one `sendmmsg`. Returns how many the kernel took
/// (from the first); an error means the first was refused (the caller sends it by itself to
/// learn why, and goes on with the rest).
///
/// # Safety
/// Every header must point into buffers still alive (see [`header`]).
pub unsafe fn sendmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: as the caller promises; the kernel writes only each message's `msg_len`.
    let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as _, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn one(buf: &[u8]) -> [libc::iovec; 1] {
        [libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() }]
    }

    /// A wildcard socket learns which loopback address a client sent to, and answers from it;
    /// without the address the kernel picks 127.0.0.1 (the loopback route's source), which is
    /// what a browser would drop.
    #[test]
    fn answers_from_the_address_the_datagram_arrived_at() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = server.local_addr().unwrap().port();
        enable_pktinfo(server.as_raw_fd(), false).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let client = UdpSocket::bind("127.0.0.5:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.send_to(b"check", ("127.0.0.2", port)).unwrap();
        let mut buf = [0u8; 256];
        let got = recv(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got.len, 5);
        assert_eq!(got.source, client.local_addr().unwrap());
        assert_eq!(got.local, Some("127.0.0.2".parse().unwrap()));

        let to = socket2::SockAddr::from(got.source);
        for (from, seen) in [(None, "127.0.0.1"), (got.local, "127.0.0.2")] {
            send(server.as_raw_fd(), &to, &mut one(b"answer"), from, None).unwrap();
            let (n, src) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], src.ip().to_string().as_str()), (&b"answer"[..], seen));
        }
        // From the address and in segments at once.
        let (a, b) = ([1u8; 100], [2u8; 60]);
        let mut iov = [one(&a)[0], one(&b)[0]];
        match send(server.as_raw_fd(), &to, &mut iov, got.local, Some(100)) {
            Ok(n) => {
                assert_eq!(n, 160);
                for (len, mark) in [(100, 1), (60, 2)] {
                    let (n, src) = client.recv_from(&mut buf).unwrap();
                    assert_eq!((n, buf[0], src.ip().to_string()), (len, mark, "127.0.0.2".into()));
                }
            }
            Err(e) => println!("UDP_SEGMENT refused here ({e}): segments not checked"),
        }
    }

    /// A dual-stack socket reports IPv4 arrivals as plain IPv4 and answers IPv4 from them.
    #[test]
    fn dual_stack_socket_reports_and_answers_ipv4() {
        let Ok(server) = UdpSocket::bind("[::]:0") else {
            return; // no IPv6 on this host
        };
        let port = server.local_addr().unwrap().port();
        enable_pktinfo(server.as_raw_fd(), true).unwrap();
        let client = UdpSocket::bind("127.0.0.6:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.send_to(b"check", ("127.0.0.3", port)).unwrap();
        let mut buf = [0u8; 256];
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let got = recv(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got.local, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(got.source.ip().to_canonical(), client.local_addr().unwrap().ip());
        let to = socket2::SockAddr::from(got.source);
        send(server.as_raw_fd(), &to, &mut one(b"answer"), got.local, None).unwrap();
        let (_, src) = client.recv_from(&mut buf).unwrap();
        assert_eq!(src.ip().to_string(), "127.0.0.3");
    }
}
