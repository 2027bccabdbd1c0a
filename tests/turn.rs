//! The embedded TURN server against two independent clients: a small TURN client written here
//! on the `stun-types`/`turn-types` codec (UDP and TCP), and coturn's `turnutils_uclient`
//! (Debian package `coturn`, which tests/run-all.sh installs; a missing binary fails the test).
//!
//! Covers: the long-term credential dance (401 with realm and nonce, then success), wrong or
//! missing credentials (401, no allocation), time-limited REST credentials, relaying with Send/Data
//! indications and channels both ways, TCP framing (padded ChannelData), the relay policy (403:
//! by default only the server's own media port), the credentials endpoint's rate limit per
//! client address (429), Refresh 0 freeing the quota, a flood of 10,000 Allocate requests (quota errors, memory flat),
//! logs free of passwords, and uclient runs over TCP and UDP with 10 clients and 0 % loss.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cpu_secs, rss_kib, Server};
use serde_json::Value;
use stun_types::attribute::{
    AttributeStaticType, ErrorCode, MessageIntegrity, Nonce, Realm, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWrite, MessageWriteExt,
    MessageWriteVec, Method, TransactionId, BINDING,
};
use turn_types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

const USER: &str = "probe";
const PASSWORD: &str = "probe-secret-7f3a";
const SECRET: &str = "rest-secret-91c2";
const WAIT: Duration = Duration::from_secs(3);

fn user_arg() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Lets relays reach loopback. The default policy lets a relay reach the server's own media
/// port only (all a browser talking to sluice needs); these tests' peers are UDP sockets on
/// 127.0.0.1, and turnutils_uclient relays between its own clients' relayed addresses, which
/// are on 127.0.0.1 too: loopback must be allowed for them, as an operator would allow a network.
const ALLOW_LOOPBACK: [&str; 2] = ["--turn-allow-peer", "127.0.0.0/8"];

/// A server with the test user and the REST secret (plus `extra`).
fn server(extra: &[&str]) -> Server {
    let user = user_arg();
    let mut args = vec!["--turn-user", &user, "--turn-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// The TURN port, from the URLs the credentials endpoint hands out.
fn turn_port(s: &Server) -> u16 {
    let (status, body) = s.rest("/rest-api/turn/credentials", None);
    assert_eq!(status, 200, "{body}");
    let url = body["urls"][0].as_str().expect("urls");
    url.rsplit(':').next().and_then(|p| p.split('?').next()).and_then(|p| p.parse().ok()).expect("port")
}

fn turn_addr(s: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], turn_port(s)))
}

fn stats(s: &Server) -> Value {
    let (status, body) = s.rest("/rest-api/turn/stats", None);
    assert_eq!(status, 200);
    body
}

// ---------------------------------------------------------------------------------------------
// A minimal TURN client

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// A received packet: a STUN message or ChannelData.
#[derive(Debug)]
enum Packet {
    Stun(Vec<u8>),
    Channel(u16, Vec<u8>),
}

struct Client {
    conn: Conn,
    user: String,
    password: String,
    realm: String,
    nonce: String,
}

struct Response {
    raw: Vec<u8>,
}

impl Response {
    fn msg(&self) -> Message<'_> {
        Message::from_bytes(&self.raw).expect("response parses")
    }
    /// 200 for success, else the error code.
    fn code(&self) -> u16 {
        let m = self.msg();
        match m.class() {
            MessageClass::Success => 200,
            MessageClass::Error => m.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0),
            other => panic!("not a response: {other:?}"),
        }
    }
}

