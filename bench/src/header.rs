//! Header-mode subscribers (`--count-mode header`, the default): the cheap receive path.
//!
//! Each subscriber keeps its str0m `Rtc` for everything a viewer must do towards the server:
//! the signalling answer, ICE (consent-freshness STUN), the DTLS handshake and RTCP (the
//! server's sender reports in, str0m's receiver reports out). Media is what costs: hundreds of
//! SRTP packets per second per viewer, each decrypted, registered and handed out by str0m, and
//! (in the str0m mode) a `recv_from` per packet plus one failing `recv_from` and one
//! `handle_input` per subscriber per poll of every subscriber. Here instead:
//!
//! - one `epoll` instance per worker thread over all its subscribers' non-blocking sockets
//!   (level-triggered), and after each round of reads a pause ([`RECV_PAUSE_MS`]) so that
//!   packets gather;
//! - each ready socket read with `recvmmsg`, [`BATCH`] datagrams per call;
//! - each datagram classified by its first byte (RFC 7983): 0..=3 STUN and 20..=63 DTLS go to
//!   str0m, 128..=191 is RTP or RTCP; RTCP (payload type 64..=95 after masking the marker bit,
//!   i.e. packet types 192..=223, which holds SR/RR/SDES/BYE/APP/RTPFB/PSFB/XR 200..=207) goes
//!   to str0m; RTP media is counted from its clear-text header (SRTP encrypts only the
//!   payload): SSRC and sequence number give the packets, bytes and sequence gaps per SSRC, as
//!   in the str0m mode;
//! - str0m's timers served by a sweep over the subscribers' deadlines once per loop.
//!
//! The first keyframe: its payload is encrypted, so each subscriber is first run exactly as in
//! the str0m mode (every datagram to str0m, packets counted from `Event::RtpPacket`) until the
//! first keyframe packet is seen (`starts_keyframe` on the decrypted payload, the same join-time
//! figure as before), or [`KEYFRAME_WAIT`] after its first RTP packet without one; then it
//! switches to counting headers. The per-SSRC sequence state carries over. Probe subscribers of
//! the edge mode need payloads (frame fingerprints) and stay in the str0m path throughout.
//!
//! What the server no longer gets from a header-mode viewer: NACKs (str0m never sees a gap),
//! transport-wide CC feedback (hence `--twcc` is refused in this mode: see `main`), and
//! receiver reports that count the media (str0m still sends reports, about the packets it saw
//! before the switch). sluice uses none of these for a viewer without transport-wide-cc.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::Input;

use crate::{drain, Sub};

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 64;
/// Bytes per datagram buffer: sluice's packets are ≤ 1200 bytes (str0m's MTU 1150 + SRTP).
const BUF_LEN: usize = 2048;
/// The default sleep after each round of reads (`--recv-pause-ms`), so that each socket has
/// several datagrams for one `recvmmsg` (a viewer gets a frame's packets in a burst every
/// 33 ms); it also delays when a packet is seen, which join times include. 300 viewers at
/// 600 kbit/s, the tool's CPU per received packet: 6.0 µs with no pause, 3.05 µs at 2 ms,
/// 2.8 µs at 8 ms (join to first RTP p50 +12 ms).
pub const RECV_PAUSE_MS: f64 = 2.0;
/// The longest a worker waits in `epoll_wait` with no packet, so that str0m's timers and
/// new subscribers are served.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// Switch a subscriber to header counting this long after its first RTP packet even if no
/// keyframe was seen (e.g. an audio-only stream); its join-to-keyframe time then stays unset.
const KEYFRAME_WAIT: Duration = Duration::from_secs(3);
/// Receive buffer per subscriber socket, bytes (the kernel doubles it for its bookkeeping):
/// about 2 s of a 2.5 Mbit/s stream. Memory is only taken by packets waiting.
const RCVBUF: libc::c_int = 2 << 20;
/// epoll events per `epoll_wait`.
const EVENTS: usize = 1024;

/// Where a datagram goes, by its first bytes (RFC 7983; RFC 5761 for RTP vs RTCP).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Kind {
    Stun,
    Dtls,
    Rtcp,
    Rtp,
    Other,
}

pub fn classify(d: &[u8]) -> Kind {
    match d.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if d.len() >= 2 && (64..=95).contains(&(d[1] & 0x7f)) => Kind::Rtcp,
        Some(128..=191) if d.len() >= 12 => Kind::Rtp,
        _ => Kind::Other,
    }
}

