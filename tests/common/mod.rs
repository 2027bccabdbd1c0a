//! Shared harness for the integration tests: the real `sluice` binary on random ports, a
//! blocking WCS WebSocket client, and a real WebRTC peer (str0m, full ICE agent, not lite) that
//! publishes synthetic H.264/VP8 + Opus or plays and checks what it receives. Also every helper
//! more than one test file needs, written once: ffmpeg and ffprobe, temp folders and MP4 boxes,
//! the RTSP test camera, REST lookups of published streams, and /proc readers (CPU, memory).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const STEP: Duration = Duration::from_secs(10);

/// The server binary, started on random ports with media advertised on 127.0.0.1.
pub struct Server {
    child: Child,
    pub ws: u16,
    pub rest: u16,
    pub http: u16,
    pub media: u16,
    /// The RTMP ingest port (0 when started with `--no-rtmp`).
    pub rtmp: u16,
    /// The HLS port (0 when started with `--no-hls`).
    pub hls: u16,
    /// The TURN port, UDP and TCP (0 when started with `--no-turn`).
    pub turn: u16,
    /// wss signalling, https REST and https web ports (0 when started with `--no-tls`).
    pub wss: u16,
    pub rest_https: u16,
    pub https: u16,
    pub log: PathBuf,
    /// The server's `--media-dir` (VOD files go here; records under `records/`).
    pub media_dir: PathBuf,
}