impl Client {
    fn udp(server: SocketAddr) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Client::with(Conn::Udp(s, server))
    }

    fn tcp(server: SocketAddr) -> Client {
        let s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s.set_nodelay(true).unwrap();
        Client::with(Conn::Tcp(s))
    }

    fn with(conn: Conn) -> Client {
        Client {
            conn,
            user: USER.into(),
            password: PASSWORD.into(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    fn credentials(mut self, user: &str, password: &str) -> Client {
        self.user = user.into();
        self.password = password.into();
        self
    }

    fn local(&self) -> SocketAddr {
        match &self.conn {
            Conn::Udp(s, _) => s.local_addr().unwrap(),
            Conn::Tcp(s) => s.local_addr().unwrap(),
        }
    }

    fn send(&mut self, data: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, to) => {
                s.send_to(data, *to).unwrap();
            }
            Conn::Tcp(s) => s.write_all(data).unwrap(),
        }
    }

    /// The next packet, None after `timeout`.
    fn recv(&mut self, timeout: Duration) -> Option<Packet> {
        let deadline = Instant::now() + timeout;
        let raw = match &mut self.conn {
            Conn::Udp(s, _) => loop {
                let mut buf = vec![0; 65536];
                match s.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        buf.truncate(n);
                        break buf;
                    }
                    Err(_) if Instant::now() < deadline => continue,
                    Err(_) => return None,
                }
            },
            Conn::Tcp(s) => {
                // TURN over TCP: a STUN message is 20 + length bytes; ChannelData is padded to 4.
                let mut head = [0u8; 4];
                if !read_full(s, &mut head, deadline) {
                    return None;
                }
                let len = u16::from_be_bytes([head[2], head[3]]) as usize;
                let total = if head[0] >> 6 == 0 { 20 + len } else { (4 + len + 3) & !3 };
                let mut rest = vec![0u8; total - 4];
                assert!(read_full(s, &mut rest, deadline + WAIT), "TCP frame cut short");
                let mut all = head.to_vec();
                all.extend(rest);
                all
            }
        };
        if raw[0] >> 6 == 1 {
            let n = u16::from_be_bytes([raw[0], raw[1]]);
            let len = u16::from_be_bytes([raw[2], raw[3]]) as usize;
            return Some(Packet::Channel(n, raw[4..4 + len].to_vec()));
        }
        Some(Packet::Stun(raw))
    }

    fn build(
        &self,
        method: Method,
        auth: bool,
        attrs: &dyn Fn(&mut MessageWriteVec, TransactionId),
    ) -> (TransactionId, Vec<u8>) {
        let mut w = Message::builder_request(method, MessageWriteVec::new());
        let tid = w.transaction_id();
        attrs(&mut w, tid);
        if auth {
            w.add_attribute(&Username::new(&self.user).unwrap()).unwrap();
            w.add_attribute(&Realm::new(&self.realm).unwrap()).unwrap();
            w.add_attribute(&Nonce::new(&self.nonce).unwrap()).unwrap();
            let creds =
                LongTermKeyCredentials::new(self.user.clone(), self.password.clone(), self.realm.clone());
            w.add_message_integrity(&creds.into(), IntegrityAlgorithm::Sha1).unwrap();
        }
        w.add_fingerprint().unwrap();
        (tid, w.finish())
    }

    /// Send a request and wait for its response (other packets are skipped).
    fn request(
        &mut self,
        method: Method,
        auth: bool,
        attrs: &dyn Fn(&mut MessageWriteVec, TransactionId),
    ) -> Response {
        let (tid, raw) = self.build(method, auth, attrs);
        self.send(&raw);
        self.response(tid).unwrap_or_else(|| panic!("no response to {method:?}"))
    }

    fn response(&mut self, tid: TransactionId) -> Option<Response> {
        self.response_within(tid, WAIT)
    }

    fn response_within(&mut self, tid: TransactionId, wait: Duration) -> Option<Response> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(Packet::Stun(raw)) = self.recv(deadline - Instant::now()) {
                if Message::from_bytes(&raw).is_ok_and(|m| m.transaction_id() == tid && m.is_response()) {
                    return Some(Response { raw });
                }
            }
        }
        None
    }

    /// An authenticated request: the first answer (401 or 438) teaches realm and nonce.
    fn auth_request(
        &mut self,
        method: Method,
        attrs: &dyn Fn(&mut MessageWriteVec, TransactionId),
    ) -> Response {
        for _ in 0..3 {
            let r = self.request(method, !self.nonce.is_empty(), attrs);
            let c = r.code();
            if c == 401 && self.nonce.is_empty() || c == 438 {
                let m = r.msg();
                self.realm = m.attribute::<Realm>().expect("realm in challenge").realm().to_string();
                self.nonce = m.attribute::<Nonce>().expect("nonce in challenge").nonce().to_string();
                continue;
            }
            return r;
        }
        panic!("authentication did not settle");
    }

    /// Allocate; Ok(relayed address) or Err(error code).
    fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let r = self.auth_request(ALLOCATE, &|w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
        });
        match r.code() {
            200 => {
                let m = r.msg();
                assert!(m.has_attribute(MessageIntegrity::TYPE), "success is signed");
                let creds =
                    LongTermKeyCredentials::new(self.user.clone(), self.password.clone(), self.realm.clone());
                assert!(m.validate_integrity(&creds.into()).is_ok(), "response integrity");
                let mapped = m.attribute::<XorMappedAddress>().unwrap().addr(m.transaction_id());
                assert_eq!(mapped, self.local());
                assert_eq!(m.attribute::<Lifetime>().unwrap().seconds(), 600);
                Ok(m.attribute::<XorRelayedAddress>().unwrap().addr(m.transaction_id()))
            }
            c => Err(c),
        }
    }

    fn create_permission(&mut self, peer: SocketAddr) -> u16 {
        self.auth_request(CREATE_PERMISSION, &|w, tid| {
            w.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .code()
    }

    fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> u16 {
        self.auth_request(CHANNEL_BIND, &|w, tid| {
            w.add_attribute(&ChannelNumber::new(channel)).unwrap();
            w.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .code()
    }

    fn refresh(&mut self, lifetime: u32) -> u16 {
        self.auth_request(REFRESH, &|w, _| {
            w.add_attribute(&Lifetime::new(lifetime)).unwrap();
        })
        .code()
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        w.add_attribute(&Data::new(data)).unwrap();
        let raw = w.finish();
        self.send(&raw);
    }

    fn channel_data(&mut self, channel: u16, data: &[u8]) {
        let mut f = channel.to_be_bytes().to_vec();
        f.extend_from_slice(&(data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        if matches!(self.conn, Conn::Tcp(_)) {
            f.resize((f.len() + 3) & !3, 0);
        }
        self.send(&f);
    }

    /// The next Data indication or ChannelData: (peer or channel, payload).
    fn next_data(&mut self) -> Option<Packet> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.recv(deadline - Instant::now())? {
                Packet::Stun(raw) => {
                    let m = Message::from_bytes(&raw).ok()?;
                    if m.method() == DATA && m.class() == MessageClass::Indication {
                        return Some(Packet::Stun(raw));
                    }
                }
                p => return Some(p),
            }
        }
        None
    }
}

fn read_full(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => return false,
        }
    }
    true
}

/// A UDP peer on loopback that the relay talks to.
fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(WAIT)).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn binding_and_the_credential_challenge() {
    let s = server(&[]);
    let mut c = Client::udp(turn_addr(&s));
    let r = c.request(BINDING, false, &|_, _| {});
    assert_eq!(r.code(), 200);
    let m = r.msg();
    assert_eq!(m.attribute::<XorMappedAddress>().unwrap().addr(m.transaction_id()), c.local());

    // Allocate without credentials: 401 with REALM and NONCE.
    let r = c.request(ALLOCATE, false, &|w, _| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
    });
    assert_eq!(r.code(), 401);
    let m = r.msg();
    assert_eq!(m.attribute::<Realm>().unwrap().realm(), "sluice");
    assert!(!m.attribute::<Nonce>().unwrap().nonce().is_empty());
}

