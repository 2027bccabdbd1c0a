//! The embedded TURN server (RFC 8656, relayed UDP; clients over UDP or TCP): two actors.
//!
//! - [`TurnServer`], one per server, owns the listener sockets (UDP and TCP on the TURN port,
//!   optionally a second TCP-only port such as 443), the allocation table keyed by 5-tuple and
//!   the per-user quota and bandwidth budgets. It reads every packet a client sends: answers
//!   Binding, authenticates requests (long-term credentials, [`crate::turn_core::auth`]),
//!   creates allocations (quota, relay socket), refuses peers the policy forbids (403), and
//!   routes everything else about an allocation to that allocation's actor. Messages:
//!   [`ClientPacket`] (a TCP connection's frames), [`TcpClosed`], [`AllocationClosed`].
//! - [`Allocation`], one per allocation, owns its relay UDP socket and its state (lifetime,
//!   permissions, channels: [`crate::turn_core::allocation`]). It answers Refresh,
//!   CreatePermission and ChannelBind, relays client data to peers ([`ToPeer`]) and peer
//!   datagrams back to the client (ChannelData when a channel is bound, else a Data
//!   indication), and stops itself when its lifetime runs out, telling the server.
//!
//! ## The run loop
//! Both actors live on the TURN arbiter (a thread of its own, apart from media and web). The
//! UDP listener and each relay socket are *streams of their actor* (`add_stream`): a datagram is
//! handled where it is read, with no queue in between, and the kernel's socket buffer is the
//! only backlog. Each TCP connection is a task on the same arbiter that cuts the stream into
//! STUN/ChannelData frames ([`crate::turn_core::framing`]) and hands them to the server with
//! `send().await` (the connection's reads wait for the server: backpressure), and a writer task
//! draining a bounded queue ([`TCP_SEND_QUEUE`]; full: the frame is dropped, as UDP would).
//! Closing a TCP connection deletes its allocation (RFC 8656 §3.1).
//!
//! The listener sockets are bound by [`start`] on the caller's thread (so a busy port fails the
//! start and port 0 is known at once) and registered with the runtime on the TURN arbiter, like
//! the media socket; relay sockets are bound on the TURN arbiter, which polls them. Nothing here
//! blocks: sends are `try_send`, drops are counted in [`TurnStats`].
//!
//! ## Security
//! No allocation without valid credentials; no relay to a peer the [`PeerPolicy`] forbids; at
//! most `user_quota` allocations per user and `max_allocations` in all; a token bucket per user
//! caps relayed bytes. Logs name users and addresses, never a password, key or secret.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::stream;
use serde_json::json;
use stun_types::attribute::{AttributeStaticType, MessageIntegrity, MessageIntegritySha256};
use stun_types::message::{IntegrityKey, Message, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::turn_core::allocation::{grant_lifetime, AllocationState, TokenBucket};
use crate::turn_core::auth::{AuthError, Authenticator, Secret};
use crate::turn_core::framing::{self, Kind, StreamSplitter};
use crate::turn_core::policy::PeerPolicy;
use crate::turn_core::wire::{self, code, Attr, Incoming, Request};
use crate::turn_core::{CredentialIssuer, TurnConfig};

/// Largest datagram read from a client or a peer.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer of each relay socket. Peers of a WebRTC client send datagrams under the path
/// MTU; a datagram that fills the buffer was cut by the kernel and is dropped, not relayed
/// truncated. Small, because every allocation holds one.
const RELAY_DATAGRAM: usize = 8 * 1024;
/// Client datagrams queued for one allocation before new ones are dropped (the server and the
/// allocations share one thread, so the queue only fills when that thread is overloaded).
const ALLOCATION_MAILBOX: usize = 1024;
/// Kernel buffers of the UDP listener (receive and send): every UDP client shares it, so a burst
/// must not overflow the default ~200 KiB (capped by net.core.rmem_max / wmem_max).
const LISTENER_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Kernel receive and send buffers of each relay socket.
const RELAY_SOCKET_BUFFER: usize = 512 * 1024;
/// Frames queued towards one TCP client before new ones are dropped (about a second of video).
pub const TCP_SEND_QUEUE: usize = 512;
/// TCP connections open at once; more are closed on accept.
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// A new TCP connection must send a whole TURN frame within this time, or it is closed.
const TCP_FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an allocation checks its lifetime and prunes expired permissions and channels.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);
/// Relay sockets tried for an even port when EVEN-PORT asks for one.
const EVEN_PORT_TRIES: usize = 16;

/// Transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The client side of an allocation: transport, client address, server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Where packets for a client go.
#[derive(Clone)]
pub enum ClientSink {
    Udp { socket: Arc<tokio::net::UdpSocket>, to: SocketAddr },
    Tcp(mpsc::Sender<Vec<u8>>),
}

impl ClientSink {
    /// Send without blocking; false when dropped (socket buffer or TCP queue full, closed).
    fn send(&self, data: Vec<u8>) -> bool {
        match self {
            ClientSink::Udp { socket, to } => socket.try_send_to(&data, *to).is_ok(),
            ClientSink::Tcp(tx) => tx.try_send(data).is_ok(),
        }
    }

    /// A byte stream: ChannelData is padded to 4 bytes.
    fn is_stream(&self) -> bool {
        matches!(self, ClientSink::Tcp(_))
    }
}

/// Counters, read by `/rest-api/turn/stats` and the tests.
#[derive(Default, Debug)]
pub struct TurnStats {
    pub allocations: AtomicUsize,
    pub allocations_total: AtomicU64,
    pub tcp_connections: AtomicUsize,
    /// Requests answered 400/401/438 after carrying MESSAGE-INTEGRITY (wrong password, unknown
    /// or expired user, stale nonce).
    pub auth_failures: AtomicU64,
    /// Requests answered 401 because they carried no credentials (the normal first step).
    pub challenges: AtomicU64,
    pub quota_rejections: AtomicU64,
    pub forbidden_peers: AtomicU64,
    pub to_peer_packets: AtomicU64,
    pub to_peer_bytes: AtomicU64,
    pub to_client_packets: AtomicU64,
    pub to_client_bytes: AtomicU64,
    /// Datagrams dropped: no permission, over the bandwidth cap, or a full socket/queue.
    pub dropped: AtomicU64,
}

