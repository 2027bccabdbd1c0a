//! The media socket: ONE UDP port shared by every peer, plus ICE-TCP (RFC 6544 passive,
//! RFC 4571 framing) on the same port number.
//!
//! Owns the sockets and the routing table. Incoming datagrams are routed to the peer actor that
//! owns them: a STUN binding request names its peer by the server ufrag in USERNAME (that is how a
//! new client address becomes known, as a peer-reflexive candidate); everything else (DTLS, SRTP,
//! SRTCP) goes by the source address STUN taught us. The receive loops run on the media arbiter,
//! where the sockets are bound and polled; sends are non-blocking and drop on a full buffer (it is
//! UDP: the engine's NACK/RTX recovers video).
//!
//! ## Which address a datagram was sent to
//! The engine checks each datagram's destination against the candidates it advertised, and drops
//! STUN checks sent "to an unknown interface". The socket's own address is not that: bound to
//! `0.0.0.0` it is unspecified, and behind 1:1 NAT (containers, cloud VMs) packets arrive at a
//! private address while the candidate carries the public one. So every datagram is handed on
//! with the advertised candidate of its family (the first one when several are advertised: the
//! engine answers to the source whichever local candidate the pair names). A socket bound to
//! `::` also receives IPv4 as v4-mapped addresses: sources are reported as plain IPv4, and
//! IPv4 destinations are mapped back when sending.
//!
//! ## Which address an answer leaves from
//! The kernel reports the local address each UDP datagram arrived at ([`crate::udp_io`]); it
//! travels with the datagram to its peer actor, which remembers it per remote address
//! ([`ReplyFrom`]) and sends what goes back there from it. A wildcard socket on a host with
//! several addresses would otherwise answer from whichever address the routing table picks,
//! and browsers drop STUN answers from an address they did not send to.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::engine::{stun_server_ufrag, Proto, Transmit};

/// UDP segmentation offload ([`MediaSocket::send_all`]) still works here: cleared for good by
/// the first refusal (a kernel without it, a device that cannot).
static GSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Most datagrams in one segmented send (the kernel takes up to 64 or 128).
const MAX_SEGMENTS: usize = 32;
/// Most bytes in one segmented send (one IP datagram's worth before segmentation).
const MAX_SEGMENTED_BYTES: usize = 60_000;

/// Largest UDP datagram we read (ICE/DTLS/SRTP from browsers stay under 1500).
const MAX_DATAGRAM: usize = 2048;
/// Frames queued towards one ICE-TCP connection before new ones are dropped.
const TCP_SEND_QUEUE: usize = 1024;
/// A new ICE-TCP connection must send a whole frame within this time, or it is closed (a client
/// that connects and says nothing, or stops mid-frame, holds no socket for long).
const TCP_FIRST_FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// After that, each frame must be complete within this time of the previous one. Connected ICE
/// clients send consent checks every few seconds (RFC 7675 gives up on consent after 30 s).
const TCP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// ICE-TCP connections open at once; more are closed on accept.
const MAX_TCP_CONNECTIONS: usize = 4096;

/// One datagram for a peer actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Datagram {
    pub at: Instant,
    pub proto: Proto,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// The local address a UDP datagram arrived at, as the kernel reported it (see [`ReplyFrom`]).
    pub arrived_at: Option<std::net::IpAddr>,
    pub data: Vec<u8>,
}

/// Which local address each of a peer's remote addresses last sent to: what is sent back there
/// leaves from it ([`MediaSocket::send_all`]). A peer has one remote address, a few while ICE
/// checks several pairs; the oldest is forgotten beyond [`ReplyFrom::MAX`].
#[derive(Debug, Default)]
pub struct ReplyFrom(Vec<(SocketAddr, std::net::IpAddr)>);

impl ReplyFrom {
    const MAX: usize = 8;

    /// `remote` sent a datagram to our `local` address.
    pub fn learn(&mut self, remote: SocketAddr, local: Option<std::net::IpAddr>) {
        let Some(local) = local else {
            return;
        };
        match self.0.iter_mut().find(|(r, _)| *r == remote) {
            Some(e) => e.1 = local,
            None => {
                if self.0.len() == Self::MAX {
                    self.0.remove(0);
                }
                self.0.push((remote, local));
            }
        }
    }

    /// The local address `remote` last sent to.
    pub fn get(&self, remote: SocketAddr) -> Option<std::net::IpAddr> {
        self.0.iter().find(|(r, _)| *r == remote).map(|e| e.1)
    }
}

struct Route {
    ufrag: Arc<str>,
    peer: Recipient<Datagram>,
    /// What the peer's client may still send (see [`Budget`]).
    budget: std::sync::Mutex<Budget>,
}