/// The `key=port` of the server's ready line (its first stdout line), if present.
pub fn ready_port(line: &str, key: &str) -> Option<u16> {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).and_then(|v| v.parse().ok())
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("sluice-test-{}", new_id("s")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("server.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            // The default bind address (every interface), as users run it. The test clients are on
            // loopback, so loopback is the address to advertise, as --public-ip does for a user
            // whose browsers reach the server at some address.
            .args(["--public-ip", "127.0.0.1"])
            // Random ports and a data folder of its own: tests run in parallel.
            .args(["--ws-port", "0", "--rest-port", "0", "--http-port", "0", "--media-port", "0"])
            .args(["--wss-port", "0", "--https-port", "0", "--rest-https-port", "0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--turn-port", "0"]) // the TURN default 3478 would collide between tests
            // So would the RTMP default 1935, unless the test names a port itself.
            .args(if extra.contains(&"--rtmp-port") { &[][..] } else { &["--rtmp-port", "0"][..] })
            // And the HLS default 8082.
            .args(if extra.contains(&"--hls-port") || extra.contains(&"--no-hls") {
                &[][..]
            } else {
                &["--hls-port", "0"][..]
            })
            .arg("--media-dir")
            .arg(dir.join("media"))
            .arg("--static-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
            .args(extra)
            .env("RUST_LOG", "info,sluice_actors=debug,str0m=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start sluice");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("ready line");
        let port = |k: &str| -> u16 {
            ready_port(&line, k).unwrap_or_else(|| panic!("no {k} port in {line:?}; log {}", log.display()))
        };
        // Ports that are 0 when their listener is off (`--no-rtmp`, `--no-tls`).
        let optional_port = |k: &str| ready_port(&line, k).unwrap_or(0);
        let media_dir = dir.join("media");
        Server {
            ws: port("ws"),
            rest: port("rest"),
            http: port("http"),
            media: port("media"),
            rtmp: optional_port("rtmp"),
            hls: optional_port("hls"),
            turn: optional_port("turn"),
            wss: optional_port("wss"),
            rest_https: optional_port("rest_https"),
            https: optional_port("https"),
            child,
            log,
            media_dir,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws)
    }

    /// POST a JSON body (or GET with None) to the REST port; returns status and parsed body.
    pub fn rest(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{}", self.rest, path);
        let res = match body {
            Some(b) => ureq::post(&url).set("Content-Type", "application/json").send_string(b),
            None => ureq::get(&url).call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("REST {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The server's process id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of one sample of `/metrics` (`name` with its labels as printed, e.g.
    /// `sluice_actors{kind="viewer"}`); 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.rest);
        // A bound, so that a stalled server fails the test with this message instead of hanging it.
        let resp = ureq::get(&url).timeout(Duration::from_secs(30)).call();
        let text = resp.unwrap_or_else(|e| panic!("GET /metrics: {e}")).into_string().expect("metrics text");
        text.lines()
            .filter_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ({}) ---\n{}", self.log.display(), self.log_text());
        }
    }
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A name no other test of this run, nor of an earlier run, has used: process ids repeat between
/// test binaries on a fresh machine, and temporary folders named with them stay behind for their
/// logs, so the process's start time (milliseconds) is part of it.
pub fn new_id(prefix: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{}-{}", std::process::id(), ms % 1_000_000)
    });
    format!("{prefix}-{run}-{}", unique())
}

/// A blocking WCS WebSocket client. Answers the server's pings by itself.
pub struct Wcs {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    queue: VecDeque<Value>,
    pub closed: Option<Option<u16>>,
}

impl Wcs {
    /// Connect without the `connection` handshake.
    pub fn open(url: &str) -> Wcs {
        let (ws, _) = tungstenite::connect(url).expect("websocket connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
        }
        Wcs { ws, queue: VecDeque::new(), closed: None }
    }

    /// Connect and complete `connection` -> `getUserData`.
    pub fn connect(server: &Server) -> Wcs {
        let mut c = Wcs::open(&server.ws_url());
        c.send(
            "connection",
            json!({"appKey": "defaultApp", "mediaProviders": ["WebRTC"], "clientVersion": "2.0"}),
        );
        let ud = c.expect("getUserData", |_| true);
        assert_eq!(ud["status"], "ESTABLISHED", "{ud}");
        c
    }

    pub fn send(&mut self, message: &str, data: Value) {
        self.send_text(&json!({"message": message, "data": [data]}).to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("ws send");
    }

    pub fn send_message(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(m)
    }

    /// Read one frame if any arrives within 100 ms.
    fn read_one(&mut self) -> Option<Value> {
        if self.closed.is_some() {
            std::thread::sleep(Duration::from_millis(20));
            return None;
        }
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("server sent JSON");
                assert!(v["data"].is_array(), "server frame without data array: {t}");
                if v["message"] == "ping" {
                    self.send("pong", Value::Null);
                }
                Some(v)
            }
            Ok(Message::Close(f)) => {
                self.closed = Some(f.map(|f| u16::from(f.code)));
                None
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                None
            }
            Err(_) => {
                self.closed.get_or_insert(None);
                None
            }
        }
    }

    /// Wait for the first frame named `message` whose `data[0]` satisfies `pred`; frames that do
    /// not match stay queued for later waits.
    pub fn expect(&mut self, message: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_expect(message, STEP, pred).unwrap_or_else(|| {
            panic!("no {message} within {STEP:?}; queued: {:?}; closed: {:?}", self.queue, self.closed)
        })
    }

    pub fn try_expect(
        &mut self,
        message: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let hit = |v: &Value| v["message"] == message && pred(&v["data"][0]);
        if let Some(i) = self.queue.iter().position(hit) {
            return self.queue.remove(i).map(|v| v["data"][0].clone());
        }
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(v) = self.read_one() {
                if hit(&v) {
                    return Some(v["data"][0].clone());
                }
                self.queue.push_back(v);
            }
        }
        None
    }

    /// Answer the server's pings and drop whatever else has come, waiting at most a millisecond:
    /// keeps an idle session alive (many of them can be swept in turn).
    pub fn keep_alive(&mut self) {
        let timeout = |ws: &WebSocket<MaybeTlsStream<TcpStream>>, t: Duration| {
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                let _ = s.set_read_timeout(Some(t));
            }
        };
        timeout(&self.ws, Duration::from_millis(1));
        while self.read_one().is_some() {}
        timeout(&self.ws, Duration::from_millis(100));
    }

    /// A status event of one stream arriving within a second, if any.
    pub fn status_now(&mut self, media_session_id: &str) -> Option<Value> {
        self.try_expect("notifyStreamStatusEvent", Duration::from_secs(1), |d| {
            d["mediaSessionId"] == media_session_id
        })
    }

    /// The next status event of one stream.
    pub fn status(&mut self, media_session_id: &str) -> Value {
        self.expect("notifyStreamStatusEvent", |d| d["mediaSessionId"] == media_session_id)
    }

    /// Wait until the server closes the socket; returns the close code.
    pub fn wait_closed(&mut self, within: Duration) -> Option<Option<u16>> {
        let end = Instant::now() + within;
        while Instant::now() < end && self.closed.is_none() {
            self.read_one();
        }
        self.closed
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    H264,
    Vp8,
    None,
}