#[test]
fn no_or_wrong_credentials_get_401_and_no_allocation() {
    let s = server(&ALLOW_LOOPBACK);
    let addr = turn_addr(&s);
    for tcp in [false, true] {
        // Wrong password.
        let mut c =
            if tcp { Client::tcp(addr) } else { Client::udp(addr) }.credentials(USER, "wrong-password");
        assert_eq!(c.allocate(), Err(401), "tcp={tcp}");
        // Unknown user.
        let mut c2 = if tcp { Client::tcp(addr) } else { Client::udp(addr) }.credentials("mallory", PASSWORD);
        assert_eq!(c2.allocate(), Err(401), "tcp={tcp}");
        // The first client's 5-tuple has no allocation: a correctly signed CreatePermission
        // there finds none (437).
        c.password = PASSWORD.into();
        assert_eq!(c.create_permission("127.0.0.1:9".parse().unwrap()), 437, "tcp={tcp}");
        // And a Send indication goes nowhere.
        let p = peer();
        c.send_indication(p.local_addr().unwrap(), b"nope");
        let mut buf = [0u8; 16];
        p.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(p.recv_from(&mut buf).is_err(), "nothing relayed without an allocation");
    }
    let st = stats(&s);
    assert_eq!(st["allocations"], 0, "{st}");
    assert_eq!(st["allocationsTotal"], 0, "{st}");
    assert!(st["authFailures"].as_u64().unwrap() >= 4, "{st}");
}

