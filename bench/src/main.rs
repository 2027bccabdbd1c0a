//! sluice-bench: how many viewers per core, how fast a viewer starts, what each costs.
//!
//! One synthetic publisher (H.264 at a chosen bitrate + Opus, built on str0m like the server,
//! answering keyframe requests at once) and N subscribers that join in steps over the WCS
//! WebSocket protocol. Subscribers run str0m in RTP mode: nothing is depacketized or decoded,
//! packets are counted and sequence gaps measured. By default ([`header`], `--count-mode
//! header`) str0m handles only ICE, DTLS, RTCP and the media up to the first keyframe, and the
//! media after it is counted from the clear-text RTP header of datagrams read with `recvmmsg`;
//! `--count-mode str0m` hands every datagram to str0m. For each step the tool prints subscribers
//! connected, packets and bytes received, loss, join times (playStream sent -> first RTP, ->
//! first keyframe), the share of published packets delivered (deliv%), the server's CPU seconds
//! and RSS (from /proc/<pid>), server CPU per forwarded packet, the tool's and the machine's
//! CPU (and its CPU per received packet), and the kernel's UDP drops. Output: a table on
//! stdout, and JSON with `--json`.
//!
//! The server is started by the tool (`--spawn <binary>`, default target/release/sluice) on
//! random loopback ports, or an external one is used (`--ws`, `--pid`).
//!
//! `--janus` measures Janus's streaming plugin the same way, for a side-by-side comparison
//! (see [`janus`], [`rtp`] and bench/side-by-side.sh); `--compare` prints the two JSON results
//! next to each other ([`compare`]).

mod compare;
mod edges;
mod header;
mod janus;
mod rtp;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const LONG_ABOUT: &str =
    "Load tool for sluice (or any WCS-protocol server), and for Janus's streaming plugin.

One publisher (synthetic H.264 at --bitrate, --fps, a keyframe every --gop s, plus Opus 50 \
packets/s) and subscribers added --step at a time up to --subscribers. Each subscriber is a \
str0m peer in RTP mode (nothing decoded) on --threads worker threads. With --count-mode header \
(the default) str0m keeps the signalling answer, ICE, DTLS and RTCP, and media until the first \
keyframe; after it, each worker reads all its sockets with epoll and recvmmsg and counts RTP \
from the clear-text header (SSRC, sequence number), so the tool costs a fraction of the \
server. --count-mode str0m hands every datagram to str0m (the earlier figures). Subscribers \
offer transport-wide-cc only with --twcc (str0m mode only): sluice then runs bandwidth \
estimation and pacing towards them, as towards a browser. Per step: \
subscribers connected (ICE+DTLS up), packets/s received, loss (sequence gaps), join times \
(request sent -> first RTP packet, -> first keyframe packet; p50/p99 over the step's new \
subscribers), the server's CPU % and RSS from /proc/<pid>, server CPU microseconds per \
packet received by the subscribers, deliv% (packets received over packets published times \
subscribers: sluice renumbers what it sends, so frames it skips for a slow viewer leave no \
sequence gap, only a deficit here), this tool's own CPU % (bench%: publisher and subscribers) \
and per packet received (b-us/pk), and the whole machine's (all%, 100 per busy core): when all% nears the number of cores, the \
step measures the machine rather than the server. drop-c and drop-s: datagrams the kernel \
dropped for full receive buffers at the subscribers' sockets (the tool fell behind) and at all \
other sockets of the network namespace (the server's), from /proc/net/udp.

Sluice (default): the tool starts --spawn on random 127.0.0.1 ports (or uses --ws/--pid). \
The publisher is a WebRTC peer (publishStream) that answers keyframe requests at once; \
subscribers send playStream; join times start when playStream is sent.

Janus (--janus): the tool writes a loopback-only Janus configuration in a temporary folder \
(WebSocket transport on 127.0.0.1, streaming plugin only, one RTP mountpoint: H.264 pt 96 \
profile-level-id=42e01f packetization-mode=1 + Opus pt 111 on random 127.0.0.1 ports), starts \
--janus-bin on it and kills it at the end. The publisher sends the same frames as plain RTP \
to the mountpoint, packetized as str0m packetizes them for sluice (payloads up to 1120 bytes, \
SPS+PPS in a STAP-A, FU-A); an RTP mountpoint gets no keyframe requests, so keyframes come \
every --gop s only, and new viewers get Janus's stored keyframe (videobufferkf, \
--janus-keyframe-buffer). Each subscriber has its own WebSocket and Janus session, as a \
browser would: create, attach janus.plugin.streaming, watch (Janus offers with its ICE \
candidates), str0m answers with its host candidate, start; keepalives every 25 s. Join times \
start when watch is sent. CPU and RSS are read from the janus process.
Janus's ICE (libnice) ignores loopback interfaces, and sends no checks to 127.0.0.1 candidates: \
run the tool inside a network namespace where a veth carries 127.0.0.2 (--janus-ice-ip); \
Janus gathers on that address only, and the Janus subscribers' sockets are bound to it. \
bench/side-by-side.sh makes such a namespace and runs both servers with the same arguments. \
Candidates outside 127.0.0.0/8 are dropped from Janus's offers. With --janus-ws URL --pid PID \
an external Janus is used: it must have an RTP mountpoint --janus-mountpoint fed on \
127.0.0.1 ports --janus-rtp (video:audio).