/// What a peer saw, updated live by its thread.
#[derive(Default, Debug)]
pub struct PeerStats {
    pub connected: AtomicBool,
    pub video_frames: AtomicU64,
    pub audio_frames: AtomicU64,
    pub keyframes: AtomicU64,
    /// Frames whose bytes were not exactly what the publisher wrote for that index.
    pub corrupt_frames: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Video frames this peer has written (publishers).
    pub video_sent: AtomicU64,
    pub video_codec: Mutex<Option<Codec>>,
    /// The newest video frame received, and when the first and last ones arrived.
    pub last_video: Mutex<Option<Arc<[u8]>>>,
    pub first_video_at: Mutex<Option<Instant>>,
    pub last_video_at: Mutex<Option<Instant>>,
    pub first_keyframe: Mutex<Option<Instant>>,
}

/// A real WebRTC peer: str0m as a full ICE agent on its own UDP socket, driven by a thread.
pub struct Peer {
    pub stats: Arc<PeerStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A peer whose offer is made, waiting for the server's answer.
pub struct Offering {
    rtc: Rtc,
    pending: SdpPendingOffer,
    socket: UdpSocket,
    publish: bool,
    video: Video,
    mids: Vec<(Mid, MediaKind)>,
    clip: Option<Clip>,
    /// Filler bytes added to each synthetic video frame (a heavy publisher).
    pad: usize,
    pub sdp: String,
}

/// Real H.264 access units (Annex-B) to publish instead of synthetic frames, and how many of
/// them to send before going quiet (the peer stays connected and keeps sending audio).
#[derive(Clone)]
pub struct Clip {
    pub frames: Arc<Vec<(Vec<u8>, bool)>>,
    pub limit: usize,
}

impl Clip {
    /// Split an Annex-B stream written with access unit delimiters (`-x264-params aud=1`).
    pub fn from_annexb(data: &[u8], limit: usize) -> Clip {
        let mut starts: Vec<usize> = Vec::new();
        let mut i = 0;
        while i + 4 < data.len() {
            if data[i..i + 4] == [0, 0, 0, 1] && data[i + 4] & 0x1f == 9 {
                starts.push(i);
            }
            i += 1;
        }
        starts.push(data.len());
        let frames: Vec<(Vec<u8>, bool)> = starts
            .windows(2)
            .map(|w| {
                let au = data[w[0]..w[1]].to_vec();
                let key = au.windows(4).any(|x| x[..3] == [0, 0, 1] && x[3] & 0x1f == 5);
                (au, key)
            })
            .collect();
        Clip { frames: Arc::new(frames), limit }
    }
}

impl Offering {
    /// Offer to publish `video` + Opus (sendonly), or to play (recvonly) when `publish` is false.
    pub fn new(publish: bool, video: Video) -> Offering {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind peer socket");
        let local = socket.local_addr().expect("local addr");
        let mut cfg = RtcConfig::new().clear_codecs().enable_opus(true, false);
        cfg = match video {
            Video::H264 => cfg.enable_h264(true),
            Video::Vp8 => cfg.enable_vp8(true),
            Video::None => cfg,
        };
        if !publish {
            cfg = cfg.enable_h264(video != Video::Vp8).enable_vp8(true);
        }
        let mut rtc = cfg.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let dir = if publish { Direction::SendOnly } else { Direction::RecvOnly };
        let mut api = rtc.sdp_api();
        let mut mids = vec![(api.add_media(MediaKind::Audio, dir, None, None, None), MediaKind::Audio)];
        if video != Video::None || !publish {
            mids.push((api.add_media(MediaKind::Video, dir, None, None, None), MediaKind::Video));
        }
        let (offer, pending) = api.apply().expect("offer");
        Offering {
            sdp: offer.to_sdp_string(),
            rtc,
            pending,
            socket,
            publish,
            video,
            mids,
            clip: None,
            pad: 0,
        }
    }

    /// Publish this clip's frames (H.264) instead of synthetic ones.
    pub fn with_clip(mut self, clip: Clip) -> Offering {
        self.clip = Some(clip);
        self
    }

    /// Make each synthetic H.264 frame `bytes` larger (a filler NAL unit): a publisher far above
    /// any browser's bitrate. Its viewers see the frames as corrupt (they are not the pattern).
    pub fn with_padding(mut self, bytes: usize) -> Offering {
        self.pad = bytes;
        self
    }