/// A token bucket of bytes a peer's client may send to the media port, refilled at the rate
/// [`MediaSocket::set_publish_limit`] allows and holding one second of it. Datagrams beyond it
/// are dropped before they cost any decryption (`sluice_media_over_rate_dropped_total`): it
/// bounds what one hostile client makes the server do.
struct Budget {
    bytes: f64,
    at: Instant,
}

impl Budget {
    /// Spend `n` bytes if the budget refilled at `per_sec` bytes a second allows.
    fn take(&mut self, n: usize, per_sec: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * per_sec;
        self.bytes = (self.bytes + refill).min(per_sec);
        self.at = now;
        if self.bytes < n as f64 {
            return false;
        }
        self.bytes -= n as f64;
        true
    }
}

/// The embedded TURN server's relays as the media socket sees them. A relay reaches the media
/// socket from a local address (`local`, e.g. 127.0.0.1: see `TurnSite::media_local`), but the
/// browser behind it knows the relay by its relayed address (`public`, same port). The media
/// socket reports datagrams from a live relay port as coming from the relayed address, and sends
/// what it addresses there to the local one; otherwise the browser would see its checks
/// answered from an unknown address and call its relay candidate peer-reflexive.
#[derive(Debug)]
pub struct LocalRelays {
    local: std::net::IpAddr,
    public: std::net::IpAddr,
    ports: DashMap<u16, ()>,
}

impl LocalRelays {
    pub fn new(local: std::net::IpAddr, public: std::net::IpAddr) -> Arc<Self> {
        Arc::new(LocalRelays {
            local: local.to_canonical(),
            public: public.to_canonical(),
            ports: DashMap::new(),
        })
    }

    /// A relay socket now bound on `port` (an allocation started).
    pub fn add(&self, port: u16) {
        self.ports.insert(port, ());
    }

    /// The relay on `port` is gone.
    pub fn remove(&self, port: u16) {
        self.ports.remove(&port);
    }

    fn incoming(&self, source: SocketAddr) -> SocketAddr {
        if source.ip() == self.local && self.ports.contains_key(&source.port()) {
            SocketAddr::new(self.public, source.port())
        } else {
            source
        }
    }

    fn outgoing(&self, to: SocketAddr) -> SocketAddr {
        if to.ip() == self.public && self.ports.contains_key(&to.port()) {
            SocketAddr::new(self.local, to.port())
        } else {
            to
        }
    }
}

/// Counters, read by `/health` and the benchmarks.
#[derive(Default, Debug)]
pub struct SocketStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub unrouted: AtomicU64,
    pub send_dropped: AtomicU64,
    /// Datagrams dropped because their peer's client sent over its [`Budget`].
    pub over_rate: AtomicU64,
    /// `sendmsg` calls that carried several datagrams ([`MediaSocket::send_all`]).
    pub segmented_sends: AtomicU64,
    /// `sendmmsg` calls of media threads' send queues ([`media_arbiter`]).
    pub queue_flushes: AtomicU64,
}

pub struct MediaSocket {
    udp: UdpSocket,
    local: SocketAddr,
    /// The advertised candidate addresses datagrams are handed on with (see the module doc).
    to_v4: Option<SocketAddr>,
    to_v6: Option<SocketAddr>,
    /// The embedded TURN server's relays, when it runs.
    relays: Option<Arc<LocalRelays>>,
    by_ufrag: DashMap<Arc<str>, Arc<Route>>,
    by_source: DashMap<(Proto, SocketAddr), Arc<Route>>,
    tcp_out: DashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Bits per second a publisher may send, 0 for no limit ([`MediaSocket::set_publish_limit`]).
    publish_limit: AtomicU64,
    pub stats: SocketStats,
}

/// With port 0, how many UDP ports are tried before giving up when the TCP port of the same
/// number is taken (by any TCP socket, often an outgoing connection's ephemeral port).
const BIND_ATTEMPTS: usize = 20;