--compare A.json B.json ... prints results written by --json side by side.";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load tool for sluice (or any WCS-protocol server), and for Janus's streaming plugin",
    long_about = LONG_ABOUT
)]
struct Args {
    /// Subscribers to reach
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Subscribers added per step
    #[arg(
        long,
        default_value_t = 0,
        help = "Subscribers added per step [default: subscribers/5, at least 1]"
    )]
    step: usize,
    /// Seconds measured after each step (after joins settle)
    #[arg(long, default_value_t = 5.0)]
    step_secs: f64,
    /// Video bitrate of the synthetic publisher, e.g. 600k, 2.5M
    #[arg(long, default_value = "600k")]
    bitrate: String,
    /// Video frames per second of the publisher
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Keyframe interval of the publisher in seconds (it also answers every keyframe request)
    #[arg(long, default_value_t = 2.0)]
    gop: f64,
    /// Total duration cap in seconds (steps stop when reached)
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Server binary to start on random loopback ports
    #[arg(long, default_value = "target/release/sluice")]
    spawn: String,
    /// Use a running server at this WebSocket URL instead of spawning one
    #[arg(long)]
    ws: Option<String>,
    /// Process id of the external server, for CPU and RSS readings
    #[arg(long)]
    pid: Option<u32>,
    /// Subscriber worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// How subscribers count media: `header` reads each socket with recvmmsg (epoll over all
    /// of a worker's sockets) and counts RTP from the clear-text header, str0m keeping ICE,
    /// DTLS and RTCP (and the media until the first keyframe); `str0m` hands every datagram
    /// to str0m (the tool before 2026-12-06, ~1 core for ~1,500 viewers)
    #[arg(long, value_enum, default_value_t = CountMode::Header)]
    count_mode: CountMode,
    /// Header mode: a worker's sleep after each round of reads, in ms (longer: bigger
    /// recvmmsg batches, later packets)
    #[arg(long, default_value_t = header::RECV_PAUSE_MS)]
    recv_pause_ms: f64,
    /// Subscribers offer transport-wide-cc: sluice then runs send-side bandwidth estimation
    /// and pacing for them, as for a browser. Needs `--count-mode str0m` (str0m sends the
    /// feedback; header counting would starve the estimate)
    #[arg(long)]
    twcc: bool,
    /// Write the results as JSON to this file
    #[arg(long)]
    json: Option<String>,
    /// Snapshot mode: take this many REST snapshots instead of adding subscribers
    #[arg(long, default_value_t = 0)]
    snapshots: usize,
    /// Publish this H.264 Annex-B clip (written with access unit delimiters, e.g. ffmpeg
    /// `-x264-params aud=1 -f h264`) instead of synthetic frames; it loops, and a keyframe
    /// request jumps to the clip's next IDR
    #[arg(long)]
    clip: Option<String>,
    /// Snapshot mode: a fresh publisher per snapshot that starts without a keyframe, so the
    /// server holds none and must request one (default: one publisher, keyframe held)
    #[arg(long)]
    keyframe_requested: bool,
    /// REST base URL of an external server (snapshot mode), e.g. http://127.0.0.1:8081
    #[arg(long)]
    rest: Option<String>,
    /// Subscribers play this stream name instead of the tool's own publisher (e.g.
    /// `vod://clip.mp4`: every viewer gets a private VOD source)
    #[arg(long)]
    play: Option<String>,
    /// `--media-dir` of the spawned server (for `--play vod://...`)
    #[arg(long)]
    media_dir: Option<String>,
    /// Stop adding subscribers after a step with more loss than this, in percent (sequence
    /// gaps, or packets not delivered: see deliv%), or with subscribers not connected (0: never)
    #[arg(long, default_value_t = 0.0)]
    stop_loss: f64,
    /// Measure Janus's streaming plugin instead of sluice (see below)
    #[arg(long)]
    janus: bool,
    /// Use a running Janus at this WebSocket URL (implies --janus; --pid for CPU and RSS)
    #[arg(long)]
    janus_ws: Option<String>,
    /// Janus binary started by --janus
    #[arg(long, default_value = "janus")]
    janus_bin: String,
    /// Janus's library folder, holding plugins/ and transports/ [default: found under /usr/lib]
    #[arg(long)]
    janus_lib: Option<String>,
    /// Streaming mountpoint id
    #[arg(long, default_value_t = 10)]
    janus_mountpoint: u64,
    /// RTP ports (video:audio) on 127.0.0.1 of an external Janus's mountpoint
    #[arg(long, default_value = "5004:5002")]
    janus_rtp: String,
    /// Mountpoint option videobufferkf: Janus stores the latest keyframe and sends it to each
    /// new viewer at once
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    janus_keyframe_buffer: bool,
    /// Janus's event_loops: 0 is Janus's default, a thread per handle; N shares N loops
    #[arg(long, default_value_t = 0)]
    janus_event_loops: usize,
    /// Mountpoint option threads: helper threads relaying to the viewers (0: Janus's default,
    /// the mountpoint's receiving thread relays to all)
    #[arg(long, default_value_t = 0)]
    janus_relay_threads: usize,
    /// UDP ports Janus's ICE agents use
    #[arg(long, default_value = "20000-40000")]
    janus_rtp_port_range: String,
    /// The only address Janus gathers ICE candidates on (ice_enforce_list)
    #[arg(long, default_value = "127.0.0.2")]
    janus_ice_ip: String,
    /// Print the results of earlier runs (files written by --json) side by side, and exit
    #[arg(long, num_args = 1.., value_name = "JSON")]
    compare: Vec<String>,
    /// A cluster edge's WebSocket URL: subscribers play there, round-robin over the edges,
    /// while the publisher publishes on the origin; repeatable (see the edges module)
    #[arg(long = "edge", value_name = "URL")]
    edges: Vec<String>,
    /// Process id of each --edge, in the same order, for per-node CPU readings
    #[arg(long = "edge-pid", value_name = "PID")]
    edge_pids: Vec<u32>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CountMode {
    Header,
    Str0m,
}

impl CountMode {
    fn name(self) -> &'static str {
        match self {
            CountMode::Header => "header",
            CountMode::Str0m => "str0m",
        }
    }
}

/// Whether subscribers offer transport-wide-cc (`--twcc`), read by `new_rtc`.
static SUB_TWCC: AtomicBool = AtomicBool::new(false);

impl Args {
    fn is_janus(&self) -> bool {
        self.janus || self.janus_ws.is_some()
    }
}

fn parse_bitrate(s: &str) -> u64 {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1e3),
        Some('m') => (&s[..s.len() - 1], 1e6),
        _ => (s.as_str(), 1.0),
    };
    (num.parse::<f64>().unwrap_or(600.0) * mul) as u64
}

/// Datagrams the kernel dropped for full receive buffers (/proc/net/udp, this network
/// namespace): at the subscribers' sockets, and at all others (the server's, mostly).
fn udp_drops(subs: &[Arc<SubStats>]) -> (u64, u64) {
    let ours: std::collections::HashSet<String> = subs
        .iter()
        .filter_map(|s| match s.local.get() {
            // /proc/net/udp prints the address as a native-endian u32, then the port.
            Some(SocketAddr::V4(a)) => {
                Some(format!("{:08X}:{:04X}", u32::from_ne_bytes(a.ip().octets()), a.port()))
            }
            _ => None,
        })
        .collect();
    let (mut mine, mut others) = (0, 0);
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(drops)) = (f.get(1), f.get(12).and_then(|d| d.parse::<u64>().ok())) else {
                continue;
            };
            if ours.contains(*local) {
                mine += drops;
            } else {
                others += drops;
            }
        }
    }
    (mine, others)
}