    /// Apply the server's answer and start the peer's thread.
    pub fn start(mut self, answer_sdp: &str) -> Peer {
        let answer = SdpAnswer::from_sdp_string(answer_sdp).expect("answer parses");
        self.rtc.sdp_api().accept_answer(self.pending, answer).expect("answer accepted");
        let stats = Arc::new(PeerStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (stats.clone(), stop.clone());
        let (rtc, socket, publish, video, mids, clip, pad) =
            (self.rtc, self.socket, self.publish, self.video, self.mids, self.clip, self.pad);
        let thread =
            std::thread::spawn(move || run_peer(rtc, socket, publish, video, mids, clip, pad, s2, stop2));
        Peer { stats, stop, thread: Some(thread) }
    }
}

impl Peer {
    pub fn wait_until(&self, within: Duration, what: &str, cond: impl Fn(&PeerStats) -> bool) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if cond(&self.stats) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("peer: {what} not reached within {within:?}: {:?}", self.stats);
    }

    pub fn video(&self) -> u64 {
        self.stats.video_frames.load(Ordering::Relaxed)
    }

    pub fn audio(&self) -> u64 {
        self.stats.audio_frames.load(Ordering::Relaxed)
    }

    pub fn corrupt(&self) -> u64 {
        self.stats.corrupt_frames.load(Ordering::Relaxed)
    }