impl TurnStats {
    pub fn to_json(&self) -> serde_json::Value {
        let r = Ordering::Relaxed;
        json!({
            "allocations": self.allocations.load(r),
            "allocationsTotal": self.allocations_total.load(r),
            "tcpConnections": self.tcp_connections.load(r),
            "authFailures": self.auth_failures.load(r),
            "challenges": self.challenges.load(r),
            "quotaRejections": self.quota_rejections.load(r),
            "forbiddenPeers": self.forbidden_peers.load(r),
            "toPeer": { "packets": self.to_peer_packets.load(r), "bytes": self.to_peer_bytes.load(r) },
            "toClient": { "packets": self.to_client_packets.load(r), "bytes": self.to_client_bytes.load(r) },
            "dropped": self.dropped.load(r),
        })
    }

    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running TURN server.
pub struct TurnHandle {
    pub udp: SocketAddr,
    pub tcp: Vec<SocketAddr>,
    pub issuer: Arc<CredentialIssuer>,
    pub stats: Arc<TurnStats>,
    pub server: Addr<TurnServer>,
}

/// Where the server is: the address it binds, the one it advertises, its media sockets.
#[derive(Debug, Clone)]
pub struct TurnSite {
    pub bind: IpAddr,
    pub public_ip: IpAddr,
    /// The media socket addresses browsers send to (always a permitted relay target).
    pub media: Vec<SocketAddr>,
    /// Where the relays reach the media socket from this host. Behind 1:1 NAT the advertised
    /// media address is not reachable from inside (no hairpin): a relay sends what a client
    /// addresses to `media` here instead, and reports what comes from here as from `media`.
    pub media_local: SocketAddr,
    /// Relay ports the media socket must know (see [`crate::media_socket::LocalRelays`]).
    pub relays: Option<Arc<crate::media_socket::LocalRelays>>,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Bind the TURN ports and start the server on `arbiter`.
pub fn start(cfg: &TurnConfig, site: &TurnSite, arbiter: &ArbiterHandle) -> io::Result<TurnHandle> {
    let (udp, udp_local, tcp_main) = crate::media_socket::MediaSocket::bind_pair(site.bind, cfg.port)?;
    socket_buffers(&udp, LISTENER_SOCKET_BUFFER);
    let mut listeners = vec![tcp_main];
    if let Some(p) = cfg.tcp_port {
        listeners.push(std::net::TcpListener::bind((site.bind, p))?);
    }
    udp.set_nonblocking(true)?;
    let mut tcp = Vec::new();
    for l in &listeners {
        l.set_nonblocking(true)?;
        tcp.push(l.local_addr()?);
    }

    let secret = cfg.secret.clone().unwrap_or_else(|| {
        let bytes: [u8; 24] = rand::random();
        Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    });
    let auth = Arc::new(Authenticator::new(&cfg.realm, &cfg.users, Some(secret.clone()), rand::random()));
    let mut turn_ports: Vec<u16> = tcp.iter().map(|a| a.port()).collect();
    turn_ports.push(udp_local.port());
    let own_ips = vec![site.public_ip, site.bind];
    let policy = Arc::new(PeerPolicy::new(cfg.allow_peers.clone(), site.media.clone(), own_ips, turn_ports));
    let issuer = Arc::new(CredentialIssuer {
        secret,
        ttl: cfg.credential_ttl,
        realm: cfg.realm.clone(),
        host: site.public_ip,
        port: udp_local.port(),
        tcp_port: cfg.tcp_port.and_then(|_| tcp.get(1).map(|a| a.port())),
        rate_per_minute: cfg.credential_rate,
    });
    let stats = Arc::new(TurnStats::default());

    // Relays bind the listen address; when that is a wildcard of the other family than the
    // advertised address, bind that family's wildcard.
    let relay_bind = match (site.bind, site.public_ip) {
        (b, _) if !b.is_unspecified() => b,
        (_, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let limits = Limits {
        user_quota: cfg.user_quota,
        max_allocations: cfg.max_allocations,
        user_bytes_per_sec: cfg.user_kbps.saturating_mul(1000) / 8,
    };
    let (st, pol, pub_ip) = (stats.clone(), policy.clone(), site.public_ip);
    let media = Arc::new(MediaRoute {
        public: site.media.clone(),
        local: site.media_local,
        relays: site.relays.clone(),
    });
    let server = TurnServer::start_in_arbiter(arbiter, move |ctx| {
        // Runs on the TURN arbiter: register the sockets with its runtime here.
        let udp = match tokio::net::UdpSocket::from_std(udp) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                warn!(error = %e, "TURN UDP socket cannot be polled");
                None
            }
        };
        if let Some(sock) = &udp {
            ctx.add_stream(datagrams(sock.clone(), MAX_DATAGRAM, |source, data| UdpIn { source, data }));
        }
        let me = ctx.address();
        for l in listeners {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    actix::spawn(accept_loop(l, me.clone(), st.clone()));
                }
                Err(e) => warn!(error = %e, "TURN TCP listener cannot be polled"),
            }
        }
        TurnServer {
            auth,
            policy: pol,
            relay_bind,
            public_ip: pub_ip,
            media,
            udp,
            udp_local,
            allocations: HashMap::new(),
            users: HashMap::new(),
            limits,
            next_id: 0,
            stats: st,
            me: me.recipient(),
        }
    });
    info!(udp = %udp_local, tcp = ?tcp, realm = %cfg.realm, users = cfg.users.len(),
        allow_peers = ?cfg.allow_peers.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "TURN server listening");
    Ok(TurnHandle { udp: udp_local, tcp, issuer, stats, server })
}

/// Ask for bigger kernel buffers; the kernel caps them (a failure only costs burst tolerance).
fn socket_buffers(s: &std::net::UdpSocket, size: usize) {
    let s = socket2::SockRef::from(s);
    if let Err(e) = s.set_recv_buffer_size(size).and_then(|_| s.set_send_buffer_size(size)) {
        debug!(error = %e, "TURN socket buffers not enlarged");
    }
}