impl MediaSocket {
    /// UDP and TCP on one port number. A fixed port is tried once; port 0 retries with another
    /// OS-picked UDP port while the same TCP port is in use (the TURN server binds this way too).
    pub fn bind_pair(bind: std::net::IpAddr, port: u16) -> io::Result<(UdpSocket, SocketAddr, TcpListener)> {
        // Ports that failed stay bound until the end, so the OS does not hand them out again.
        let mut tried = Vec::new();
        loop {
            let udp = UdpSocket::bind((bind, port))?;
            let local = udp.local_addr()?;
            match TcpListener::bind(local) {
                Ok(tcp) => return Ok((udp, local, tcp)),
                Err(e)
                    if port == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && tried.len() + 1 < BIND_ATTEMPTS =>
                {
                    tried.push(udp)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Bind UDP `bind:port` and TCP on the same port (port 0: the OS picks, TCP follows it), and
    /// start the receive loops on `arbiter`. `advertised`: the addresses written into ICE
    /// candidates (with port 0 meaning the bound port), whatever address the socket is bound to.
    pub fn start(
        bind: std::net::IpAddr,
        port: u16,
        advertised: &[std::net::IpAddr],
        relays: Option<Arc<LocalRelays>>,
        arbiter: &ArbiterHandle,
    ) -> io::Result<Arc<Self>> {
        let (udp, local, tcp) = Self::bind_pair(bind, port)?;
        let pick = |v4: bool| {
            advertised.iter().find(|ip| ip.is_ipv4() == v4).map(|ip| SocketAddr::new(*ip, local.port()))
        };
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        {
            use std::os::fd::AsRawFd;
            if let Err(e) = crate::udp_io::enable_pktinfo(udp.as_raw_fd(), local.is_ipv6()) {
                warn!(error = %e, "the kernel will not say which address datagrams arrived at: answers leave from the address the routing table picks");
            }
        }
        let recv = udp.try_clone()?;
        let this = Arc::new(MediaSocket {
            udp,
            local,
            to_v4: pick(true),
            to_v6: pick(false),
            relays,
            by_ufrag: DashMap::new(),
            by_source: DashMap::new(),
            tcp_out: DashMap::new(),
            publish_limit: AtomicU64::new(0),
            stats: SocketStats::default(),
        });
        let me = this.clone();
        arbiter.spawn(async move {
            match tokio::net::UdpSocket::from_std(recv) {
                Ok(sock) => me.udp_loop(sock).await,
                Err(e) => warn!(error = %e, "media UDP socket cannot be polled"),
            }
        });
        let me = this.clone();
        arbiter.spawn(async move {
            match tokio::net::TcpListener::from_std(tcp) {
                Ok(l) => me.tcp_accept_loop(l).await,
                Err(e) => warn!(error = %e, "media TCP listener cannot be polled"),
            }
        });
        info!(%local, "media socket bound (UDP and ICE-TCP)");
        Ok(this)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where a process on this host reaches the media socket (see [`local_ip`]).
    pub fn reachable_locally(&self, v4: bool) -> SocketAddr {
        SocketAddr::new(local_ip(self.local.ip(), v4), self.local.port())
    }

    /// The candidate a datagram from `source` was sent to: the advertised address of its
    /// family; the socket's own address when none is advertised for that family.
    fn destination(&self, source: SocketAddr) -> SocketAddr {
        let advertised = if source.is_ipv4() { self.to_v4 } else { self.to_v6 };
        advertised.unwrap_or(self.local)
    }

    /// An address as a socket of this family sends to it (IPv4 as v4-mapped on an IPv6 socket),
    /// our own relays at their local address.
    fn outgoing(&self, to: SocketAddr) -> SocketAddr {
        let to = match &self.relays {
            Some(r) => r.outgoing(to),
            None => to,
        };
        match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => to,
        }
    }

    /// Make a peer reachable by its ICE ufrag. Done before its SDP answer leaves the server.
    pub fn register(&self, ufrag: &str, peer: Recipient<Datagram>) {
        let ufrag: Arc<str> = ufrag.into();
        let budget = std::sync::Mutex::new(Budget { bytes: f64::MAX, at: Instant::now() });
        self.by_ufrag.insert(ufrag.clone(), Arc::new(Route { ufrag, peer, budget }));
    }

    /// Route UDP datagrams from `source` to the peer registered as `ufrag`: a peer of ours that
    /// is the ICE client (a pull) hears from the remote's candidates, whose STUN answers carry
    /// no username to route by.
    pub fn expect_from(&self, source: SocketAddr, ufrag: &str) {
        if let Some(r) = self.by_ufrag.get(ufrag).map(|r| r.clone()) {
            self.by_source.insert((Proto::Udp, canonical(source)), r);
        }
    }

    /// Forget a peer and every address learned for it.
    pub fn unregister(&self, ufrag: &str) {
        if self.by_ufrag.remove(ufrag).is_some() {
            self.by_source.retain(|_, r| &*r.ufrag != ufrag);
        }
    }

    pub fn peers(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Bits per second of video a publisher may send (`--max-publish-kbps`; 0: unlimited): the
    /// publisher actor ends a stream over it, and this socket drops what any one client sends
    /// beyond 1.5 times it.
    pub fn set_publish_limit(&self, bits_per_sec: u64) {
        self.publish_limit.store(bits_per_sec, Ordering::Relaxed);
    }

    /// The limit [`MediaSocket::set_publish_limit`] set.
    pub fn publish_limit(&self) -> u64 {
        self.publish_limit.load(Ordering::Relaxed)
    }

    /// Client addresses routed to a peer (UDP and ICE-TCP), and ICE-TCP connections open.
    pub fn routes(&self) -> (usize, usize) {
        (self.by_source.len(), self.tcp_out.len())
    }

    /// Send what one pass over a peer's engine produced, in order. Runs of UDP datagrams to one
    /// destination of one size (the last of a run may be shorter: a frame's packets) go out in
    /// one `sendmsg` with UDP segmentation offload (`UDP_SEGMENT`): the kernel's UDP and IP
    /// send path runs once per run instead of once per packet (BENCHMARKS.md, "Sends in
    /// segments"). Where the kernel refuses it, every datagram is sent alone from then on.
    ///
    /// On a media thread started with a send queue ([`media_arbiter`], `--batched-sends`) UDP
    /// datagrams are queued instead, and the thread sends what all its peers queued in
    /// `sendmmsg` calls when it next goes idle.
    pub fn send_all(self: &Arc<Self>, batch: &mut Vec<Transmit>, reply_from: &ReplyFrom) {
        let queued = QUEUE.with(|q| match q.borrow_mut().as_mut() {
            Some(q) => {
                q.push(self, batch, reply_from);
                true
            }
            None => false,
        });
        if queued {
            return;
        }
        let mut i = 0;
        while i < batch.len() {
            let j = run_end(batch, i);
            let (proto, to) = (batch[i].proto, batch[i].destination);
            match proto {
                Proto::Udp => self.send_run(&batch[i..j], reply_from.get(to)),
                Proto::Tcp => self.send_tcp(to, std::mem::take(&mut batch[i].contents)),
            }
            i = j;
        }
        batch.clear();
    }

    /// Send a run of UDP datagrams ([`run_end`]) from the local address `from` when known: in
    /// one segmented `sendmsg` when it has several and the kernel takes it, else one by one.
    fn send_run(&self, run: &[Transmit], from: Option<std::net::IpAddr>) {
        if run.len() >= 2 && self.send_segmented(run, run[0].contents.len(), from) {
            return;
        }
        for t in run {
            self.send_one_udp(t, from);
        }
    }

    /// One `sendmsg` with `UDP_SEGMENT` for `run` (same destination, `size` bytes each but the
    /// last), from the local address `from` when known. False when the kernel refused
    /// segmentation (then it is off for good, and the caller sends the run datagram by
    /// datagram); a full buffer drops the run (true).
    fn send_segmented(&self, run: &[Transmit], size: usize, from: Option<std::net::IpAddr>) -> bool {
        use std::os::fd::AsRawFd;
        let dest = socket2::SockAddr::from(self.outgoing(run[0].destination));
        // On the stack: this runs for every frame to every viewer (runs are at most MAX_SEGMENTS).
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut iov = [empty; MAX_SEGMENTS];
        for (v, t) in iov.iter_mut().zip(run) {
            *v =
                libc::iovec { iov_base: t.contents.as_ptr() as *mut libc::c_void, iov_len: t.contents.len() };
        }
        let iov = &mut iov[..run.len().min(MAX_SEGMENTS)];
        let fd = self.udp.as_raw_fd();
        let sent = crate::udp_io::send(fd, &dest, iov, from, Some(size as u16));
        let n = run.len() as u64;
        let e = match sent {
            Ok(sent) => {
                self.stats.sent.fetch_add(n, Ordering::Relaxed);
                self.stats.sent_bytes.fetch_add(sent as u64, Ordering::Relaxed);
                self.stats.segmented_sends.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Err(e) => e,
        };
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                self.stats.send_dropped.fetch_add(n, Ordering::Relaxed);
                true
            }
            // ENOBUFS and the like: as a full buffer, dropped (the engine's NACK/RTX recovers).
            _ if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.stats.send_dropped.fetch_add(n, Ordering::Relaxed);
                true
            }
            _ => {
                if GSO.swap(false, Ordering::Relaxed) {
                    warn!(error = %e, "UDP segmentation offload refused: sending datagram by datagram");
                }
                false
            }
        }
    }

    /// Send one engine transmit, from the local address `from` when known. Never blocks: a full
    /// socket buffer drops the datagram.
    pub fn send(&self, t: Transmit, from: Option<std::net::IpAddr>) {
        match t.proto {
            Proto::Udp => self.send_one_udp(&t, from),
            Proto::Tcp => self.send_tcp(t.destination, t.contents),
        }
    }

    /// One ICE-TCP frame to its connection's send queue; dropped when the queue is full.
    fn send_tcp(&self, to: SocketAddr, contents: Vec<u8>) {
        let len = contents.len() as u64;
        let ok = self.tcp_out.get(&to).is_some_and(|tx| tx.try_send(contents).is_ok());
        self.count(ok, 1, len);
    }

    fn count(&self, ok: bool, datagrams: u64, bytes: u64) {
        let counter = if ok { &self.stats.sent } else { &self.stats.send_dropped };
        counter.fetch_add(datagrams, Ordering::Relaxed);
        if ok {
            self.stats.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// One UDP datagram, from the local address `from` when known; dropped on a full buffer.
    fn send_one_udp(&self, t: &Transmit, from: Option<std::net::IpAddr>) {
        let ok = match self.send_udp(&t.contents, self.outgoing(t.destination), from) {
            Ok(_) => true,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    debug!(error = %e, dest = %t.destination, "UDP send failed");
                }
                false
            }
        };
        self.count(ok, 1, t.contents.len() as u64);
    }

    fn send_udp(&self, data: &[u8], to: SocketAddr, from: Option<std::net::IpAddr>) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let Some(ip) = from else {
            return self.udp.send_to(data, to);
        };
        let mut iov = [libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() }];
        crate::udp_io::send(self.udp.as_raw_fd(), &socket2::SockAddr::from(to), &mut iov, Some(ip), None)
    }

    fn route(&self, proto: Proto, source: SocketAddr, arrived_at: Option<std::net::IpAddr>, data: Vec<u8>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        self.stats.received_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let source = canonical(source);
        let source = match (&self.relays, proto) {
            (Some(r), Proto::Udp) => r.incoming(source),
            _ => source,
        };
        let route = match stun_server_ufrag(&data) {
            Some(ufrag) => match self.by_ufrag.get(ufrag.as_str()) {
                Some(r) => {
                    let r = r.clone();
                    // A new source (or a port reused by another peer) is (re)learned here.
                    let known = self.by_source.get(&(proto, source)).is_some_and(|x| Arc::ptr_eq(&x, &r));
                    if !known {
                        self.by_source.insert((proto, source), r.clone());
                    }
                    Some(r)
                }
                None => None,
            },
            None => self.by_source.get(&(proto, source)).map(|r| r.clone()),
        };
        let Some(route) = route else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let at = Instant::now();
        let limit = self.publish_limit.load(Ordering::Relaxed);
        // Any one client: 1.5 times what a publisher may send (its audio, retransmissions, RTCP).
        let per_sec = limit as f64 * 1.5 / 8.0;
        if limit > 0 && !route.budget.lock().unwrap_or_else(|e| e.into_inner()).take(data.len(), per_sec, at)
        {
            self.stats.over_rate.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let destination = self.destination(source);
        route.peer.do_send(Datagram { at, proto, source, destination, arrived_at, data });
    }

    async fn udp_loop(self: Arc<Self>, sock: tokio::net::UdpSocket) {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let fd = sock.as_raw_fd();
        loop {
            match sock.async_io(tokio::io::Interest::READABLE, || crate::udp_io::recv(fd, &mut buf)).await {
                Ok(r) => {
                    // A thread kept busy by what arrives does not go idle: what its peers
                    // queued leaves here once it has waited long enough.
                    flush_stale_queue();
                    self.route(Proto::Udp, r.source, r.local, buf[..r.len].to_vec())
                }
                // ICMP port unreachable from a vanished client surfaces as an error: keep going.
                Err(e) => debug!(error = %e, "media UDP receive error"),
            }
        }
    }

    async fn tcp_accept_loop(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => {
                    if self.tcp_out.len() >= MAX_TCP_CONNECTIONS {
                        debug!(%remote, "too many ICE-TCP connections: closing the new one");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let me = self.clone();
                    actix::spawn(async move { me.tcp_conn(stream, remote).await });
                }
                Err(e) => {
                    warn!(error = %e, "media TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// One ICE-TCP connection: RFC 4571 frames (16-bit length, then the datagram) both ways.
    async fn tcp_conn(self: Arc<Self>, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let remote = canonical(remote);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_SEND_QUEUE);
        self.tcp_out.insert(remote, tx);
        debug!(%remote, "ICE-TCP connection");
        let writer = actix::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let Ok(len) = u16::try_from(frame.len()) else {
                    continue;
                };
                let mut out = Vec::with_capacity(frame.len() + 2);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&frame);
                if wr.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
        let mut within = TCP_FIRST_FRAME_TIMEOUT;
        loop {
            // One whole frame within the time allowed, however it is trickled.
            let frame = async {
                let mut len = [0u8; 2];
                rd.read_exact(&mut len).await?;
                let mut data = vec![0u8; u16::from_be_bytes(len) as usize];
                rd.read_exact(&mut data).await?;
                Ok::<_, io::Error>(data)
            };
            match tokio::time::timeout(within, frame).await {
                Ok(Ok(data)) => self.route(Proto::Tcp, remote, None, data),
                Ok(Err(_)) => break,
                Err(_) => {
                    debug!(%remote, timeout = ?within, "ICE-TCP connection sent no whole frame in time: closing");
                    break;
                }
            }
            within = TCP_IDLE_TIMEOUT;
        }
        writer.abort();
        self.tcp_out.remove(&remote);
        self.by_source.remove(&(Proto::Tcp, remote));
        debug!(%remote, "ICE-TCP connection closed");
    }
}

/// The address a socket bound to `bind` is reached at, and sends from, within this host: `bind`
/// itself, or, for a wildcard, loopback of the family asked for (`::` takes IPv4 too). The
/// media socket is reached there by TURN relays, and relays bound alike send from there.
pub fn local_ip(bind: std::net::IpAddr, v4: bool) -> std::net::IpAddr {
    match bind {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V6(_) if !v4 => std::net::Ipv6Addr::LOCALHOST.into(),
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    }
}

/// A v4-mapped IPv6 address (what a dual-stack socket reports for IPv4) as plain IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Where the run of datagrams that starts at `i` ends: UDP datagrams to one destination, all of
/// one size but the last, which may be shorter (a frame's packets), within the segmentation
/// limits, while the kernel takes segments; anything else is a run of one.
fn run_end(batch: &[Transmit], i: usize) -> usize {
    let first = &batch[i];
    let size = first.contents.len();
    let mut j = i + 1;
    let mut total = size;
    if first.proto == Proto::Udp && GSO.load(Ordering::Relaxed) {
        while let Some(t) = batch.get(j) {
            let fits = t.proto == Proto::Udp
                && t.destination == first.destination
                && batch[j - 1].contents.len() == size
                && t.contents.len() <= size
                && j - i < MAX_SEGMENTS
                && total + t.contents.len() <= MAX_SEGMENTED_BYTES;
            if !fits {
                break;
            }
            total += t.contents.len();
            j += 1;
        }
    }
    j
}

thread_local! {
    /// What this media thread's peers sent since the thread last went idle ([`media_arbiter`]);
    /// None on every other thread, where sends go out at once.
    static QUEUE: std::cell::RefCell<Option<SendQueue>> = const { std::cell::RefCell::new(None) };
}

/// Runs queued on one thread that go out at once, without waiting for it to go idle.
const QUEUE_MAX_RUNS: usize = 64;
/// Nor does a queued datagram wait longer than this while the thread stays busy.
const QUEUE_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Start an arbiter (thread) for media peers whose UDP sends are queued: everything its
/// peers send while it works through its ready actors (a frame to each of its viewers, their
/// RTCP) leaves in `sendmmsg` calls when it goes idle, [`QUEUE_MAX_RUNS`] at a time, instead of
/// a `sendmsg` per peer and pass. A thread kept busy sends at least every [`QUEUE_MAX_RUNS`]
/// runs, and once the oldest has waited [`QUEUE_MAX_WAIT`] when a peer queues more or a
/// datagram arrives. With `queue` false it is a plain arbiter.
pub fn media_arbiter(queue: bool) -> Arbiter {
    Arbiter::with_tokio_rt(move || {
        let mut rt = tokio::runtime::Builder::new_current_thread();
        rt.enable_all();
        if queue {
            QUEUE.with(|q| *q.borrow_mut() = Some(SendQueue::default()));
            rt.on_thread_park(flush_queue);
        }
        rt.build().expect("a media thread's runtime")
    })
}

/// Send what this thread queued (the park hook of [`media_arbiter`]).
fn flush_queue() {
    QUEUE.with(|q| {
        if let Some(q) = q.borrow_mut().as_mut() {
            q.flush();
        }
    });
}

/// Send what this thread queued if it has waited [`QUEUE_MAX_WAIT`] (nothing on a thread
/// without a queue, or with an empty one: no clock read).
fn flush_stale_queue() {
    QUEUE.with(|q| {
        if let Ok(mut q) = q.try_borrow_mut() {
            if let Some(q) = q.as_mut().filter(|q| q.since.is_some_and(|t| t.elapsed() >= QUEUE_MAX_WAIT)) {
                q.flush();
            }
        }
    });
}

/// One `sendmsg`'s worth of a [`SendQueue`]: datagrams to one destination, in segments when
/// there are several.
struct Run {
    start: usize,
    len: usize,
    from: Option<std::net::IpAddr>,
    bytes: usize,
}

#[derive(Default)]
struct SendQueue {
    socket: Option<Arc<MediaSocket>>,
    since: Option<Instant>,
    datagrams: Vec<Transmit>,
    runs: Vec<Run>,
    // What a flush builds, kept for the next one.
    addrs: Vec<socket2::SockAddr>,
    iovs: Vec<libc::iovec>,
    controls: Vec<crate::udp_io::SendControl>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendQueue {
    /// Queue what one pass over a peer produced, cut into runs ([`run_end`]); ICE-TCP frames go
    /// to their connection at once.
    fn push(&mut self, socket: &Arc<MediaSocket>, batch: &mut Vec<Transmit>, reply_from: &ReplyFrom) {
        if self.socket.as_ref().is_some_and(|s| !Arc::ptr_eq(s, socket)) {
            self.flush();
        }
        // The runs first (over the batch as it is), then the datagrams move into the queue.
        let (mut i, mut start) = (0, self.datagrams.len());
        while i < batch.len() {
            let j = run_end(batch, i);
            let t = &batch[i];
            if t.proto == Proto::Udp {
                let bytes = batch[i..j].iter().map(|t| t.contents.len()).sum();
                self.runs.push(Run { start, len: j - i, from: reply_from.get(t.destination), bytes });
                start += j - i;
            }
            i = j;
        }
        for t in batch.drain(..) {
            match t.proto {
                Proto::Udp => self.datagrams.push(t),
                Proto::Tcp => socket.send_tcp(t.destination, t.contents),
            }
        }
        if self.runs.is_empty() {
            return;
        }
        self.socket.get_or_insert_with(|| socket.clone());
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.runs.len() >= QUEUE_MAX_RUNS || since.elapsed() >= QUEUE_MAX_WAIT {
            self.flush();
        }
    }

    fn flush(&mut self) {
        use std::os::fd::AsRawFd;
        self.since = None;
        let Some(socket) = self.socket.take() else { return };
        let n = self.runs.len();
        self.addrs.clear();
        self.iovs.clear();
        self.msgs.clear();
        self.controls.clear();
        self.controls.resize(n, [0; 12]);
        for r in &self.runs {
            self.addrs.push(socket2::SockAddr::from(socket.outgoing(self.datagrams[r.start].destination)));
        }
        for t in &self.datagrams {
            let iov_base = t.contents.as_ptr() as *mut libc::c_void;
            self.iovs.push(libc::iovec { iov_base, iov_len: t.contents.len() });
        }
        for (k, r) in self.runs.iter().enumerate() {
            let segment = (r.len >= 2).then(|| self.datagrams[r.start].contents.len() as u16);
            let iov = &mut self.iovs[r.start..r.start + r.len];
            // SAFETY: the header points into `addrs`, `iovs`, `controls` and the datagrams,
            // none of which changes until the sends below are done.
            let msg_hdr =
                unsafe { crate::udp_io::header(&self.addrs[k], iov, r.from, segment, &mut self.controls[k]) };
            self.msgs.push(libc::mmsghdr { msg_hdr, msg_len: 0 });
        }
        let fd = socket.udp.as_raw_fd();
        let mut i = 0;
        while i < n {
            // SAFETY: as above.
            match unsafe { crate::udp_io::sendmmsg(fd, &mut self.msgs[i..]) } {
                Ok(k) if k > 0 => {
                    socket.stats.queue_flushes.fetch_add(1, Ordering::Relaxed);
                    for r in &self.runs[i..i + k] {
                        socket.count(true, r.len as u64, r.bytes as u64);
                        if r.len >= 2 {
                            socket.stats.segmented_sends.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += k;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    // A full buffer: the first is dropped (the engine's NACK/RTX recovers video).
                    let r = &self.runs[i];
                    socket.count(false, r.len as u64, 0);
                    i += 1;
                }
                _ => {
                    // The first was refused: it goes alone, the way a thread without a queue
                    // sends (sent from the routing table's choice of address when its own is
                    // gone, one by one where segments are refused).
                    let r = &self.runs[i];
                    socket.send_run(&self.datagrams[r.start..r.start + r.len], r.from);
                    i += 1;
                }
            }
        }
        self.msgs.clear();
        self.runs.clear();
        self.datagrams.clear();
    }
}

#[cfg(test)]
mod send_tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    /// A media socket bound to every address, advertising 127.0.0.2, and that address.
    fn wildcard_socket() -> (Arc<MediaSocket>, IpAddr) {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let advertised: IpAddr = "127.0.0.2".parse().unwrap();
        (MediaSocket::start(any, 0, &[advertised], None, &actix::Arbiter::current()).unwrap(), advertised)
    }

    fn transmit(to: SocketAddr, mark: u8, len: usize) -> Transmit {
        Transmit { proto: Proto::Udp, source: to, destination: to, contents: vec![mark; len] }
    }

    /// Datagrams sent together arrive as they were cut, in order, to the right receivers,
    /// whether the kernel segments them or not.
    #[actix_rt::test]
    async fn runs_arrive_datagram_by_datagram() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let socket = MediaSocket::start(lo, 0, &[lo], None, &actix::Arbiter::current()).unwrap();
        let a = UdpSocket::bind((lo, 0)).unwrap();
        let b = UdpSocket::bind((lo, 0)).unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut batch = vec![
            transmit(to_a, 0, 1000),
            transmit(to_a, 1, 1000),
            transmit(to_a, 2, 1000),
            transmit(to_a, 3, 400), // a frame's shorter last packet ends the run
            transmit(to_a, 4, 1000),
            transmit(to_b, 5, 1000),
            transmit(to_a, 6, 1200), // larger than the run before it: a run of its own
            transmit(to_a, 7, 1200),
        ];
        socket.send_all(&mut batch, &ReplyFrom::default());
        assert!(batch.is_empty());
        let mut buf = [0u8; 2048];
        for (mark, len) in [(0, 1000), (1, 1000), (2, 1000), (3, 400), (4, 1000), (6, 1200), (7, 1200)] {
            let n = a.recv(&mut buf).unwrap();
            assert_eq!((buf[0], n), (mark, len), "datagram {mark} at A");
            assert!(buf[..n].iter().all(|&x| x == mark));
        }
        let n = b.recv(&mut buf).unwrap();
        assert_eq!((buf[0], n), (5, 1000));
        assert_eq!(socket.stats.sent.load(Ordering::Relaxed), 8);
        println!(
            "segmented sends: {} (0: this kernel refused UDP_SEGMENT)",
            socket.stats.segmented_sends.load(Ordering::Relaxed)
        );
    }

    /// On a queueing thread, what several peers send waits for the thread to go idle and
    /// then arrives as it was cut, in order, from the addresses the clients used, in one
    /// `sendmmsg`; on a media thread the idle hook sends it with no help.
    #[actix_rt::test]
    async fn queued_sends_leave_together_when_the_thread_goes_idle() {
        let (socket, advertised) = wildcard_socket();
        let a = UdpSocket::bind("127.0.0.5:0").unwrap();
        let b = UdpSocket::bind("127.0.0.6:0").unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut from_a = ReplyFrom::default();
        from_a.learn(to_a, Some(advertised));
        QUEUE.with(|q| *q.borrow_mut() = Some(SendQueue::default()));
        socket.send_all(&mut vec![transmit(to_a, 0, 1000), transmit(to_a, 1, 600)], &from_a);
        socket.send_all(&mut vec![transmit(to_b, 2, 300)], &ReplyFrom::default());
        socket.send_all(&mut vec![transmit(to_a, 3, 80)], &from_a);
        let mut buf = [0u8; 2048];
        a.set_nonblocking(true).unwrap();
        assert_eq!(a.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock, "queued, not sent");
        assert_eq!(socket.stats.sent.load(Ordering::Relaxed), 0);
        flush_queue();
        QUEUE.with(|q| *q.borrow_mut() = None);
        for s in [&a, &b] {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        for (mark, len) in [(0, 1000), (1, 600), (3, 80)] {
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!((buf[0], n, from.ip()), (mark, len, advertised), "datagram {mark} at A");
        }
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((buf[0], n, from.ip()), (2, 300, IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(socket.stats.sent.load(Ordering::Relaxed), 4);
        assert_eq!(socket.stats.queue_flushes.load(Ordering::Relaxed), 1, "one sendmmsg");

        // A media thread: sent from an actor's turn, out when the thread parks.
        let arbiter = media_arbiter(true);
        let s = socket.clone();
        arbiter.spawn_fn(move || s.send_all(&mut vec![transmit(to_b, 4, 200)], &ReplyFrom::default()));
        let n = b.recv(&mut buf).unwrap();
        assert_eq!((buf[0], n), (4, 200));
        // Counted on that thread just after the call returns.
        let flushes = || socket.stats.queue_flushes.load(Ordering::Relaxed);
        for _ in 0..200 {
            if flushes() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(flushes(), 2, "sent by a sendmmsg");
        arbiter.stop();
    }

    /// A socket bound to every address sends back to a client from the address that client
    /// sent to, in runs and alone; a client never heard from gets what the routing table picks.
    #[actix_rt::test]
    async fn wildcard_socket_answers_from_the_address_used() {
        let (socket, advertised) = wildcard_socket();
        let client = UdpSocket::bind("127.0.0.5:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = client.local_addr().unwrap();
        let mut reply_from = ReplyFrom::default();
        reply_from.learn(to, Some(advertised));
        let mut batch = vec![transmit(to, 0, 1000), transmit(to, 1, 1000), transmit(to, 2, 500)];
        batch.push(Transmit { proto: Proto::Udp, source: to, destination: to, contents: vec![3; 80] });
        socket.send_all(&mut batch, &reply_from);
        let mut buf = [0u8; 2048];
        for mark in 0..4 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((buf[0], from.ip()), (mark, advertised), "datagram {mark} ({n} bytes)");
        }
        socket.send_all(&mut vec![transmit(to, 4, 100)], &ReplyFrom::default());
        let (_, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "the loopback route's source");
    }
}