/// The clear-text fields of an RTP header that the count needs: SSRC and sequence number.
pub fn rtp_ssrc_seq(d: &[u8]) -> (u32, u16) {
    (u32::from_be_bytes([d[8], d[9], d[10], d[11]]), u16::from_be_bytes([d[2], d[3]]))
}

/// A 16-bit sequence number extended next to the highest extended one seen (as str0m extends
/// it: the first packet of an SSRC is its own 16-bit value, roll-over counter 0).
pub fn extend_seq(max: u64, seq: u16) -> u64 {
    let delta = seq.wrapping_sub(max as u16) as i16 as i64;
    (max as i64 + delta).max(0) as u64
}

struct Slot {
    sub: Sub,
    local: SocketAddr,
    deadline: Instant,
    /// Counting headers (after the first keyframe); before, str0m gets everything.
    counting: bool,
    probe: bool,
}

impl Slot {
    fn feed(&mut self, src: SocketAddr, d: &[u8], now: Instant) {
        if let Ok(r) = Receive::new(Protocol::Udp, src, self.local, d) {
            let _ = self.sub.rtc.handle_input(Input::Receive(now, r));
        }
        self.deadline = drain(&mut self.sub);
    }

    fn timeout(&mut self, now: Instant) {
        let _ = self.sub.rtc.handle_input(Input::Timeout(now));
        self.deadline = drain(&mut self.sub);
    }

    /// Leave the str0m path once the first keyframe (or KEYFRAME_WAIT) has passed.
    fn maybe_switch(&mut self) {
        if self.counting || self.probe {
            return;
        }
        let st = &self.sub.stats;
        let key = st.first_key_us.load(Ordering::Relaxed);
        let rtp = st.first_rtp_us.load(Ordering::Relaxed);
        let waited = rtp > 0 && self.sub.play_sent.elapsed() > Duration::from_micros(rtp) + KEYFRAME_WAIT;
        self.counting = key > 0 || waited;
    }

    /// Count one RTP packet from its header; returns the subscriber's loss so far (sequence
    /// gaps over all its SSRCs, as `drain` counts them).
    fn count(&mut self, d: &[u8]) -> u64 {
        let (ssrc, seq16) = rtp_ssrc_seq(d);
        let highest = self.sub.seqs.get(&ssrc).map_or(u64::from(seq16), |e| e.1);
        self.sub.note_seq(ssrc, extend_seq(highest, seq16))
    }
}

/// The `recvmmsg` buffers of one worker.
struct Batch {
    bufs: Vec<[u8; BUF_LEN]>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut b = Box::new(Batch {
            bufs: vec![[0u8; BUF_LEN]; BATCH],
            iovs: Vec::with_capacity(BATCH),
            names: vec![zero_name; BATCH],
            msgs: vec![zero_msg; BATCH],
        });
        // The pointers stay valid: the vectors never grow after this.
        for i in 0..BATCH {
            let iov = libc::iovec { iov_base: b.bufs[i].as_mut_ptr().cast(), iov_len: BUF_LEN };
            b.iovs.push(iov);
        }
        for i in 0..BATCH {
            let iov = &mut b.iovs[i] as *mut libc::iovec;
            let name = &mut b.names[i] as *mut libc::sockaddr_storage;
            let h = &mut b.msgs[i].msg_hdr;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_name = name.cast();
        }
        b
    }

    /// Read up to BATCH datagrams from `fd` without blocking; returns how many.
    fn recv(&mut self, fd: i32) -> usize {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_len = 0;
        }
        // SAFETY: msgs point into buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..(self.msgs[i].msg_len as usize).min(BUF_LEN)]
    }

    fn source(&self, i: usize) -> Option<SocketAddr> {
        sockaddr(&self.names[i])
    }
}

fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), 0, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Ask for RCVBUF bytes of receive buffer: SO_RCVBUFFORCE (root) past net.core.rmem_max, else
/// SO_RCVBUF up to it. The default (~212 KB, ~90 loopback packets of ~1.2 KB counted at their
/// truesize) is a quarter of a second at 2.5 Mbit/s: on a shared machine a worker thread
/// waiting that long for a core lost packets the server had sent.
fn grow_receive_buffer(fd: i32) {
    let size: libc::c_int = RCVBUF;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let p = &size as *const libc::c_int as *const libc::c_void;
    // SAFETY: fd is an open socket; p points to a c_int of length len.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
}