/// A stream of the datagrams (of fewer than `max` bytes) a socket receives, each turned into an
/// item by `f`.
fn datagrams<T: 'static>(
    socket: Arc<tokio::net::UdpSocket>,
    max: usize,
    f: impl Fn(SocketAddr, Vec<u8>) -> T + 'static,
) -> impl futures_util::Stream<Item = T> {
    let f = std::rc::Rc::new(f);
    stream::unfold((socket, vec![0u8; max]), move |(socket, mut buf)| {
        let f = f.clone();
        async move {
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, _)) if n >= buf.len() => debug!("oversized datagram dropped"),
                    Ok((n, source)) => {
                        let item = f(source, buf[..n].to_vec());
                        return Some((item, (socket, buf)));
                    }
                    // ICMP errors surface here on some systems: keep reading.
                    Err(e) => debug!(error = %e, "TURN UDP receive error"),
                }
            }
        }
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, server: Addr<TurnServer>, stats: Arc<TurnStats>) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "TURN TCP listener has no address");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                if stats.tcp_connections.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                    debug!(%remote, "TURN TCP connection refused: too many connections");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
                let (server, stats) = (server.clone(), stats.clone());
                actix::spawn(async move {
                    tcp_connection(stream, remote, local, server).await;
                    stats.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                warn!(error = %e, "TURN TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One TURN-over-TCP client: frames in to the server, a bounded queue out.
async fn tcp_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    server: Addr<TurnServer>,
) {
    let tuple = FiveTuple { transport: Transport::Tcp, client: remote, server: local };
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_SEND_QUEUE);
    let writer = actix::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    debug!(%remote, %local, "TURN TCP connection");
    let mut splitter = StreamSplitter::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut spoke = false;
    // The first frame's deadline counts from the connection, not from each read: a client that
    // trickles a byte at a time still has to finish it in time.
    let first_frame_by = tokio::time::Instant::now() + TCP_FIRST_FRAME_TIMEOUT;
    'read: loop {
        let read = if spoke {
            rd.read(&mut buf).await
        } else {
            match tokio::time::timeout_at(first_frame_by, rd.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    debug!(%remote, "TURN TCP connection sent nothing in time");
                    break;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        splitter.extend(&buf[..n]);
        loop {
            match splitter.next_frame() {
                Ok(Some(frame)) => {
                    spoke = true;
                    let packet = ClientPacket { tuple, data: frame, sink: ClientSink::Tcp(tx.clone()) };
                    if server.send(packet).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(%remote, error = %e, "TURN TCP framing error: closing");
                    break 'read;
                }
            }
        }
    }
    server.do_send(TcpClosed { tuple });
    // Let queued answers go out before the socket closes.
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
    debug!(%remote, "TURN TCP connection closed");
}

// ---------------------------------------------------------------------------------------------
// The server actor

struct Limits {
    user_quota: u32,
    max_allocations: u32,
    user_bytes_per_sec: u64,
}

struct Entry {
    id: u64,
    addr: Addr<Allocation>,
    username: String,
    /// The Allocate transaction and its answer, for retransmissions.
    txid: TransactionId,
    response: Vec<u8>,
}

struct UserEntry {
    allocations: u32,
    budget: Arc<Mutex<TokenBucket>>,
}

/// The TURN listener and allocation table (see the module docs).
pub struct TurnServer {
    auth: Arc<Authenticator>,
    policy: Arc<PeerPolicy>,
    relay_bind: IpAddr,
    public_ip: IpAddr,
    media: Arc<MediaRoute>,
    udp: Option<Arc<tokio::net::UdpSocket>>,
    udp_local: SocketAddr,
    allocations: HashMap<FiveTuple, Entry>,
    users: HashMap<String, UserEntry>,
    limits: Limits,
    next_id: u64,
    stats: Arc<TurnStats>,
    /// Our own address, handed to each allocation for its [`AllocationClosed`].
    me: Recipient<AllocationClosed>,
}

impl Actor for TurnServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // TCP connections wait on `send`; a deep mailbox is not needed, a full one waits.
        ctx.set_mailbox_capacity(256);
    }
}

/// A datagram on the UDP listener.
struct UdpIn {
    source: SocketAddr,
    data: Vec<u8>,
}

impl StreamHandler<UdpIn> for TurnServer {
    fn handle(&mut self, item: UdpIn, _ctx: &mut Context<Self>) {
        let Some(socket) = self.udp.clone() else { return };
        let tuple = FiveTuple { transport: Transport::Udp, client: item.source, server: self.udp_local };
        self.on_packet(tuple, &item.data, ClientSink::Udp { socket, to: item.source });
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        warn!("TURN UDP listener stream ended");
    }
}

/// A frame from a TCP client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientPacket {
    pub tuple: FiveTuple,
    pub data: Vec<u8>,
    pub sink: ClientSink,
}

impl Handler<ClientPacket> for TurnServer {
    type Result = ();
    fn handle(&mut self, m: ClientPacket, _ctx: &mut Context<Self>) {
        self.on_packet(m.tuple, &m.data, m.sink);
    }
}

/// A TCP client went away: its allocation goes too.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TcpClosed {
    pub tuple: FiveTuple,
}