#[test]
fn relays_both_ways_with_indications_and_channels_over_udp_and_tcp() {
    let s = server(&ALLOW_LOOPBACK);
    let addr = turn_addr(&s);
    for tcp in [false, true] {
        let mut c = if tcp { Client::tcp(addr) } else { Client::udp(addr) };
        let relayed = c.allocate().expect("allocate");
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");
        let p = peer();
        let peer_addr = p.local_addr().unwrap();
        let mut buf = vec![0u8; 2048];

        // Without a permission nothing goes out.
        c.send_indication(peer_addr, b"early");
        p.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(p.recv_from(&mut buf).is_err(), "tcp={tcp}: relayed without permission");
        p.set_read_timeout(Some(WAIT)).unwrap();

        assert_eq!(c.create_permission(peer_addr), 200);
        c.send_indication(peer_addr, b"hello peer");
        let (n, from) = p.recv_from(&mut buf).expect("peer receives the Send indication");
        assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed), "tcp={tcp}");

        p.send_to(b"hello client", relayed).unwrap();
        match c.next_data() {
            Some(Packet::Stun(raw)) => {
                let m = Message::from_bytes(&raw).unwrap();
                assert_eq!(m.attribute::<XorPeerAddress>().unwrap().addr(m.transaction_id()), peer_addr);
                assert_eq!(m.attribute::<Data>().unwrap().data(), b"hello client");
            }
            other => panic!("tcp={tcp}: want a Data indication, got {other:?}"),
        }

        // A channel: odd-sized payloads exercise the TCP padding.
        assert_eq!(c.channel_bind(0x4001, peer_addr), 200);
        c.channel_data(0x4001, b"via channel");
        let (n, _) = p.recv_from(&mut buf).expect("peer receives ChannelData payload");
        assert_eq!(&buf[..n], b"via channel");
        p.send_to(b"back via channel", relayed).unwrap();
        match c.next_data() {
            Some(Packet::Channel(n, d)) => assert_eq!((n, d.as_slice()), (0x4001, &b"back via channel"[..])),
            other => panic!("tcp={tcp}: want ChannelData, got {other:?}"),
        }
        // A bound channel cannot be rebound to another peer.
        assert_eq!(c.channel_bind(0x4001, "127.0.0.1:9".parse().unwrap()), 400);
        // A second Allocate on the same 5-tuple is a mismatch.
        assert_eq!(c.allocate(), Err(437));
        assert_eq!(c.refresh(0), 200);
    }
    let st = stats(&s);
    assert!(st["toPeer"]["packets"].as_u64().unwrap() >= 4, "{st}");
    assert!(st["toClient"]["packets"].as_u64().unwrap() >= 4, "{st}");
}

#[test]
fn disallowed_peers_get_403() {
    // Default policy: the server's own media port only; neither private nor public addresses
    // (the relay is no open proxy).
    let s = server(&[]);
    let addr = turn_addr(&s);
    let mut c = Client::udp(addr);
    c.allocate().expect("allocate");
    for denied in [
        "10.0.0.1:5000",
        "192.168.1.1:5000",
        "172.16.0.1:5000",
        "169.254.169.254:80",
        "100.64.0.1:1",
        "8.8.8.8:53",
        "1.1.1.1:5000",
    ] {
        assert_eq!(c.create_permission(denied.parse().unwrap()), 403, "{denied}");
        assert_eq!(c.channel_bind(0x4000, denied.parse().unwrap()), 403, "{denied}");
    }
    // The server's own media address is allowed, its media port only.
    let media = SocketAddr::from(([127, 0, 0, 1], s.media));
    assert_eq!(c.create_permission(media), 200);
    assert_eq!(c.channel_bind(0x4002, media), 200);
    assert_eq!(c.channel_bind(0x4003, "127.0.0.1:22".parse().unwrap()), 403);
    // The TURN port itself is never a peer, even when loopback is allowed.
    let s2 = server(&ALLOW_LOOPBACK);
    let addr2 = turn_addr(&s2);
    let mut c2 = Client::udp(addr2);
    c2.allocate().expect("allocate");
    assert_eq!(c2.channel_bind(0x4000, addr2), 403, "relay loop into the TURN port");
    assert_eq!(c2.create_permission("10.1.2.3:9".parse().unwrap()), 403, "only 127/8 was allowed");
    assert_eq!(c2.create_permission("8.8.8.8:53".parse().unwrap()), 403, "only 127/8 was allowed");
    assert!(stats(&s)["forbiddenPeers"].as_u64().unwrap() >= 10);
    // 0.0.0.0/0 opens every IPv4 address (nothing is sent here: a permission only), but never
    // the TURN port, multicast or broadcast.
    let s3 = server(&["--turn-allow-peer", "0.0.0.0/0"]);
    let addr3 = turn_addr(&s3);
    let mut c3 = Client::udp(addr3);
    c3.allocate().expect("allocate");
    for open in ["8.8.8.8:53", "10.1.2.3:9", "192.168.1.1:5000"] {
        assert_eq!(c3.create_permission(open.parse().unwrap()), 200, "{open}");
    }
    assert_eq!(c3.channel_bind(0x4000, addr3), 403, "relay loop into the TURN port");
    for never in ["224.0.0.1:5000", "255.255.255.255:5000", "0.0.0.0:5000"] {
        assert_eq!(c3.create_permission(never.parse().unwrap()), 403, "{never}");
    }
}