/// A worker thread of header-mode subscribers (the counterpart of `run_worker`).
pub fn run_worker(rx: mpsc::Receiver<Sub>, stop: Arc<AtomicBool>, pause: Duration) {
    // SAFETY: plain system call; the fd is closed at the end.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    let mut slots: Vec<Slot> = Vec::new();
    let mut batch = Batch::new();
    // SAFETY: all-zero is a valid epoll_event.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; EVENTS];
    while !stop.load(Ordering::Relaxed) {
        while let Ok(sub) = rx.try_recv() {
            let Ok(local) = sub.socket.local_addr() else { continue };
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: slots.len() as u64 };
            // SAFETY: both fds are open; ev is a valid event.
            let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, sub.socket.as_raw_fd(), &mut ev) };
            if r != 0 {
                eprintln!("epoll_ctl: {}", std::io::Error::last_os_error());
                continue;
            }
            grow_receive_buffer(sub.socket.as_raw_fd());
            let probe = sub.stats.frames.is_some();
            slots.push(Slot { sub, local, deadline: Instant::now(), counting: false, probe });
        }
        // str0m's timers (ICE checks, DTLS retransmits, RTCP): one sweep.
        let now = Instant::now();
        let mut earliest = now + MAX_WAIT;
        for s in slots.iter_mut().filter(|s| s.sub.alive) {
            if s.deadline <= now {
                s.timeout(now);
                s.maybe_switch();
            }
            earliest = earliest.min(s.deadline);
        }
        let wait = earliest.saturating_duration_since(Instant::now());
        // Round up to whole ms: epoll_wait's unit.
        let ms = wait.as_micros().div_ceil(1000).min(MAX_WAIT.as_millis()) as i32;
        // SAFETY: events has EVENTS entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), EVENTS as i32, ms) };
        if n <= 0 {
            continue;
        }
        let now = Instant::now();
        for ev in &events[..n as usize] {
            let Some(s) = slots.get_mut(ev.u64 as usize) else { continue };
            let fd = s.sub.socket.as_raw_fd();
            loop {
                let got = batch.recv(fd);
                let (mut pkts, mut bytes, mut lost) = (0u64, 0u64, None);
                for i in 0..got {
                    if !s.sub.alive {
                        break; // its engine failed: read, not counted (as the str0m mode)
                    }
                    let d = batch.datagram(i);
                    bytes += d.len() as u64;
                    let kind = classify(d);
                    if s.counting && kind == Kind::Rtp {
                        pkts += 1;
                        lost = Some(s.count(d));
                    } else if kind != Kind::Other || !s.counting {
                        if let Some(src) = batch.source(i) {
                            s.feed(src, d, now);
                        }
                    }
                }
                let st = &s.sub.stats;
                if bytes > 0 {
                    st.bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                if pkts > 0 {
                    st.packets.fetch_add(pkts, Ordering::Relaxed);
                }
                if let Some(l) = lost {
                    st.lost.store(l, Ordering::Relaxed);
                }
                s.maybe_switch();
                if got < BATCH {
                    break;
                }
            }
        }
        std::thread::sleep(pause);
    }
    // SAFETY: ep is ours.
    unsafe { libc::close(ep) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_by_first_byte() {
        assert_eq!(classify(&[0x00, 0x01, 0, 0]), Kind::Stun);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), Kind::Dtls);
        // RTCP sender report (200), receiver report (201), PSFB (206), with and without the
        // marker bit's position set.
        for pt in [200u8, 201, 206, 207] {
            assert_eq!(classify(&[0x80, pt, 0, 6, 0, 0, 0, 0]), Kind::Rtcp, "pt {pt}");
        }
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert_eq!(classify(&rtp), Kind::Rtp);
        rtp[1] = 96 | 0x80; // marker
        assert_eq!(classify(&rtp), Kind::Rtp);
        rtp[1] = 111;
        assert_eq!(classify(&rtp), Kind::Rtp);
        assert_eq!(classify(&[0x80, 96, 0]), Kind::Other, "too short for RTP");
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[200, 0, 0]), Kind::Other);
    }

    #[test]
    fn header_fields() {
        let d = [0x80, 0xe0, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0xff];
        assert_eq!(rtp_ssrc_seq(&d), (0xdeadbeef, 0x1234));
    }

    #[test]
    fn sequence_extension_rolls_over() {
        assert_eq!(extend_seq(100, 101), 101);
        assert_eq!(extend_seq(100, 99), 99);
        assert_eq!(extend_seq(65535, 0), 65536);
        assert_eq!(extend_seq(65536 + 5, 65534), 65534);
        assert_eq!(extend_seq(3 * 65536 + 10, 20), 3 * 65536 + 20);
        assert_eq!(extend_seq(5, 65530), 0, "before the first packet of a stream: clamped");
    }
}