impl Handler<TcpClosed> for TurnServer {
    type Result = ();
    fn handle(&mut self, m: TcpClosed, _ctx: &mut Context<Self>) {
        if let Some(e) = self.allocations.get(&m.tuple) {
            let (id, addr) = (e.id, e.addr.clone());
            self.release(m.tuple, id);
            addr.do_send(Close);
        }
    }
}

/// An allocation ended (expired, refreshed to 0, closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AllocationClosed {
    pub id: u64,
    pub tuple: FiveTuple,
}

impl Handler<AllocationClosed> for TurnServer {
    type Result = ();
    fn handle(&mut self, m: AllocationClosed, _ctx: &mut Context<Self>) {
        self.release(m.tuple, m.id);
    }
}

impl TurnServer {
    fn on_packet(&mut self, tuple: FiveTuple, data: &[u8], sink: ClientSink) {
        match framing::classify(data) {
            Kind::ChannelData => {
                if let (Some((number, payload)), Some(e)) =
                    (framing::parse_channel_data(data), self.allocations.get(&tuple))
                {
                    self.to_allocation(&e.addr, ToPeer::Channel { number, payload: payload.to_vec() });
                }
            }
            Kind::Stun => match wire::read(data) {
                Ok(Incoming::Request(msg)) => self.on_request(tuple, &msg, &sink),
                Ok(Incoming::Send { peer, data }) => {
                    if let Some(e) = self.allocations.get(&tuple) {
                        self.to_allocation(&e.addr, ToPeer::Send { peer, payload: data.to_vec() });
                    }
                }
                Ok(Incoming::Ignored) | Err(_) => {}
            },
            Kind::Invalid => {}
        }
    }

    /// Client data for an allocation; dropped (as UDP would) when its mailbox is full.
    fn to_allocation(&self, addr: &Addr<Allocation>, m: ToPeer) {
        if addr.try_send(m).is_err() {
            TurnStats::inc(&self.stats.dropped);
        }
    }