/// GET `/rest-api/turn/credentials` from `source` (a loopback address of its own: another
/// client), with the raw HTTP answer: status line, headers, body.
fn credentials_from(s: &Server, source: &str) -> String {
    let script = r#"
import socket, sys
c = socket.socket()
c.bind((sys.argv[1], 0))
c.connect(("127.0.0.1", int(sys.argv[2])))
c.sendall(b"GET /rest-api/turn/credentials HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
d = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    d += b
sys.stdout.write(d.decode())
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, source, &s.rest.to_string()])
        .output()
        .expect("python3 runs (tests/run-all.sh installs it for the RTSP camera)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn credentials_are_rate_limited_per_client_address() {
    let s = server(&["--turn-credential-rate", "3"]);
    let url = format!("http://127.0.0.1:{}/rest-api/turn/credentials", s.rest);
    // A rate of 3 a minute is a burst of 3, GET and POST alike.
    for i in 0..3 {
        let r = if i % 2 == 0 { ureq::get(&url).call() } else { ureq::post(&url).send_string("") };
        assert_eq!(r.map(|r| r.status()).unwrap_or_else(|e| panic!("request {i}: {e}")), 200);
    }
    let resp = match ureq::get(&url).set("Origin", "https://elsewhere.example").call() {
        Err(ureq::Error::Status(429, r)) => r,
        other => panic!("want 429, got {other:?}"),
    };
    let retry: u64 = resp.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=20).contains(&retry), "one credential every 20 s: {retry}");
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"), "readable from other pages");
    let body: Value = resp.into_json().unwrap();
    assert!(body["error"].as_str().is_some_and(|e| e.contains("too many")), "{body}");
    assert!(body.get("credential").is_none(), "{body}");
    // Another client address has an allowance of its own.
    let other = credentials_from(&s, "127.0.0.2");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert!(other.contains("\"credential\""), "{other}");
    // The refusal is logged once, not once per request.
    assert!(ureq::get(&url).call().is_err());
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log_text();
    assert_eq!(log.matches("TURN credentials refused: rate limit").count(), 1, "{log}");
    // The default allows a page's worth and more: 10 at once.
    let d = server(&[]);
    let url = format!("http://127.0.0.1:{}/rest-api/turn/credentials", d.rest);
    let codes: Vec<u16> = (0..11)
        .map(|_| {
            ureq::get(&url).call().map(|r| r.status()).unwrap_or_else(|e| match e {
                ureq::Error::Status(c, _) => c,
                e => panic!("{e}"),
            })
        })
        .collect();
    assert_eq!(codes, [[200; 10].as_slice(), &[429]].concat(), "{codes:?}");
}