/// The whole machine's busy CPU time in seconds (all cores: 2 cores fully busy for 1 s is 2.0),
/// and the part of it spent in interrupts (irq + softirq: packet delivery, charged to no process).
fn machine_busy() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    let irq: f64 = v.iter().skip(5).take(2).sum();
    (busy / 100.0, irq / 100.0)
}

/// /proc readings of the server: CPU seconds (user+system) and RSS bytes.
fn proc_stat(pid: u32) -> (f64, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            let ut: f64 = rest.get(11)?.parse().ok()?;
            let st: f64 = rest.get(12)?.parse().ok()?;
            Some((ut + st) / tick)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

struct Server {
    child: Option<Child>,
    ws: String,
    rest: String,
    pid: u32,
    /// Janus mode: where the mountpoint takes RTP.
    janus: Option<JanusTarget>,
}

struct JanusTarget {
    video: SocketAddr,
    audio: SocketAddr,
    /// The generated configuration and log of a spawned Janus (removed at the end unless the
    /// run failed).
    dir: Option<PathBuf>,
    keep_dir: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(JanusTarget { dir: Some(d), keep_dir, .. }) = &self.janus {
            if *keep_dir {
                eprintln!("Janus configuration and log kept in {}", d.display());
            } else {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

fn start_janus(a: &Args) -> Server {
    if let Some(ws) = &a.janus_ws {
        let (v, au) = a.janus_rtp.split_once(':').expect("--janus-rtp VIDEO:AUDIO");
        let port = |p: &str| p.parse::<u16>().expect("--janus-rtp VIDEO:AUDIO");
        let target = JanusTarget {
            video: SocketAddr::from(([127, 0, 0, 1], port(v))),
            audio: SocketAddr::from(([127, 0, 0, 1], port(au))),
            dir: None,
            keep_dir: false,
        };
        let pid = a.pid.unwrap_or(0);
        return Server { child: None, ws: ws.clone(), rest: String::new(), pid, janus: Some(target) };
    }
    let j = janus::spawn(a);
    let target = JanusTarget { video: j.video, audio: j.audio, dir: Some(j.dir), keep_dir: false };
    let pid = j.child.id();
    Server { child: Some(j.child), ws: j.ws, rest: String::new(), pid, janus: Some(target) }
}

fn start_server(a: &Args) -> Server {
    if a.is_janus() {
        return start_janus(a);
    }
    if let Some(ws) = &a.ws {
        let rest = a.rest.clone().unwrap_or_else(|| "http://127.0.0.1:8081".into());
        return Server { child: None, ws: ws.clone(), rest, pid: a.pid.unwrap_or(0), janus: None };
    }
    let mut child = Command::new(&a.spawn)
        // Default bind address; the tool's subscribers are on loopback, hence the public IP.
        // No https/wss: the tool speaks plain ws, and would leave a certificate in the cwd.
        .args(["--public-ip", "127.0.0.1", "--no-tls", "--ws-port", "0", "--rest-port", "0"])
        .args(["--http-port", "0", "--media-port", "0", "--no-ice-tcp", "--turn-port", "0"])
        .args(a.media_dir.as_ref().map(|d| vec!["--media-dir".to_string(), d.clone()]).unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it: cargo build --release)", a.spawn));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let port = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} port in {line:?}"))
            .to_string()
    };
    let pid = child.id();
    Server {
        ws: format!("ws://127.0.0.1:{}/", port("ws")),
        rest: format!("http://127.0.0.1:{}", port("rest")),
        child: Some(child),
        pid,
        janus: None,
    }
}

/// A blocking WCS WebSocket client, kept open for the stream's lifetime.
struct Wcs {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Wcs {
    fn connect(url: &str) -> Wcs {
        let (ws, _) = tungstenite::connect(url).expect("websocket connect");
        let mut c = Wcs { ws };
        c.send(
            "connection",
            json!({"appKey": "defaultApp", "mediaProviders": ["WebRTC"], "clientVersion": "2.0"}),
        );
        c.wait(|v| v["message"] == "getUserData");
        c
    }

    fn send(&mut self, message: &str, data: Value) {
        let _ = self.ws.send(Message::text(json!({"message": message, "data": [data]}).to_string()));
    }

    fn wait(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["message"] == "ping" {
                        self.send("pong", Value::Null);
                    }
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("websocket: {e}"),
            }
        }
    }

    /// Answer pings without blocking (called periodically).
    fn keepalive(&mut self) {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            let _ = s.set_nonblocking(true);
        }
        while let Ok(m) = self.ws.read() {
            if let Message::Text(t) = m {
                if t.contains("\"ping\"") {
                    self.send("pong", Value::Null);
                }
            }
        }
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            let _ = s.set_nonblocking(false);
        }
    }
}

fn offer(rtc: &mut Rtc, dir: Direction, video: bool) -> (String, SdpPendingOffer, Vec<(Mid, MediaKind)>) {
    let mut api = rtc.sdp_api();
    let mut mids = vec![(api.add_media(MediaKind::Audio, dir, None, None, None), MediaKind::Audio)];
    if video {
        mids.push((api.add_media(MediaKind::Video, dir, None, None, None), MediaKind::Video));
    }
    let (o, p) = api.apply().expect("offer");
    (o.to_sdp_string(), p, mids)
}

/// A str0m peer: the publisher (`rtp_mode` false) or a subscriber (RTP mode). Subscribers
/// offer str0m's standard header extensions but transport-wide-cc only with `--twcc`: sluice
/// runs bandwidth estimation for a viewer that offers it, and header-mode subscribers send no
/// feedback.
fn new_rtc(rtp_mode: bool, socket: &UdpSocket) -> Rtc {
    let mut cfg = RtcConfig::new();
    if rtp_mode && !SUB_TWCC.load(Ordering::Relaxed) {
        let mut exts = str0m::rtp::ExtensionMap::empty();
        let std = str0m::rtp::ExtensionMap::standard();
        for id in 1..=14u8 {
            match std.lookup(id) {
                Some(str0m::rtp::Extension::TransportSequenceNumber) | None => {}
                Some(e) => exts.set(id, e.clone()),
            }
        }
        cfg = cfg.set_extension_map(exts);
    }
    let mut rtc = cfg
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .set_rtp_mode(rtp_mode)
        .set_stats_interval(None)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().expect("addr"), "udp").expect("candidate"));
    rtc
}