    fn on_request(&mut self, tuple: FiveTuple, msg: &Message<'_>, sink: &ClientSink) {
        let unknown = wire::unknown_attributes(msg);
        if !unknown.is_empty() {
            sink.send(wire::unknown(msg, &unknown));
            return;
        }
        let req = match wire::parse_request(msg) {
            Ok(r) => r,
            Err(c) => {
                sink.send(wire::error(msg, c, None));
                return;
            }
        };
        if req == Request::Binding {
            sink.send(wire::success(msg, &[Attr::XorMapped(tuple.client)], None));
            return;
        }
        let now = now_unix();
        let authed = match self.auth.authenticate(msg, tuple.client.ip(), now) {
            Ok(a) => a,
            Err(e) => {
                let with_credentials = msg.has_attribute(MessageIntegrity::TYPE)
                    || msg.has_attribute(MessageIntegritySha256::TYPE);
                if with_credentials {
                    TurnStats::inc(&self.stats.auth_failures);
                    debug!(client = %tuple.client, request = req.name(), code = e.code(), "TURN request refused");
                } else {
                    TurnStats::inc(&self.stats.challenges);
                }
                let answer = match e {
                    AuthError::BadRequest => wire::error(msg, code::BAD_REQUEST, None),
                    AuthError::Unauthorized | AuthError::StaleNonce => wire::challenge(
                        msg,
                        e.code(),
                        self.auth.realm(),
                        &self.auth.make_nonce(tuple.client.ip(), now),
                    ),
                };
                sink.send(answer);
                return;
            }
        };
        let key = &authed.key;
        if let Request::Allocate { transport, lifetime, family, even_port, reservation } = req {
            self.allocate(
                tuple,
                msg,
                sink,
                authed.username,
                key,
                transport,
                lifetime,
                family,
                even_port,
                reservation,
            );
            return;
        }
        let Some(e) = self.allocations.get(&tuple) else {
            sink.send(wire::error(msg, code::ALLOCATION_MISMATCH, Some(key)));
            return;
        };
        if e.username != authed.username {
            sink.send(wire::error(msg, code::WRONG_CREDENTIALS, Some(key)));
            return;
        }
        let relay_v4 = self.public_ip.is_ipv4();
        let refused = match &req {
            Request::CreatePermission { peers } => {
                if peers.iter().any(|p| p.is_ipv4() != relay_v4) {
                    Some(code::PEER_ADDRESS_FAMILY_MISMATCH)
                } else if let Some(p) = peers.iter().find(|p| !self.policy.permits_ip(p.ip())) {
                    info!(user = %authed.username, client = %tuple.client, peer = %p.ip(), "TURN permission refused by policy");
                    Some(code::FORBIDDEN)
                } else {
                    None
                }
            }
            Request::ChannelBind { peer, .. } => {
                if peer.is_ipv4() != relay_v4 {
                    Some(code::PEER_ADDRESS_FAMILY_MISMATCH)
                } else if !self.policy.permits_addr(*peer) {
                    info!(user = %authed.username, client = %tuple.client, %peer, "TURN channel refused by policy");
                    Some(code::FORBIDDEN)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(c) = refused {
            if c == code::FORBIDDEN {
                TurnStats::inc(&self.stats.forbidden_peers);
            }
            sink.send(wire::error(msg, c, Some(key)));
            return;
        }
        let (id, addr) = (e.id, e.addr.clone());
        if let Request::Refresh { lifetime } = req {
            if grant_lifetime(lifetime).is_zero() {
                // Deleted now: the quota is free for the next Allocate at once.
                self.release(tuple, id);
            }
        }
        addr.do_send(AllocationRequest { raw: msg.as_bytes().to_vec(), req, key: key.clone() });
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        sink: &ClientSink,
        username: String,
        key: &IntegrityKey,
        transport: Option<u8>,
        lifetime: Option<u32>,
        family: Option<stun_types::AddressFamily>,
        even_port: bool,
        reservation: bool,
    ) {
        if let Some(e) = self.allocations.get(&tuple) {
            // A retransmitted Allocate gets the same answer; any other is a mismatch.
            let answer = if e.txid == msg.transaction_id() {
                e.response.clone()
            } else {
                wire::error(msg, code::ALLOCATION_MISMATCH, Some(key))
            };
            sink.send(answer);
            return;
        }
        let refuse = |c: u16| wire::error(msg, c, Some(key));
        match transport {
            None => {
                sink.send(refuse(code::BAD_REQUEST));
                return;
            }
            Some(17) => {}
            Some(_) => {
                sink.send(refuse(code::UNSUPPORTED_TRANSPORT_PROTOCOL));
                return;
            }
        }
        if reservation {
            // No reservations are made (EVEN-PORT's R bit is ignored), so none can be found.
            sink.send(refuse(code::INSUFFICIENT_CAPACITY));
            return;
        }
        let want_v4 = match family {
            None => self.public_ip.is_ipv4(),
            Some(f) => f == stun_types::AddressFamily::IPV4,
        };
        if want_v4 != self.public_ip.is_ipv4() {
            sink.send(refuse(code::ADDRESS_FAMILY_NOT_SUPPORTED));
            return;
        }
        if self.allocations.len() >= self.limits.max_allocations as usize {
            TurnStats::inc(&self.stats.quota_rejections);
            debug!(user = %username, "TURN allocation refused: server at capacity");
            sink.send(refuse(code::INSUFFICIENT_CAPACITY));
            return;
        }
        let held = self.users.get(&username).map(|u| u.allocations).unwrap_or(0);
        if held >= self.limits.user_quota {
            TurnStats::inc(&self.stats.quota_rejections);
            debug!(user = %username, held, "TURN allocation refused: user quota reached");
            sink.send(refuse(code::ALLOCATION_QUOTA_REACHED));
            return;
        }
        let relay = match self.bind_relay(even_port) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "TURN relay socket cannot be bound");
                sink.send(refuse(code::INSUFFICIENT_CAPACITY));
                return;
            }
        };
        let relay_port = relay.local_addr().map(|a| a.port()).unwrap_or(0);
        let relayed = SocketAddr::new(self.public_ip, relay_port);
        let lifetime = grant_lifetime(lifetime.filter(|&l| l != 0));
        self.next_id += 1;
        let id = self.next_id;
        let now = Instant::now();
        let bytes_per_sec = self.limits.user_bytes_per_sec;
        let user = self.users.entry(username.clone()).or_insert_with(|| UserEntry {
            allocations: 0,
            budget: Arc::new(Mutex::new(TokenBucket::new(bytes_per_sec, now))),
        });
        user.allocations += 1;
        let alloc = Allocation {
            id,
            tuple,
            username: username.clone(),
            state: AllocationState::new(now, lifetime),
            relay: Arc::new(relay),
            relayed,
            media_alias: self.media.public.first().copied().unwrap_or(self.media.local),
            media: self.media.clone(),
            sink: sink.clone(),
            budget: user.budget.clone(),
            policy: self.policy.clone(),
            server: self.me.clone(),
            stats: self.stats.clone(),
        };
        let addr = alloc.start();
        let response = wire::success(
            msg,
            &[
                Attr::XorRelayed(relayed),
                Attr::Lifetime(lifetime.as_secs() as u32),
                Attr::XorMapped(tuple.client),
            ],
            Some(key),
        );
        sink.send(response.clone());
        self.allocations.insert(
            tuple,
            Entry { id, addr, username: username.clone(), txid: msg.transaction_id(), response },
        );
        self.stats.allocations.store(self.allocations.len(), Ordering::Relaxed);
        self.stats.allocations_total.fetch_add(1, Ordering::Relaxed);
        info!(user = %username, client = %tuple.client, transport = ?tuple.transport, %relayed,
            lifetime = lifetime.as_secs(), "TURN allocation created");
    }