    /// Stop abruptly, as a vanished client: no more packets, nothing said.
    pub fn kill(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const VIDEO_INTERVAL: Duration = Duration::from_millis(33);
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// Synthetic H.264 access unit number `n`: SPS + PPS + IDR for a keyframe, else one non-IDR
/// slice. After each NAL header, 4 bytes carry `n`, then a pattern derived from `n`; a receiver
/// can check every byte. Keyframes are large enough to need FU-A fragmentation.
pub fn h264_frame(n: u32, key: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut nal = |header: u8, len: usize| {
        out.extend_from_slice(&[0, 0, 0, 1, header]);
        out.extend_from_slice(&index_bytes(n));
        out.extend((0..len).map(|i| pattern(n, i)));
    };
    if key {
        nal(0x67, 8);
        nal(0x68, 4);
        nal(0x65, 4000);
    } else {
        nal(0x41, 700);
    }
    out
}

/// Synthetic VP8 frame `n`: the key-frame bit and start code, then `n` and the pattern.
pub fn vp8_frame(n: u32, key: bool) -> Vec<u8> {
    let mut out = if key {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    out.extend_from_slice(&index_bytes(n));
    out.extend((0..if key { 3000 } else { 600 }).map(|i| pattern(n, i)));
    out
}

/// A frame index in 4 bytes with the high bit set, so it never forms a start code.
fn index_bytes(n: u32) -> [u8; 4] {
    [0, 1, 2, 3].map(|i| ((n >> (7 * i)) & 0x7f) as u8 | 0x80)
}

fn index_of(b: &[u8]) -> u32 {
    b.iter().enumerate().map(|(i, x)| ((x & 0x7f) as u32) << (7 * i)).sum()
}

fn pattern(n: u32, i: usize) -> u8 {
    // Never 0: a run of zeros could form an Annex-B start code inside the payload.
    ((n as usize).wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) % 251 + 1) as u8
}

/// Check a received frame against what the publisher wrote for its index.
fn frame_is_intact(data: &[u8], codec: Codec) -> bool {
    match codec {
        Codec::H264 => {
            // The depacketizer gives Annex-B with 4-byte start codes; NAL header at 4, n after it.
            let Some(n_bytes) = data.get(5..9) else {
                return false;
            };
            let n = index_of(n_bytes);
            let key = data[4] & 0x1f == 7;
            h264_frame(n, key) == data
        }
        Codec::Vp8 => {
            let key = data.first().is_some_and(|b| b & 1 == 0);
            let off = if key { 10 } else { 3 };
            let Some(n_bytes) = data.get(off..off + 4) else {
                return false;
            };
            vp8_frame(index_of(n_bytes), key) == data
        }
        _ => false,
    }
}

fn run_peer(
    mut rtc: Rtc,
    socket: UdpSocket,
    publish: bool,
    video: Video,
    mids: Vec<(Mid, MediaKind)>,
    clip: Option<Clip>,
    pad: usize,
    stats: Arc<PeerStats>,
    stop: Arc<AtomicBool>,
) {
    let local = socket.local_addr().expect("local addr");
    let mut buf = vec![0u8; 2000];
    let start = Instant::now();
    let (mut next_video, mut next_audio) = (start, start);
    let (mut video_n, mut audio_n) = (0u32, 0u32);
    let mut want_key = true;
    while !stop.load(Ordering::Relaxed) {
        // Drain the engine.
        let deadline = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => stats.connected.store(true, Ordering::Relaxed),
                    Event::KeyframeRequest(_) => {
                        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        want_key = true;
                    }
                    Event::MediaData(d) => {
                        let kind = mids.iter().find(|(m, _)| *m == d.mid).map(|(_, k)| *k);
                        if kind == Some(MediaKind::Video) {
                            let codec = d.params.spec().codec;
                            *stats.video_codec.lock().expect("lock") = Some(codec);
                            stats.video_frames.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            stats.first_video_at.lock().expect("lock").get_or_insert(now);
                            *stats.last_video_at.lock().expect("lock") = Some(now);
                            *stats.last_video.lock().expect("lock") = Some(d.data.clone());
                            let key = match &d.codec_extra {
                                str0m::format::CodecExtra::H264(x) => x.is_keyframe,
                                str0m::format::CodecExtra::Vp8(x) => x.is_keyframe,
                                _ => false,
                            };
                            if key {
                                stats.keyframes.fetch_add(1, Ordering::Relaxed);
                                stats.first_keyframe.lock().expect("lock").get_or_insert_with(Instant::now);
                            }
                            if !frame_is_intact(&d.data, codec) {
                                stats.corrupt_frames.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            stats.audio_frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                },
                Err(e) => {
                    eprintln!("peer poll error: {e}");
                    return;
                }
            }
        };
        let now = Instant::now();
        let mut wake = deadline;
        if publish {
            wake = wake.min(next_audio);
            if video != Video::None {
                wake = wake.min(next_video);
            }
        }
        let wait =
            wake.saturating_duration_since(now).max(Duration::from_millis(1)).min(Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).expect("read timeout");
        let input_ok = match socket.recv_from(&mut buf) {
            Ok((n, source)) => match Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                Ok(r) => rtc.handle_input(Input::Receive(Instant::now(), r)).is_ok(),
                Err(_) => true,
            },
            Err(_) => rtc.handle_input(Input::Timeout(Instant::now())).is_ok(),
        };
        if !input_ok {
            return;
        }
        if !publish || !stats.connected.load(Ordering::Relaxed) {
            continue;
        }
        let now = Instant::now();
        let mid_of = |k: MediaKind| mids.iter().find(|(_, kk)| *kk == k).map(|(m, _)| *m);
        if video != Video::None && now >= next_video {
            next_video += VIDEO_INTERVAL;
            if let Some(mid) = mid_of(MediaKind::Video) {
                let key = std::mem::take(&mut want_key);
                let data = match (&clip, video) {
                    (Some(c), _) => c
                        .frames
                        .get(video_n as usize)
                        .filter(|_| (video_n as usize) < c.limit)
                        .map(|f| f.0.clone()),
                    (None, Video::Vp8) => Some(vp8_frame(video_n, key)),
                    (None, _) => {
                        let mut f = h264_frame(video_n, key);
                        if pad > 0 {
                            // A filler data NAL unit (type 12): 0xff never forms a start code.
                            f.extend_from_slice(&[0, 0, 0, 1, 12]);
                            f.resize(f.len() + pad, 0xff);
                        }
                        Some(f)
                    }
                };
                if let (Some(data), Some(w)) = (data, rtc.writer(mid)) {
                    stats.video_sent.fetch_add(1, Ordering::Relaxed);
                    let pt = w.payload_params().next().map(|p| p.pt());
                    if let Some(pt) = pt {
                        let t = MediaTime::from_90khz(video_n as u64 * 3000);
                        let _ = w.write(pt, now, t, data);
                    }
                }
                video_n += 1;
            }
        }
        if now >= next_audio {
            next_audio += AUDIO_INTERVAL;
            if let Some(mid) = mid_of(MediaKind::Audio) {
                if let Some(w) = rtc.writer(mid) {
                    let pt = w.payload_params().next().map(|p| p.pt());
                    if let Some(pt) = pt {
                        let t =
                            MediaTime::new(audio_n as u64 * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                        let _ = w.write(pt, now, t, vec![0xfc; 80]);
                    }
                }
                audio_n += 1;
            }
        }
    }
}

/// Send a publish request; returns the id, the offering peer and the answer SDP (or the
/// FAILED status object).
pub fn request_publish(ws: &mut Wcs, name: &str, video: Video) -> (String, Offering, Result<String, Value>) {
    request_publish_full(ws, name, video, false, Value::Null)
}

/// `publishStream` with a `custom` object (e.g. `{"token": ...}`), H.264.
pub fn request_publish_with(
    ws: &mut Wcs,
    name: &str,
    custom: Value,
) -> (String, Offering, Result<String, Value>) {
    request_publish_full(ws, name, Video::H264, false, custom)
}

/// `publishStream` with every option the tests vary.
pub fn request_publish_full(
    ws: &mut Wcs,
    name: &str,
    video: Video,
    record: bool,
    custom: Value,
) -> (String, Offering, Result<String, Value>) {
    let id = new_id("pub");
    let offer = Offering::new(true, video);
    ws.send(
        "publishStream",
        json!({"mediaSessionId": id, "name": name, "published": true, "hasVideo": video != Video::None,
               "hasAudio": true, "status": "PENDING", "record": record, "mediaProvider": "WebRTC", "sdp": offer.sdp,
               "custom": custom}),
    );
    let r = remote_sdp_or_status(ws, &id);
    (id, offer, r)
}

/// Publish a clip of real H.264 frames; waits for PUBLISHING.
pub fn publish_clip(ws: &mut Wcs, name: &str, clip: Clip) -> (String, Peer) {
    publish_offering(ws, name, Offering::new(true, Video::H264).with_clip(clip))
}

/// Publish with a peer prepared by the caller (a clip, padding); waits for PUBLISHING.
pub fn publish_offering(ws: &mut Wcs, name: &str, offer: Offering) -> (String, Peer) {
    let id = new_id("pub");
    ws.send(
        "publishStream",
        json!({"mediaSessionId": id, "name": name, "published": true, "sdp": offer.sdp}),
    );
    let answer = remote_sdp_or_status(ws, &id).unwrap_or_else(|st| panic!("publish {name} refused: {st}"));
    let peer = offer.start(&answer);
    let st = ws.status(&id);
    assert_eq!(st["status"], "PUBLISHING", "{st}");
    (id, peer)
}

/// ffmpeg output options for H.264 as browsers decode it in WebRTC: Constrained Baseline,
/// 4:2:0, a keyframe every 30 frames, no B-frames.
pub const X264_BASELINE: &[&str] =
    &["-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0"];

/// Make a test clip with ffmpeg in a temp folder; returns the file path.
pub fn ffmpeg(args: &[&str], out_name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("media dir");
    let out = dir.join(out_name);
    let st = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error"])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg runs (apt package ffmpeg)");
    assert!(st.success(), "ffmpeg {args:?} failed");
    out
}

/// Publish `name` from `ws` with a real peer; waits for PUBLISHING.
pub fn publish(ws: &mut Wcs, name: &str, video: Video) -> (String, Peer) {
    let (id, offer, answer) = request_publish(ws, name, video);
    let answer = answer.unwrap_or_else(|st| panic!("publish {name} refused: {st}"));
    let peer = offer.start(&answer);
    let st = ws.status(&id);
    assert_eq!(st["status"], "PUBLISHING", "{st}");
    (id, peer)
}

/// Send a play request; returns the id and the answer SDP (or the FAILED status object).
pub fn request_play(ws: &mut Wcs, name: &str, offer_sdp: &str) -> (String, Result<String, Value>) {
    let id = new_id("play");
    ws.send(
        "playStream",
        json!({"mediaSessionId": id, "name": name, "published": false, "hasVideo": true, "hasAudio": true,
               "status": "PENDING", "record": false, "mediaProvider": "WebRTC", "sdp": offer_sdp}),
    );
    let r = remote_sdp_or_status(ws, &id);
    (id, r)
}

/// Wait for either `setRemoteSDP` for `id` (Ok(sdp)) or a status event for it (Err(status)).
pub fn remote_sdp_or_status(ws: &mut Wcs, id: &str) -> Result<String, Value> {
    let end = Instant::now() + STEP;
    while Instant::now() < end {
        if let Some(i) = ws.queue.iter().position(|v| is_answer_for(v, id) || is_status_for(v, id)) {
            let v = ws.queue.remove(i).expect("queued");
            return classify(v);
        }
        if let Some(v) = ws.read_one() {
            if is_answer_for(&v, id) || is_status_for(&v, id) {
                return classify(v);
            }
            ws.queue.push_back(v);
        }
    }
    panic!("no answer or status for {id}: {:?}", ws.queue);
}

fn is_answer_for(v: &Value, id: &str) -> bool {
    v["message"] == "setRemoteSDP" && v["data"][0] == id
}

fn is_status_for(v: &Value, id: &str) -> bool {
    v["message"] == "notifyStreamStatusEvent" && v["data"][0]["mediaSessionId"] == id
}

fn classify(v: Value) -> Result<String, Value> {
    if v["message"] == "setRemoteSDP" {
        Ok(v["data"][1].as_str().expect("sdp string").to_string())
    } else {
        Err(v["data"][0].clone())
    }
}

/// Play `name` with a real peer; waits for PLAYING.
pub fn play(ws: &mut Wcs, name: &str) -> (String, Peer) {
    let offer = Offering::new(false, Video::H264);
    let (id, answer) = request_play(ws, name, &offer.sdp);
    let answer = answer.unwrap_or_else(|st| panic!("play {name} refused: {st}"));
    let peer = offer.start(&answer);
    let st = ws.status(&id);
    assert_eq!(st["status"], "PLAYING", "{st}");
    (id, peer)
}

/// Local UDP address helper for tests that send raw datagrams.
pub fn media_addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.media))
}