#[test]
fn refresh_zero_frees_the_quota() {
    let s = server(&["--turn-user-quota", "1"]);
    let addr = turn_addr(&s);
    let mut a = Client::udp(addr);
    let mut b = Client::tcp(addr);
    a.allocate().expect("first allocation");
    assert_eq!(b.allocate(), Err(486), "quota of one");
    assert_eq!(a.refresh(0), 200);
    b.allocate().expect("quota freed by Refresh 0");
    assert_eq!(a.create_permission("127.0.0.1:9".parse().unwrap()), 437, "deleted");
    // Closing a TCP connection deletes its allocation.
    drop(b);
    let deadline = Instant::now() + WAIT;
    while stats(&s)["allocations"] != 0 {
        assert!(Instant::now() < deadline, "TCP close did not delete the allocation");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::udp(addr);
    c.allocate().expect("quota freed by TCP close");
}

#[test]
fn time_limited_credentials_from_rest() {
    let s = server(&["--turn-tcp-port", "0"]);
    let (status, body) = s.rest("/rest-api/turn/credentials?user=alice", None);
    assert_eq!(status, 200, "{body}");
    let username = body["username"].as_str().unwrap().to_string();
    let credential = body["credential"].as_str().unwrap().to_string();
    assert!(username.ends_with(":alice"), "{username}");
    assert_eq!(body["ttl"], 3600);
    let urls: Vec<&str> = body["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert_eq!(urls.len(), 3, "UDP, TCP, and the extra TCP port: {urls:?}");
    assert!(urls[0].ends_with("?transport=udp") && urls[1].ends_with("?transport=tcp"));
    assert_eq!(body["iceServers"][0]["username"], username.as_str());

    // Issued credentials work, over the extra TCP port too.
    let mut c = Client::udp(turn_addr(&s)).credentials(&username, &credential);
    c.allocate().expect("REST credentials allocate");
    let extra_port: u16 = urls[2].rsplit(':').next().unwrap().split('?').next().unwrap().parse().unwrap();
    let mut t =
        Client::tcp(SocketAddr::from(([127, 0, 0, 1], extra_port))).credentials(&username, &credential);
    t.allocate().expect("allocate on the extra TCP port");

    // Expired credentials, correctly signed with the secret, are refused.
    let expired = "1000000000:alice";
    let password = {
        // base64(HMAC-SHA1(secret, username)), as coturn's use-auth-secret.
        sluice_actors::turn_core::auth::rest_password(&sluice_actors::turn_core::Secret::new(SECRET), expired)
    };
    let mut e = Client::udp(turn_addr(&s)).credentials(expired, &password);
    assert_eq!(e.allocate(), Err(401));
}

#[test]
fn allocation_flood_hits_the_quota_and_memory_stays_flat() {
    const SOCKETS: usize = 500;
    const PER_SOCKET: usize = 20; // 10,000 Allocate requests per flood
    const BURST: usize = 50;
    let s = server(&ALLOW_LOOPBACK);
    let addr = turn_addr(&s);
    let pid = s.pid();

    // The nonce for 127.0.0.1, from one challenge; every flood request is then signed.
    let mut first = Client::udp(addr);
    first.allocate().expect("one allocation");
    let (realm, nonce) = (first.realm.clone(), first.nonce.clone());

    // Each flood returns its sockets, kept open so no later socket reuses a port (a 5-tuple)
    // that still holds an allocation.
    let flood = || -> (std::collections::BTreeMap<u16, usize>, Vec<Client>) {
        let mut codes = std::collections::BTreeMap::new();
        let mut socks: Vec<Client> = (0..SOCKETS)
            .map(|_| {
                let mut c = Client::udp(addr);
                c.realm = realm.clone();
                c.nonce = nonce.clone();
                c
            })
            .collect();
        for _ in 0..PER_SOCKET {
            // Bursts of BURST requests (one per socket), then their answers; a lost datagram is
            // retransmitted with the same transaction, as STUN clients do.
            for chunk in socks.chunks_mut(BURST) {
                let mut pending = Vec::with_capacity(BURST);
                for c in chunk.iter_mut() {
                    let (tid, raw) = c.build(ALLOCATE, true, &|w, _| {
                        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
                    });
                    c.send(&raw);
                    pending.push((tid, raw));
                }
                for (c, (tid, raw)) in chunk.iter_mut().zip(pending) {
                    let mut code = 0;
                    for attempt in 0..6 {
                        if attempt > 0 {
                            c.send(&raw);
                        }
                        if let Some(r) = c.response_within(tid, Duration::from_millis(250)) {
                            code = r.code();
                            break;
                        }
                    }
                    *codes.entry(code).or_insert(0) += 1;
                }
            }
        }
        (codes, socks)
    };

    let rss0 = rss_kib(pid);
    let (a, _keep_a) = flood();
    let rss1 = rss_kib(pid);
    let (b, _keep_b) = flood();
    let rss2 = rss_kib(pid);
    let st = stats(&s);
    eprintln!("flood 1: {a:?}\nflood 2: {b:?}\nRSS {rss0} -> {rss1} -> {rss2} KiB\n{st}");

    // Default quota 64: the first allocation plus 63 from the flood; then 486 for every new
    // 5-tuple, 437 for repeats on a 5-tuple that has one. No request goes unanswered.
    assert_eq!(a.get(&200), Some(&63), "{a:?}");
    assert_eq!(a.get(&437), Some(&(63 * (PER_SOCKET - 1))), "{a:?}");
    assert_eq!(a.get(&486), Some(&(SOCKETS * PER_SOCKET - 63 * PER_SOCKET)), "{a:?}");
    assert_eq!(b.get(&486), Some(&(SOCKETS * PER_SOCKET)), "{b:?}");
    assert_eq!(st["allocations"], 64);
    assert!(st["quotaRejections"].as_u64().unwrap() >= 18_000);
    // 63 allocations cost well under 8 MiB; a second flood of 10,000 refused requests adds
    // nothing that stays.
    assert!(rss1.saturating_sub(rss0) < 8 * 1024, "first flood grew RSS by {} KiB", rss1 - rss0);
    assert!(rss2.saturating_sub(rss1) < 2 * 1024, "second flood grew RSS by {} KiB", rss2 - rss1);

    // An unauthenticated flood: 10,000 challenges, all answered, no state kept.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut answered = 0;
    for _ in 0..(SOCKETS * PER_SOCKET / 100) {
        for _ in 0..100 {
            let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
            c.send_to(&w.finish(), addr).unwrap();
        }
        let mut buf = [0u8; 512];
        for _ in 0..100 {
            if let Ok((n, _)) = c.recv_from(&mut buf) {
                let m = Message::from_bytes(&buf[..n]).unwrap();
                assert_eq!(m.attribute::<ErrorCode>().unwrap().code(), 401);
                answered += 1;
            }
        }
    }
    let rss3 = rss_kib(pid);
    eprintln!("unauthenticated flood: {answered} answered, RSS {rss2} -> {rss3} KiB");
    assert!(answered >= 9_900, "{answered} of 10,000 challenges answered");
    assert!(rss3.saturating_sub(rss2) < 2 * 1024, "unauthenticated flood grew RSS by {} KiB", rss3 - rss2);
    assert_eq!(stats(&s)["allocations"], 64);
}

#[test]
fn logs_never_show_a_password_or_secret() {
    let s = server(&ALLOW_LOOPBACK);
    let addr = turn_addr(&s);
    let mut ok = Client::tcp(addr);
    ok.allocate().unwrap();
    let mut bad = Client::udp(addr).credentials(USER, "typo-in-the-password");
    assert_eq!(bad.allocate(), Err(401));
    let (_, body) = s.rest("/rest-api/turn/credentials", None);
    let credential = body["credential"].as_str().unwrap().to_string();
    assert_eq!(ok.refresh(0), 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log_text();
    assert!(log.contains("TURN allocation created"), "the log is the server's:\n{log}");
    for secret in [PASSWORD, SECRET, "typo-in-the-password", credential.as_str()] {
        assert!(!log.contains(secret), "log shows {secret:?}:\n{log}");
    }
    // `--help` shows no secrets from the environment either.
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .env("SLUICE_TURN_SECRET", SECRET)
        .env("SLUICE_TURN_USER", user_arg())
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--turn-secret") && !help.contains(SECRET) && !help.contains(PASSWORD));
}

// ---------------------------------------------------------------------------------------------
// coturn's turnutils_uclient

/// What turnutils_uclient prints at the end of a run.
#[derive(Debug, Default)]
struct UclientSummary {
    sent: u64,
    received: u64,
    lost_percent: f64,
    rtt_ms: f64,
    jitter_ms: f64,
}

fn parse_uclient(out: &str) -> Option<UclientSummary> {
    let mut s = UclientSummary::default();
    let mut seen = 0;
    let num = |text: &str, key: &str| -> Option<f64> {
        let rest = &text[text.find(key)? + key.len()..];
        let v: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        v.parse().ok()
    };
    for line in out.lines() {
        if line.contains("start_mclient: tot_send_msgs=") {
            s.sent = num(line, "tot_send_msgs=")? as u64;
            s.received = num(line, "tot_recv_msgs=")? as u64;
            seen += 1;
        } else if line.contains("Total lost packets") {
            let p = &line[line.find('(')? + 1..];
            s.lost_percent = p[..p.find('%')?].parse().ok()?;
            seen += 1;
        } else if line.contains("Average round trip delay") {
            s.rtt_ms = num(line, "delay ")?;
            seen += 1;
        } else if line.contains("Average jitter") {
            s.jitter_ms = num(line, "jitter ")?;
            seen += 1;
        }
    }
    (seen == 4).then_some(s)
}

fn uclient(args: &[&str]) -> (UclientSummary, String) {
    let out = Command::new("turnutils_uclient").args(args).output().unwrap_or_else(|e| {
        panic!(
            "turnutils_uclient cannot run ({e}): install Debian's coturn package \
             (tests/run-all.sh does)"
        )
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary = parse_uclient(&text).unwrap_or_else(|| panic!("no uclient summary in:\n{text}"));
    (summary, text)
}

#[test]
fn parse_uclient_summary() {
    let out = "8: : start_mclient: tot_send_msgs=1000, tot_recv_msgs=1000\n\
               8: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)\n\
               8: : Average round trip delay 0.221000 ms; min = 0 ms, max = 24 ms\n\
               8: : Average jitter 0.901000 ms; min = 0 ms, max = 24 ms\n";
    let s = parse_uclient(out).unwrap();
    assert_eq!((s.sent, s.received), (1000, 1000));
    assert_eq!((s.lost_percent, s.rtt_ms, s.jitter_ms), (0.0, 0.221, 0.901));
    assert!(parse_uclient("nothing").is_none());
}

/// coturn's client against our server: 10 clients in pairs (client to client through two
/// relays), 100 messages of 170 bytes each every 20 ms (uclient's default rate), TCP control
/// connections, then UDP; then time-limited credentials from the shared secret (`-W`).
#[test]
fn turnutils_uclient_tcp_and_udp_ten_clients_no_loss() {
    let s = server(&ALLOW_LOOPBACK);
    let port = turn_port(&s).to_string();
    let pid = s.pid();
    let base = ["-y", "-c", "-X", "-L", "127.0.0.1", "-p", &port, "-m", "10", "-n", "100", "-l", "170"];
    for (name, extra) in [("TCP", &["-t"][..]), ("UDP", &[][..])] {
        let cpu0 = cpu_secs(pid);
        let t0 = Instant::now();
        let mut args: Vec<&str> = extra.to_vec();
        args.extend_from_slice(&base);
        args.extend_from_slice(&["-u", USER, "-w", PASSWORD, "127.0.0.1"]);
        let (sum, text) = uclient(&args);
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(pid) - cpu0;
        eprintln!(
            "uclient {name}: sent {} received {} lost {}% rtt {} ms jitter {} ms; {wall:.1} s, server CPU {cpu:.2} s",
            sum.sent, sum.received, sum.lost_percent, sum.rtt_ms, sum.jitter_ms
        );
        assert_eq!(sum.sent, 1000, "{name}:\n{text}");
        assert_eq!(sum.received, 1000, "{name}:\n{text}");
        assert_eq!(sum.lost_percent, 0.0, "{name}:\n{text}");
    }
    // -W: the TURN REST API secret; uclient makes "timestamp:user" and its HMAC password.
    let (sum, text) = uclient(&[
        "-t",
        "-y",
        "-c",
        "-X",
        "-L",
        "127.0.0.1",
        "-p",
        &port,
        "-m",
        "2",
        "-n",
        "20",
        "-W",
        SECRET,
        "-u",
        "rest",
        "127.0.0.1",
    ]);
    assert_eq!((sum.sent, sum.received), (40, 40), "-W:\n{text}");
    let st = stats(&s);
    assert_eq!(st["authFailures"], 0, "{st}");
    assert!(st["allocationsTotal"].as_u64().unwrap() >= 22, "{st}");
}