fn h264_frame(n: u64, key: bool, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 32);
    if key {
        out.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40]);
        out.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        out.extend_from_slice(&[0, 0, 0, 1, 0x65]);
    } else {
        out.extend_from_slice(&[0, 0, 0, 1, 0x41]);
    }
    let start = out.len();
    out.resize(start + size, 0);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b = ((n as usize * 31 + i * 7) % 251 + 1) as u8; // never 0: no start codes inside
    }
    out
}

/// Access units of an Annex-B clip written with AUDs, and whether each is a keyframe.
fn load_clip(path: &str) -> Vec<(Vec<u8>, bool)> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("clip {path}: {e}"));
    let mut starts: Vec<usize> = (0..data.len().saturating_sub(4))
        .filter(|&i| data[i..i + 4] == [0, 0, 0, 1] && data[i + 4] & 0x1f == 9)
        .collect();
    starts.push(data.len());
    starts
        .windows(2)
        .map(|w| {
            let au = data[w[0]..w[1]].to_vec();
            let key = au.windows(4).any(|x| x[..3] == [0, 0, 1] && x[3] & 0x1f == 5);
            (au, key)
        })
        .collect()
}

/// The publisher: synthetic H.264 (or a clip) + Opus, keyframes every `gop` s and on request.
fn run_publisher(
    mut rtc: Rtc,
    socket: UdpSocket,
    mids: Vec<(Mid, MediaKind)>,
    a: Args,
    stop: Arc<AtomicBool>,
) {
    let clip = a.clip.as_deref().map(load_clip);
    // Clip position; with --keyframe-requested the clip starts after its first keyframe.
    let mut clip_pos = if a.keyframe_requested { 1 } else { 0 };
    let local = socket.local_addr().expect("addr");
    let bitrate = parse_bitrate(&a.bitrate);
    let frame_gap = Duration::from_secs_f64(1.0 / a.fps as f64);
    let frame_size = (bitrate / 8 / a.fps as u64) as usize;
    let mid_of = |k| mids.iter().find(|(_, kk)| *kk == k).map(|(m, _)| *m);
    let (vmid, amid) = (mid_of(MediaKind::Video), mid_of(MediaKind::Audio));
    let mut buf = vec![0u8; 2000];
    let (mut next_v, mut next_a) = (Instant::now(), Instant::now());
    let (mut vn, mut an) = (0u64, 0u64);
    let mut last_key = Instant::now() - Duration::from_secs(100);
    let mut want_key = clip.is_none();
    let mut connected = false;
    while !stop.load(Ordering::Relaxed) {
        let deadline = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    if is_rtp(&t.contents) {
                        PUBLISHED.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => connected = true,
                Ok(Output::Event(Event::KeyframeRequest(_))) => want_key = true,
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    eprintln!("publisher: engine error, publishing stops: {e}");
                    return;
                }
            }
        };
        let wake = deadline.min(next_v).min(next_a);
        let wait = wake
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_micros(200), Duration::from_millis(20));
        socket.set_read_timeout(Some(wait)).ok();
        match socket.recv_from(&mut buf) {
            Ok((n, src)) => {
                if let Ok(r) = Receive::new(Protocol::Udp, src, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            Err(_) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
        if !connected {
            continue;
        }
        let now = Instant::now();
        if now >= next_v {
            next_v += frame_gap;
            let key = want_key || (clip.is_none() && last_key.elapsed().as_secs_f64() >= a.gop);
            if key {
                want_key = false;
                last_key = now;
            }
            // Keyframes are larger, as an encoder's are; the bitrate stays the target on average.
            let size = if key { frame_size * 4 } else { frame_size };
            let data = match &clip {
                Some(c) if !c.is_empty() => {
                    if want_key_clip(key, a.keyframe_requested, vn) {
                        // Jump to the clip's next keyframe, as an encoder would make one.
                        if let Some(k) = (1..=c.len()).map(|d| (clip_pos + d) % c.len()).find(|&i| c[i].1) {
                            clip_pos = k;
                        }
                    }
                    let au = c[clip_pos % c.len()].0.clone();
                    clip_pos = (clip_pos + 1) % c.len();
                    au
                }
                _ => h264_frame(vn, key, size),
            };
            if let Some(w) = vmid.and_then(|m| rtc.writer(m)) {
                let pt = w.payload_params().next().map(|p| p.pt());
                if let Some(pt) = pt {
                    let _ = w.write(pt, now, MediaTime::from_90khz(vn * 90_000 / a.fps as u64), data);
                }
            }
            vn += 1;
        }
        if now >= next_a {
            next_a += Duration::from_millis(20);
            if let Some(w) = amid.and_then(|m| rtc.writer(m)) {
                let pt = w.payload_params().next().map(|p| p.pt());
                if let Some(pt) = pt {
                    let t = MediaTime::new(an * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    let _ = w.write(pt, now, t, vec![0xfc; 80]);
                }
            }
            an += 1;
        }
    }
}

/// RTP packets the publisher sent: what each subscriber should receive.
pub static PUBLISHED: AtomicU64 = AtomicU64::new(0);

/// An (S)RTP packet, not RTCP (whose packet types 200-206 read as payload types 72-78) nor
/// STUN or DTLS.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(64..=95).contains(&(d[1] & 0x7f))
}

/// With a clip, only an explicit request makes a keyframe jump (the clip has its own GOP);
/// the very first frame of a `--keyframe-requested` run must not be one.
fn want_key_clip(key: bool, keyframe_requested: bool, vn: u64) -> bool {
    key && !(keyframe_requested && vn == 0)
}

/// What one subscriber saw.
#[derive(Default)]
struct SubStats {
    connected: AtomicBool,
    packets: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    first_rtp_us: AtomicU64,
    first_key_us: AtomicU64,
    /// The subscriber's UDP socket address.
    local: std::sync::OnceLock<SocketAddr>,
    /// When frames completed, for the edge-hop delay (probe subscribers only).
    frames: Option<edges::FrameTimes>,
}

struct Sub {
    rtc: Rtc,
    socket: UdpSocket,
    stats: Arc<SubStats>,
    play_sent: Instant,
    /// Highest extended sequence number and packets seen, per SSRC.
    seqs: HashMap<u32, (u64, u64, u64)>,
    alive: bool,
}

impl Sub {
    /// Note one RTP packet's extended sequence number; returns the subscriber's loss so far
    /// (sequence gaps over all its SSRCs).
    fn note_seq(&mut self, ssrc: u32, seq: u64) -> u64 {
        let e = self.seqs.entry(ssrc).or_insert((seq, seq, 0));
        e.2 += 1;
        e.1 = e.1.max(seq);
        self.seqs.values().map(|(a, b, n)| (b - a + 1).saturating_sub(*n)).sum()
    }
}

/// H.264 RTP payload starts a keyframe: IDR or SPS, alone, in STAP-A or at the start of FU-A.
fn starts_keyframe(p: &[u8]) -> bool {
    let Some(&h) = p.first() else { return false };
    match h & 0x1f {
        5 | 7 => true,
        24 => p.get(3).is_some_and(|b| matches!(b & 0x1f, 5 | 7)),
        28 => p.get(1).is_some_and(|b| b & 0x80 != 0 && matches!(b & 0x1f, 5 | 7)),
        _ => false,
    }
}

fn run_worker(rx: mpsc::Receiver<Sub>, stop: Arc<AtomicBool>) {
    let mut subs: Vec<Sub> = Vec::new();
    let mut buf = vec![0u8; 2000];
    while !stop.load(Ordering::Relaxed) {
        while let Ok(s) = rx.try_recv() {
            subs.push(s);
        }
        let mut earliest = Instant::now() + Duration::from_millis(5);
        for s in subs.iter_mut().filter(|s| s.alive) {
            let local = s.socket.local_addr().expect("addr");
            // Drain after every input: in RTP mode str0m hands packets out one poll at a time.
            let _ = s.rtc.handle_input(Input::Timeout(Instant::now()));
            earliest = earliest.min(drain(s));
            loop {
                match s.socket.recv_from(&mut buf) {
                    Ok((n, src)) => {
                        s.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if let Ok(r) = Receive::new(Protocol::Udp, src, local, &buf[..n]) {
                            let _ = s.rtc.handle_input(Input::Receive(Instant::now(), r));
                        }
                        earliest = earliest.min(drain(s));
                    }
                    Err(_) => break,
                }
            }
        }
        let wait = earliest.saturating_duration_since(Instant::now()).min(Duration::from_millis(2));
        std::thread::sleep(wait.max(Duration::from_micros(300)));
    }
}

/// Poll a subscriber's engine until it names its next deadline; count what it received.
fn drain(s: &mut Sub) -> Instant {
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => return t,
            Ok(Output::Transmit(t)) => {
                let _ = s.socket.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(Event::Connected)) => s.stats.connected.store(true, Ordering::Relaxed),
            Ok(Output::Event(Event::RtpPacket(p))) => {
                let us = s.play_sent.elapsed().as_micros() as u64;
                let st = &s.stats;
                if let Some(f) = &st.frames {
                    f.note(p.header.marker, &p.payload, Instant::now());
                }
                st.packets.fetch_add(1, Ordering::Relaxed);
                let _ = st.first_rtp_us.compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
                if starts_keyframe(&p.payload) {
                    let _ = st.first_key_us.compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
                }
                let total = s.note_seq(*p.header.ssrc, *p.seq_no);
                s.stats.lost.store(total, Ordering::Relaxed);
            }
            Ok(Output::Event(_)) => {}
            Err(_) => {
                s.alive = false;
                return Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// POST a JSON body; returns the HTTP status and the body.
fn http_post(base: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut s) = TcpStream::connect(hostport) else { return (0, String::new()) };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Start a publisher of `name`; returns its WebSocket (keep it open) and thread.
fn publish(
    server: &Server,
    a: &Args,
    name: &str,
    stop: Arc<AtomicBool>,
) -> (Wcs, std::thread::JoinHandle<()>) {
    let mut ws = Wcs::connect(&server.ws);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rtc = new_rtc(false, &sock);
    let (sdp, pending, mids) = offer(&mut rtc, Direction::SendOnly, true);
    ws.send(
        "publishStream",
        json!({"mediaSessionId": format!("{name}-pub"), "name": name, "published": true, "sdp": sdp}),
    );
    let ans = ws.wait(|v| v["message"] == "setRemoteSDP");
    let answer = SdpAnswer::from_sdp_string(ans["data"][1].as_str().unwrap_or("")).expect("answer");
    rtc.sdp_api().accept_answer(pending, answer).expect("accept");
    let a2 = a.clone();
    let t = std::thread::spawn(move || run_publisher(rtc, sock, mids, a2, stop));
    ws.wait(|v| v["message"] == "notifyStreamStatusEvent" && v["data"][0]["status"] == "PUBLISHING");
    (ws, t)
}

/// Snapshot latency: REST /stream/snapshot round trips, p50 and p99.
fn run_snapshots(a: &Args, server: &Server) {
    let mut ms = Vec::new();
    let mut failures = 0;
    let held_stop = Arc::new(AtomicBool::new(false));
    let mut held = None;
    if !a.keyframe_requested {
        held = Some(publish(server, a, "snap-held", held_stop.clone()));
        std::thread::sleep(Duration::from_millis(1500));
    }
    for i in 0..a.snapshots {
        let name = if a.keyframe_requested { format!("snap-{i}") } else { "snap-held".to_string() };
        let stop = Arc::new(AtomicBool::new(false));
        let fresh = a.keyframe_requested.then(|| publish(server, a, &name, stop.clone()));
        if fresh.is_some() {
            std::thread::sleep(Duration::from_millis(300));
        }
        let t0 = Instant::now();
        let (code, body) =
            http_post(&server.rest, "/rest-api/stream/snapshot", &json!({"streamName": name}).to_string());
        let took = t0.elapsed().as_secs_f64() * 1000.0;
        if code == 200 && body.contains("\"data\"") {
            ms.push(took);
        } else {
            failures += 1;
            eprintln!("snapshot {i}: HTTP {code} {}", body.chars().take(120).collect::<String>());
        }
        if let Some((_ws, t)) = fresh {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    held_stop.store(true, Ordering::Relaxed);
    if let Some((_ws, t)) = held {
        let _ = t.join();
    }
    let n = ms.len();
    let (p50, p99) = (percentile(&mut ms.clone(), 0.5), percentile(&mut ms, 0.99));
    let mode = if a.keyframe_requested { "keyframe requested" } else { "keyframe held" };
    println!("snapshots ({mode}): {n} ok, {failures} failed, latency p50 {p50:.1} ms, p99 {p99:.1} ms");
    if let Some(path) = &a.json {
        let v =
            json!({"mode": mode, "ok": n, "failed": failures, "p50_ms": p50, "p99_ms": p99, "clip": a.clip});
        std::fs::write(path, v.to_string()).expect("write json");
    }
}

/// A subscriber's engine and counters; the counters stay with the caller.
fn new_sub(rtc: Rtc, socket: UdpSocket, play_sent: Instant) -> (Sub, Arc<SubStats>) {
    new_sub_probing(rtc, socket, play_sent, false)
}

fn new_sub_probing(rtc: Rtc, socket: UdpSocket, play_sent: Instant, probe: bool) -> (Sub, Arc<SubStats>) {
    let stats = Arc::new(SubStats { frames: probe.then(edges::FrameTimes::default), ..Default::default() });
    if let Ok(l) = socket.local_addr() {
        let _ = stats.local.set(l);
    }
    (Sub { rtc, socket, stats: stats.clone(), play_sent, seqs: HashMap::new(), alive: true }, stats)
}

/// One sluice subscriber: playStream over its own WCS WebSocket at `url`, str0m offers;
/// `probe` notes frame times (edge mode).
fn join_sluice(url: &str, name: &str, i: usize, probe: bool) -> Result<(Sub, Arc<SubStats>, Wcs), String> {
    let mut ws = Wcs::connect(url);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut rtc = new_rtc(true, &sock);
    let (sdp, pending, _) = offer(&mut rtc, Direction::RecvOnly, true);
    let id = format!("{name}-sub-{i}");
    let play_sent = Instant::now();
    ws.send("playStream", json!({"mediaSessionId": id, "name": name, "published": false, "sdp": sdp}));
    let ans = ws.wait(|v| {
        (v["message"] == "setRemoteSDP" && v["data"][0] == id.as_str())
            || (v["message"] == "notifyStreamStatusEvent" && v["data"][0]["status"] == "FAILED")
    });
    let Some(sdp) = ans["data"][1].as_str() else {
        return Err(format!("subscriber {i} refused: {ans}"));
    };
    let answer = SdpAnswer::from_sdp_string(sdp).expect("answer");
    rtc.sdp_api().accept_answer(pending, answer).expect("accept");
    let (sub, stats) = new_sub_probing(rtc, sock, play_sent, probe);
    Ok((sub, stats, ws))
}

/// p50 and p99 of the join times of these subscribers, in ms (first RTP, first keyframe).
fn join_times(subs: &[Arc<SubStats>]) -> Value {
    let ms = |v: u64| v as f64 / 1000.0;
    let mut rtp: Vec<f64> =
        subs.iter().map(|s| s.first_rtp_us.load(Ordering::Relaxed)).filter(|v| *v > 0).map(ms).collect();
    let mut key: Vec<f64> =
        subs.iter().map(|s| s.first_key_us.load(Ordering::Relaxed)).filter(|v| *v > 0).map(ms).collect();
    json!({
        "join_rtp_ms_p50": percentile(&mut rtp, 0.5), "join_rtp_ms_p99": percentile(&mut rtp, 0.99),
        "join_key_ms_p50": percentile(&mut key, 0.5), "join_key_ms_p99": percentile(&mut key, 0.99),
    })
}

fn main() {
    let mut a = Args::parse();
    if !a.compare.is_empty() {
        compare::print(&a.compare);
        return;
    }
    if a.step == 0 {
        a.step = (a.subscribers / 5).max(1);
    }
    if a.twcc && a.count_mode == CountMode::Header {
        eprintln!(
            "sluice-bench: --twcc needs --count-mode str0m: header counting sends no transport-wide \
             feedback, and without it the server's estimate would starve"
        );
        std::process::exit(2);
    }
    SUB_TWCC.store(a.twcc, Ordering::Relaxed);
    if a.is_janus() && (a.snapshots > 0 || a.play.is_some()) {
        eprintln!("sluice-bench: --snapshots and --play are for sluice only");
        std::process::exit(2);
    }
    let mut server = start_server(&a);
    let stop = Arc::new(AtomicBool::new(false));
    if a.snapshots > 0 {
        run_snapshots(&a, &server);
        return;
    }
    // Publisher (unless the subscribers play a name of their own, e.g. a VOD file).
    let own_name = format!("bench-{}", std::process::id());
    let name = a.play.clone().unwrap_or_else(|| own_name.clone());
    let mut publisher = None;
    let mut rtp_publisher = None;
    if let Some(j) = &server.janus {
        let (v, au, a2, s) = (j.video, j.audio, a.clone(), stop.clone());
        rtp_publisher = Some(std::thread::spawn(move || rtp::run_rtp_publisher(v, au, a2, s)));
    } else if a.play.is_none() {
        publisher = Some(publish(&server, &a, &own_name, stop.clone()));
    }
    std::thread::sleep(Duration::from_millis(500));
    // The baseline: the server with its publisher, before any subscriber.
    let (cpu0, rss0) = proc_stat(server.pid);

    // Subscriber workers.
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..a.threads.max(1) {
        let (tx, rx) = mpsc::channel();
        let s = stop.clone();
        let (mode, pause) = (a.count_mode, Duration::from_secs_f64(a.recv_pause_ms.max(0.0) / 1000.0));
        workers.push(std::thread::spawn(move || match mode {
            CountMode::Header => header::run_worker(rx, s, pause),
            CountMode::Str0m => run_worker(rx, s),
        }));
        senders.push(tx);
    }
    println!(
        "subscribers: {} counting ({}), {} worker thread(s); transport-wide-cc offered: {}",
        a.count_mode.name(),
        match a.count_mode {
            CountMode::Header =>
                "epoll + recvmmsg, RTP counted from the clear-text header after the first keyframe; \
                                  STUN, DTLS and RTCP to str0m",
            CountMode::Str0m => "every datagram to str0m",
        },
        a.threads.max(1),
        if a.twcc {
            "yes (the server estimates bandwidth and paces; str0m sends the feedback)"
        } else {
            "no (the server runs no bandwidth estimation for these viewers)"
        }
    );
    let keeper = server.janus.is_some().then(|| janus::Keeper::start(stop.clone()));

    let mut subs: Vec<Arc<SubStats>> = Vec::new();
    let mut wcs: Vec<Wcs> = Vec::new();
    // Edge mode: a probe viewer on the origin, the reference of the edge-hop delay.
    let origin_probe = (!a.edges.is_empty()).then(|| {
        let (sub, stats, ws) = join_sluice(&server.ws, &name, usize::MAX, true).expect("origin probe");
        let _ = senders[0].send(sub);
        wcs.push(ws);
        stats
    });
    let mut edge_probes: Vec<Arc<SubStats>> = Vec::new();
    let mut steps = Vec::new();
    let start = Instant::now();
    println!(
        "{:>5} {:>5} {:>9} {:>8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7} {:>7} {:>5} {:>7} {:>7}",
        "step",
        "subs",
        "connected",
        "pkts/s",
        "loss%",
        "deliv%",
        "rtp p50",
        "rtp p99",
        "key p50",
        "key p99",
        "cpu%",
        "RSS MB",
        "us/pkt",
        "bench%",
        "b-us/pk",
        "all%",
        "drop-c",
        "drop-s"
    );
    let mut step_no = 0;
    let mut refused = false;
    let mut stopped_at_loss = false;
    while !refused && subs.len() < a.subscribers && start.elapsed().as_secs_f64() < a.duration {
        step_no += 1;
        let first_new = subs.len();
        let target = (subs.len() + a.step).min(a.subscribers);
        while subs.len() < target {
            let i = subs.len();
            let joined = match &keeper {
                None => {
                    let url = if a.edges.is_empty() { &server.ws } else { &a.edges[i % a.edges.len()] };
                    let probe = !a.edges.is_empty() && i < a.edges.len();
                    join_sluice(url, &name, i, probe).map(|(sub, stats, ws)| {
                        if probe {
                            edge_probes.push(stats.clone());
                        }
                        let _ = senders[i % senders.len()].send(sub);
                        wcs.push(ws);
                        stats
                    })
                }
                Some(k) => janus::join(&server.ws, a.janus_mountpoint, &a.janus_ice_ip).and_then(|j| {
                    let (sub, stats) = new_sub(j.rtc, j.socket, j.watch_sent);
                    let _ = senders[i % senders.len()].send(sub);
                    let mut ws = j.ws;
                    ws.started(&j.start_tx)?;
                    k.add(ws);
                    Ok(stats)
                }),
            };
            match joined {
                Ok(stats) => subs.push(stats),
                Err(e) => {
                    eprintln!("subscriber {i}: {e}");
                    refused = true;
                    break;
                }
            }
        }
        // Let joins settle, then measure a window.
        std::thread::sleep(Duration::from_millis(1500));
        // Answer the server's pings (sluice drops a client silent for 50 s), the publisher's too.
        let mut tend = |wcs: &mut Vec<Wcs>| {
            for ws in wcs.iter_mut().chain(publisher.as_mut().map(|(ws, _)| ws)) {
                ws.keepalive();
            }
        };
        tend(&mut wcs);
        let (c0, _) = proc_stat(server.pid);
        let e0: Vec<f64> = a.edge_pids.iter().map(|p| proc_stat(*p).0).collect();
        let (b0, (m0, i0)) = (proc_stat(std::process::id()).0, machine_busy());
        let d0 = udp_drops(&subs);
        let q0 = PUBLISHED.load(Ordering::Relaxed);
        let p0: u64 = subs.iter().map(|s| s.packets.load(Ordering::Relaxed)).sum();
        let l0: u64 = subs.iter().map(|s| s.lost.load(Ordering::Relaxed)).sum();
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < a.step_secs {
            let left = a.step_secs - t0.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_secs_f64(left.clamp(0.0, 10.0)));
            if t0.elapsed().as_secs_f64() < a.step_secs {
                tend(&mut wcs);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let (c1, rss) = proc_stat(server.pid);
        let edge_cpu: Vec<f64> =
            a.edge_pids.iter().zip(&e0).map(|(p, c0)| (proc_stat(*p).0 - c0) * 100.0 / secs).collect();
        let (b1, (m1, i1)) = (proc_stat(std::process::id()).0, machine_busy());
        let q1 = PUBLISHED.load(Ordering::Relaxed);
        let d1 = udp_drops(&subs);
        let (cdrop, sdrop) = (d1.0.saturating_sub(d0.0), d1.1.saturating_sub(d0.1));
        let p1: u64 = subs.iter().map(|s| s.packets.load(Ordering::Relaxed)).sum();
        let l1: u64 = subs.iter().map(|s| s.lost.load(Ordering::Relaxed)).sum();
        let connected = subs.iter().filter(|s| s.connected.load(Ordering::Relaxed)).count();
        let pkts = p1 - p0;
        let lost = l1.saturating_sub(l0);
        let loss = if pkts + lost > 0 { lost as f64 * 100.0 / (pkts + lost) as f64 } else { 0.0 };
        // Received over what the publisher sent times subscribers: this also counts frames a
        // server skips for a viewer (sluice renumbers what it sends: no sequence gap shows them).
        let expected = (q1 - q0) * subs.len() as u64;
        let delivered = if expected > 0 { pkts as f64 * 100.0 / expected as f64 } else { f64::NAN };
        let cpu = c1 - c0;
        let us_per_pkt = if pkts > 0 { cpu * 1e6 / pkts as f64 } else { f64::NAN };
        // The tool's own CPU (publisher, subscribers, main thread) per packet received.
        let bench_us_per_pkt = if pkts > 0 { (b1 - b0) * 1e6 / pkts as f64 } else { f64::NAN };
        let mut row = json!({
            "step": step_no, "subscribers": subs.len(), "connected": connected,
            "packets": pkts, "bytes": subs.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum::<u64>(),
            "packets_per_s": pkts as f64 / secs, "loss_pct": loss, "delivered_pct": delivered,
            "published_per_s": (q1 - q0) as f64 / secs,
            "kernel_drops_subscribers": cdrop, "kernel_drops_others": sdrop,
            "server_cpu_s": cpu, "server_cpu_pct": cpu * 100.0 / secs, "server_rss_mb": rss as f64 / 1048576.0,
            "rss_per_sub_kb": (rss.saturating_sub(rss0)) as f64 / 1024.0 / subs.len().max(1) as f64,
            "us_cpu_per_packet": us_per_pkt,
            "bench_cpu_pct": (b1 - b0) * 100.0 / secs, "bench_us_per_packet": bench_us_per_pkt, "machine_cpu_pct": (m1 - m0) * 100.0 / secs,
            "irq_cpu_pct": (i1 - i0) * 100.0 / secs,
            "other_cpu_pct": ((m1 - m0) - (i1 - i0) - (b1 - b0) - cpu).max(0.0) * 100.0 / secs,
        });
        if let (Value::Object(r), Value::Object(j)) = (&mut row, join_times(&subs[first_new..])) {
            r.extend(j);
        }
        if !a.edges.is_empty() {
            let per_edge: Vec<usize> = (0..a.edges.len())
                .map(|e| (0..subs.len()).filter(|i| i % a.edges.len() == e).count())
                .collect();
            row["edge_viewers"] = json!(per_edge);
            row["edge_cpu_pct"] = json!(edge_cpu);
        }
        println!(
            "{:>5} {:>5} {:>9} {:>8.0} {:>6.2} {:>6.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>8.1} {:>8.2} {:>7.0} {:>7.2} {:>5.0} {:>7} {:>7}",
            step_no,
            subs.len(),
            connected,
            pkts as f64 / secs,
            loss,
            delivered,
            row["join_rtp_ms_p50"].as_f64().unwrap_or(f64::NAN),
            row["join_rtp_ms_p99"].as_f64().unwrap_or(f64::NAN),
            row["join_key_ms_p50"].as_f64().unwrap_or(f64::NAN),
            row["join_key_ms_p99"].as_f64().unwrap_or(f64::NAN),
            cpu * 100.0 / secs,
            rss as f64 / 1048576.0,
            us_per_pkt,
            (b1 - b0) * 100.0 / secs,
            bench_us_per_pkt,
            (m1 - m0) * 100.0 / secs,
            cdrop,
            sdrop
        );
        if !a.edges.is_empty() {
            println!(
                "      nodes: origin {:.1}% CPU (its viewers: the edges' pulls and one probe); edges {}",
                cpu * 100.0 / secs,
                a.edges
                    .iter()
                    .enumerate()
                    .map(|(e, url)| format!(
                        "{url} {} viewers {:.1}% CPU",
                        row["edge_viewers"][e],
                        edge_cpu.get(e).copied().unwrap_or(f64::NAN)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some((n, Some(why))) = keeper.as_ref().map(|k| k.hangups()) {
            eprintln!("Janus hung up {n} subscriber(s), e.g.: {why}");
        }
        steps.push(row);
        if a.stop_loss > 0.0
            && (loss > a.stop_loss || 100.0 - delivered > a.stop_loss || connected < subs.len())
        {
            stopped_at_loss = true;
            break;
        }
    }
    let (cpu_end, rss_end) = proc_stat(server.pid);
    let kind = if server.janus.is_some() { "janus" } else { "sluice" };
    let hops: Vec<Value> = match &origin_probe {
        Some(o) => edge_probes
            .iter()
            .zip(&a.edges)
            .map(|(e, url)| {
                let (p50, p99, n) = match (&o.frames, &e.frames) {
                    (Some(of), Some(ef)) => edges::hop_delay(of, ef),
                    _ => (f64::NAN, f64::NAN, 0),
                };
                println!(
                    "edge hop {url}: delay over the origin p50 {p50:.1} ms, p99 {p99:.1} ms ({n} frames)"
                );
                json!({ "edge": url, "delay_ms_p50": p50, "delay_ms_p99": p99, "frames": n })
            })
            .collect(),
        None => Vec::new(),
    };
    let summary = json!({
        "args": {"subscribers": a.subscribers, "bitrate": a.bitrate, "fps": a.fps, "gop": a.gop, "step": a.step,
                 "step_secs": a.step_secs, "threads": a.threads, "stop_loss": a.stop_loss,
                 "count_mode": a.count_mode.name(), "twcc": a.twcc, "recv_pause_ms": a.recv_pause_ms},
        "server": {"kind": kind, "pid": server.pid, "rss_start_mb": rss0 as f64 / 1048576.0,
                   "rss_end_mb": rss_end as f64 / 1048576.0, "cpu_s_total": cpu_end - cpu0},
        "janus": server.janus.as_ref().map(|_| json!({
            "keyframe_buffer": a.janus_keyframe_buffer, "event_loops": a.janus_event_loops,
            "relay_threads": a.janus_relay_threads,
            "external": a.janus_ws.is_some(),
        })),
        "join_all": join_times(&subs),
        "stopped_at_loss": stopped_at_loss,
        "edge_hops": hops,
        "steps": steps,
    });
    println!(
        "server RSS {:.1} MB idle+publisher, {:.1} MB at the end: {:.1} KB per subscriber",
        rss0 as f64 / 1048576.0,
        rss_end as f64 / 1048576.0,
        rss_end.saturating_sub(rss0) as f64 / 1024.0 / subs.len().max(1) as f64
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap_or_default()).expect("write json");
    }
    // A run where subscribers did not all connect, or the last step received nothing, is a
    // failure of the server, not a figure: exit non-zero (CI runs a small smoke run). A ramp
    // stopped by --stop-loss ends on purpose, but its last step must still have had media.
    let last = steps.last().cloned().unwrap_or(Value::Null);
    let healthy = if stopped_at_loss {
        last["packets"].as_u64().unwrap_or(0) > 0
    } else {
        last["connected"].as_u64() == Some(subs.len() as u64)
            && last["packets"].as_u64().unwrap_or(0) > 0
            && subs.len() == a.subscribers
    };
    stop.store(true, Ordering::Relaxed);
    if let Some((_ws, t)) = publisher {
        let _ = t.join();
    }
    if let Some(t) = rtp_publisher {
        let _ = t.join();
    }
    if let Some(k) = keeper {
        k.join();
    }
    for w in workers {
        let _ = w.join();
    }
    if !healthy || refused {
        eprintln!("sluice-bench: subscribers did not all connect and receive media: {last}");
        if let Some(j) = server.janus.as_mut() {
            j.keep_dir = true;
        }
        drop(server); // stops the spawned server: exit() runs no destructors
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_offer_transport_wide_cc_only_with_twcc() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sdp = |twcc: bool, rtp_mode: bool| {
            SUB_TWCC.store(twcc, Ordering::Relaxed);
            let mut rtc = new_rtc(rtp_mode, &sock);
            offer(&mut rtc, Direction::RecvOnly, true).0
        };
        let without = sdp(false, true);
        assert!(!without.contains("transport-wide-cc"), "{without}");
        assert!(without.contains("urn:ietf:params:rtp-hdrext:sdes:mid"), "other extensions stay");
        assert!(sdp(true, true).contains("transport-wide-cc"));
        // The publisher keeps str0m's standard set.
        assert!(sdp(false, false).contains("transport-wide-cc"));
        SUB_TWCC.store(false, Ordering::Relaxed);
    }
}