// ---------------------------------------------------------------------------------------------
// Recording (tests/recording.rs)

impl Server {
    /// Kill the server with SIGKILL, as a crash: nothing is flushed or finished.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// GET a path on the web port with optional headers; returns status, headers and body.
    pub fn web_get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut req = ureq::get(&format!("http://127.0.0.1:{}{}", self.http, path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let status = resp.status();
        let hs = resp
            .headers_names()
            .into_iter()
            .map(|h| (h.clone(), resp.header(&h).unwrap_or("").to_string()))
            .collect();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("body");
        (status, hs, body)
    }
}

/// Publish `name` with `record: true` and a real peer; waits for PUBLISHING and returns the id,
/// the peer and the PUBLISHING status object (which carries `recordName`).
pub fn publish_recorded(ws: &mut Wcs, name: &str, video: Video) -> (String, Peer, Value) {
    let id = new_id("rec");
    let offer = Offering::new(true, video);
    ws.send(
        "publishStream",
        json!({"mediaSessionId": id, "name": name, "published": true, "hasVideo": video != Video::None,
               "hasAudio": true, "status": "PENDING", "record": true, "mediaProvider": "WebRTC", "sdp": offer.sdp}),
    );
    let answer = remote_sdp_or_status(ws, &id).unwrap_or_else(|st| panic!("publish {name} refused: {st}"));
    let peer = offer.start(&answer);
    let st = ws.status(&id);
    assert_eq!(st["status"], "PUBLISHING", "{st}");
    (id, peer, st)
}

// ---------------------------------------------------------------------------------------------
// Shutdown (tests/shutdown.rs)

impl Server {
    /// Send a signal by name (`TERM`: what `docker stop` sends; `INT`: Ctrl-C).
    pub fn signal(&self, name: &str) {
        let st = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -{name} failed");
    }