    fn bind_relay(&self, even_port: bool) -> io::Result<tokio::net::UdpSocket> {
        let tries = if even_port { EVEN_PORT_TRIES } else { 1 };
        let mut last = None;
        for _ in 0..tries {
            let s = std::net::UdpSocket::bind((self.relay_bind, 0))?;
            if even_port && s.local_addr()?.port() % 2 != 0 {
                last = Some(s); // keep it bound so the next try gets another port
                continue;
            }
            drop(last);
            socket_buffers(&s, RELAY_SOCKET_BUFFER);
            s.set_nonblocking(true)?;
            return tokio::net::UdpSocket::from_std(s);
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, "no even relay port found"))
    }

    /// Forget allocation `id` of `tuple` (if it is still the one there) and free its quota.
    fn release(&mut self, tuple: FiveTuple, id: u64) {
        if self.allocations.get(&tuple).is_none_or(|e| e.id != id) {
            return;
        }
        if let Some(e) = self.allocations.remove(&tuple) {
            if let Some(u) = self.users.get_mut(&e.username) {
                u.allocations = u.allocations.saturating_sub(1);
                if u.allocations == 0 {
                    self.users.remove(&e.username);
                }
            }
        }
        self.stats.allocations.store(self.allocations.len(), Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The allocation actor

/// One allocation: its relay socket and state (see the module docs).
pub struct Allocation {
    id: u64,
    tuple: FiveTuple,
    username: String,
    state: AllocationState,
    relay: Arc<tokio::net::UdpSocket>,
    relayed: SocketAddr,
    /// How the server's own media socket is reached ([`TurnSite::media_local`]).
    media: Arc<MediaRoute>,
    /// The advertised media address this client last sent to: what the media socket's replies
    /// are reported as coming from.
    media_alias: SocketAddr,
    sink: ClientSink,
    budget: Arc<Mutex<TokenBucket>>,
    policy: Arc<PeerPolicy>,
    server: Recipient<AllocationClosed>,
    stats: Arc<TurnStats>,
}

impl Actor for Allocation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(r) = &self.media.relays {
            r.add(self.relayed.port());
        }
        ctx.set_mailbox_capacity(ALLOCATION_MAILBOX);
        ctx.add_stream(datagrams(self.relay.clone(), RELAY_DATAGRAM, |peer, data| FromPeer { peer, data }));
        ctx.run_interval(EXPIRY_CHECK, |a, ctx| {
            let now = Instant::now();
            if a.state.is_expired(now) {
                ctx.stop();
            } else {
                a.state.prune(now);
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        if let Some(r) = &self.media.relays {
            r.remove(self.relayed.port());
        }
        self.server.do_send(AllocationClosed { id: self.id, tuple: self.tuple });
        info!(user = %self.username, client = %self.tuple.client, relayed = %self.relayed, "TURN allocation closed");
        Running::Stop
    }
}

impl Allocation {
    fn within_budget(&self, n: usize) -> bool {
        match self.budget.lock() {
            Ok(mut b) => b.take(n, Instant::now()),
            Err(_) => true, // a poisoned lock means a panic elsewhere: do not stop relaying too
        }
    }

    fn to_peer(&mut self, peer: SocketAddr, payload: &[u8]) {
        if !self.within_budget(payload.len()) {
            TurnStats::inc(&self.stats.dropped);
            return;
        }
        let to = if self.media.public.contains(&peer) {
            self.media_alias = peer;
            self.media.local
        } else {
            peer
        };
        match self.relay.try_send_to(payload, to) {
            Ok(_) => {
                TurnStats::inc(&self.stats.to_peer_packets);
                self.stats.to_peer_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
            }
            Err(_) => TurnStats::inc(&self.stats.dropped),
        }
    }

    fn reply(&self, data: Vec<u8>) {
        self.sink.send(data);
    }
}

/// The server's own media socket as clients address it and as relays reach it.
#[derive(Debug)]
struct MediaRoute {
    public: Vec<SocketAddr>,
    local: SocketAddr,
    relays: Option<Arc<crate::media_socket::LocalRelays>>,
}

/// Client data for a peer.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToPeer {
    /// ChannelData on a bound channel.
    Channel { number: u16, payload: Vec<u8> },
    /// A Send indication.
    Send { peer: SocketAddr, payload: Vec<u8> },
}

impl Handler<ToPeer> for Allocation {
    type Result = ();
    fn handle(&mut self, m: ToPeer, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let (peer, payload) = match m {
            ToPeer::Channel { number, payload } => match self.state.channel_peer(number, now) {
                Some(peer) => (peer, payload),
                None => return TurnStats::inc(&self.stats.dropped),
            },
            ToPeer::Send { peer, payload } => {
                if !self.state.has_permission(peer.ip(), now) || !self.policy.permits_addr(peer) {
                    return TurnStats::inc(&self.stats.dropped);
                }
                (peer, payload)
            }
        };
        self.to_peer(peer, &payload);
    }
}

/// A datagram a peer sent to the relay address.
struct FromPeer {
    peer: SocketAddr,
    data: Vec<u8>,
}

impl StreamHandler<FromPeer> for Allocation {
    fn handle(&mut self, mut m: FromPeer, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        if SocketAddr::new(m.peer.ip().to_canonical(), m.peer.port()) == self.media.local {
            m.peer = self.media_alias;
        }
        if !self.state.has_permission(m.peer.ip(), now) || !self.policy.permits_addr(m.peer) {
            return TurnStats::inc(&self.stats.dropped);
        }
        if !self.within_budget(m.data.len()) {
            return TurnStats::inc(&self.stats.dropped);
        }
        let frame = match self.state.channel_of(m.peer, now) {
            Some(n) => framing::channel_data(n, &m.data, self.sink.is_stream()),
            None => wire::data_indication(m.peer, &m.data),
        };
        let Some(frame) = frame else {
            return TurnStats::inc(&self.stats.dropped);
        };
        if self.sink.send(frame) {
            TurnStats::inc(&self.stats.to_client_packets);
            self.stats.to_client_bytes.fetch_add(m.data.len() as u64, Ordering::Relaxed);
        } else {
            TurnStats::inc(&self.stats.dropped);
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// An authenticated Refresh, CreatePermission or ChannelBind for this allocation (policy
/// already checked by the server); the allocation answers it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AllocationRequest {
    raw: Vec<u8>,
    req: Request,
    key: IntegrityKey,
}

impl Handler<AllocationRequest> for Allocation {
    type Result = ();
    fn handle(&mut self, m: AllocationRequest, ctx: &mut Context<Self>) {
        let Ok(msg) = Message::from_bytes(&m.raw) else { return };
        let now = Instant::now();
        let key = Some(&m.key);
        match m.req {
            Request::Refresh { lifetime } => {
                let lifetime = grant_lifetime(lifetime);
                self.state.refresh(now, lifetime);
                self.reply(wire::success(&msg, &[Attr::Lifetime(lifetime.as_secs() as u32)], key));
                if lifetime.is_zero() {
                    ctx.stop();
                }
            }
            Request::CreatePermission { peers } => {
                let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
                match self.state.add_permissions(&ips, now) {
                    Ok(()) => self.reply(wire::success(&msg, &[], key)),
                    Err(e) => self.reply(wire::error(&msg, e.code(), key)),
                }
            }
            Request::ChannelBind { channel, peer } => match self.state.bind_channel(channel, peer, now) {
                Ok(()) => self.reply(wire::success(&msg, &[], key)),
                Err(e) => self.reply(wire::error(&msg, e.code(), key)),
            },
            Request::Binding | Request::Allocate { .. } => {}
        }
    }
}

/// Delete the allocation now (its TCP connection closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for Allocation {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