    /// Wait for the process to exit; its exit status, or None if it still runs after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Published streams over REST (tests/rtmp.rs, tests/rtsp.rs, tests/ingest_cpu.rs)

/// REST `/stream/find` of the published stream `name`: the status code and the body (an array
/// of stream objects on 200).
pub fn find_published(server: &Server, name: &str) -> (u16, Value) {
    server.rest("/rest-api/stream/find", Some(&json!({"name": name, "published": true}).to_string()))
}

/// Wait until REST lists `name` as published (an RTMP encoder or a pull came up); returns its
/// stream object.
pub fn wait_published(server: &Server, name: &str) -> Value {
    let end = Instant::now() + STEP;
    while Instant::now() < end {
        let (code, body) = find_published(server, name);
        if code == 200 {
            return body[0].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} not published within {STEP:?}");
}

// ---------------------------------------------------------------------------------------------
// The RTSP test camera (tests/rtsp.rs, tests/ingest_cpu.rs)

/// The GStreamer RTSP server of tests/support/rtsp_camera.py (H.264 test pattern + AAC tone) on
/// a free loopback port; counts the RTSP clients that connected; killed when dropped. Needs
/// Debian's python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}
/// and gstreamer1.0-libav (tests/run-all.sh installs them).
pub struct Camera {
    child: Child,
    pub port: u16,
    clients: Arc<AtomicU64>,
}

impl Camera {
    pub fn start() -> Camera {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/rtsp_camera.py");
        let mut child = Command::new("/usr/bin/python3")
            .args([script, "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the RTSP camera (python3-gi, gir1.2-gst-rtsp-server-1.0)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let port = first
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("RTSP camera did not start: {first:?}"));
        let clients = Arc::new(AtomicU64::new(0));
        let c = clients.clone();
        // Keeps reading the camera's lines, so it never writes to a closed pipe.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l.starts_with("client ") {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Camera { child, port, clients }
    }

    /// `rtsp://127.0.0.1:<port><path>`; the camera serves any path but ignores the query.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{path}", self.port)
    }

    /// How many RTSP clients have connected so far.
    pub fn clients(&self) -> u64 {
        self.clients.load(Ordering::Relaxed)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Files: temp folders, ffprobe, MP4 boxes (tests/recording.rs, tests/shutdown.rs, tests/rtmp.rs)

/// A fresh folder `sluice-<tag>-…` in the temp dir, removed with its contents when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("sluice-{tag}-{}", new_id("d")));
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }

    /// The names of the files in the folder, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What ffprobe reads in a media file, per stream in file order and for the container.
#[derive(Debug)]
pub struct Probe {
    /// Codec names ("" where ffprobe names none).
    pub codecs: Vec<String>,
    /// The container's duration in seconds (0 when ffprobe gives none).
    pub duration: f64,
    /// Each stream's duration in seconds (0 when ffprobe gives none).
    pub stream_durations: Vec<f64>,
    /// Packets read in each stream.
    pub packets: Vec<u64>,
    /// Each stream's width and height ((0, 0) for audio).
    pub sizes: Vec<(u64, u64)>,
}

/// ffprobe `path`, reading every packet (`-count_packets`: a file cut mid-fragment fails or
/// comes up short); panics if ffprobe fails. Needs ffprobe (Debian package ffmpeg).
pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries"])
        .arg("stream=codec_name,width,height,duration,nb_read_packets:format=duration")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    // ffprobe's JSON writes durations and packet counts as strings, sizes as numbers.
    let num = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    Probe {
        codecs: streams.iter().map(|s| s["codec_name"].as_str().unwrap_or("").to_string()).collect(),
        duration: num(&v["format"]["duration"]),
        stream_durations: streams.iter().map(|s| num(&s["duration"])).collect(),
        packets: streams.iter().map(|s| num(&s["nb_read_packets"]) as u64).collect(),
        sizes: streams
            .iter()
            .map(|s| (s["width"].as_u64().unwrap_or(0), s["height"].as_u64().unwrap_or(0)))
            .collect(),
    }
}

/// The type of the last top-level box of an MP4 file (`free` means the last fragment was cut,
/// not finished).
pub fn last_mp4_box(file: &[u8]) -> Option<[u8; 4]> {
    let (mut i, mut last) = (0usize, None);
    while i + 8 <= file.len() {
        let size = u32::from_be_bytes(file[i..i + 4].try_into().ok()?) as usize;
        last = Some(file[i + 4..i + 8].try_into().ok()?);
        if size < 8 {
            break;
        }
        i += size;
    }
    last
}

// ---------------------------------------------------------------------------------------------
// /proc readers: CPU and memory of a process (the server's: `Server::pid`)

/// CPU time a process has used (user + system), in seconds: utime and stime of
/// /proc/<pid>/stat, in clock ticks of `getconf CLK_TCK` (100 on Linux).
pub fn cpu_secs(pid: u32) -> f64 {
    static TICKS_PER_SEC: OnceLock<f64> = OnceLock::new();
    let per_sec = *TICKS_PER_SEC.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The fields after the command name (which may hold spaces and parentheses) start after the
    // last ')': state is field 0 there, utime 11 and stime 12 (fields 14 and 15 of the line).
    let f: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 1..].split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).expect("utime and stime in stat");
    (ticks(11) + ticks(12)) as f64 / per_sec
}

/// A process's CPU share (1.0 = one core) while `during` runs: its CPU time over the wall time.
pub fn cpu_share_during(pid: u32, during: impl FnOnce()) -> f64 {
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    during();
    (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// The value of one field of /proc/<pid>/status (`VmRSS`, `Uid`, …), trimmed.
pub fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// A process's resident memory in KiB (VmRSS of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let rss = proc_status(pid, "VmRSS");
    rss.trim_end_matches("kB").trim().parse().unwrap_or_else(|_| panic!("VmRSS {rss:?}"))
}
