//! Janus mode: the same subscribers against the streaming plugin of Janus (1.1).
//!
//! The tool writes a loopback-only configuration in a temporary folder (WebSocket transport on
//! 127.0.0.1, streaming plugin only, one RTP mountpoint: H.264 pt 96 + Opus pt 111 on random
//! 127.0.0.1 ports), starts `janus` on it and kills it at the end. The publisher sends plain RTP
//! to the mountpoint ([`crate::rtp`]). A subscriber is one WebSocket (subprotocol
//! `janus-protocol`) with its own Janus session, as a browser would have: `create`, `attach`
//! `janus.plugin.streaming`, `watch` (Janus offers, with its ICE candidates in the SDP), str0m
//! answers, `start`. Keepalives go every 25 s from a thread of their own.
//!
//! Janus's ICE (libnice) ignores loopback interfaces: run inside a network namespace where a
//! veth carries 127.0.0.2 (bench/side-by-side.sh makes one). Janus gathers on that address only
//! (`ice_enforce_list`), the subscribers' sockets are bound to it too (Janus sends no check to a
//! 127.0.0.1 candidate), and candidates outside 127.0.0.0/8 are dropped from its offers, so no
//! traffic leaves the loopback range.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::Args;

/// Janus's default session timeout is 60 s.
const KEEPALIVE: Duration = Duration::from_secs(25);
/// Longest wait for an answer to one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A Janus started by the tool, with the mountpoint it serves.
pub struct Spawned {
    pub child: Child,
    pub ws: String,
    pub video: SocketAddr,
    pub audio: SocketAddr,
    pub dir: PathBuf,
}

/// The last lines of Janus's log, for error messages.
pub fn log_tail(dir: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(dir.join("janus.log")).unwrap_or_default();
    let v: Vec<&str> = log.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("udp port").port()
    } else {
        TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("tcp port").port()
    }
}

/// Janus's library folder: the one holding plugins/libjanus_streaming.so.
fn lib_dir(a: &Args) -> PathBuf {
    if let Some(l) = &a.janus_lib {
        return PathBuf::from(l);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|rd| rd.flatten().map(|e| e.path().join("janus")).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus"].map(PathBuf::from));
    dirs.into_iter()
        .find(|d| d.join("plugins/libjanus_streaming.so").exists())
        .unwrap_or_else(|| panic!("no Janus plugins folder found (apt-get install janus, or --janus-lib)"))
}

/// Every module in `dir` but `keep`, comma-separated (Janus loads all it finds unless disabled).
fn disable_all_but(dir: &Path, keep: &str) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.retain(|n| n.starts_with("libjanus_") && n.ends_with(".so") && n != keep);
    v.sort();
    v.join(",")
}

/// Write the configuration folder: janus.jcfg, the WebSocket transport, the streaming plugin.
fn write_config(a: &Args, dir: &Path, lib: &Path, ws_port: u16, video: u16, audio: u16) {
    let loops = if a.janus_event_loops > 0 {
        format!("\tevent_loops = {}\n", a.janus_event_loops)
    } else {
        String::new()
    };
    let main = format!(
        "general: {{\n\tconfigs_folder = \"{d}\"\n\tplugins_folder = \"{l}/plugins\"\n\
         \ttransports_folder = \"{l}/transports\"\n\tevents_folder = \"{l}/events\"\n\
         \tloggers_folder = \"{l}/loggers\"\n\tdebug_level = 4\n\tsession_timeout = 60\n{loops}}}\n\
         certificates: {{\n}}\n\
         media: {{\n\trtp_port_range = \"{range}\"\n}}\n\
         nat: {{\n\tnice_debug = false\n\tice_enforce_list = \"{ice}\"\n\tignore_mdns = true\n}}\n\
         plugins: {{\n\tdisable = \"{p}\"\n}}\n\
         transports: {{\n\tdisable = \"{t}\"\n}}\n\
         loggers: {{\n\tdisable = \"{lg}\"\n}}\n\
         events: {{\n\tbroadcast = false\n\tdisable = \"{e}\"\n}}\n",
        d = dir.display(),
        l = lib.display(),
        range = a.janus_rtp_port_range,
        ice = a.janus_ice_ip,
        p = disable_all_but(&lib.join("plugins"), "libjanus_streaming.so"),
        t = disable_all_but(&lib.join("transports"), "libjanus_websockets.so"),
        lg = disable_all_but(&lib.join("loggers"), ""),
        e = disable_all_but(&lib.join("events"), ""),
    );
    let ws = format!(
        "general: {{\n\tjson = \"compact\"\n\tws = true\n\tws_port = {ws_port}\n\tws_ip = \"127.0.0.1\"\n\
         \twss = false\n}}\nadmin: {{\n\tadmin_ws = false\n\tadmin_wss = false\n}}\n"
    );
    let streaming = format!(
        "general: {{\n}}\nbench: {{\n\ttype = \"rtp\"\n\tid = {id}\n\
         \tdescription = \"sluice-bench: synthetic H.264 + Opus, plain RTP from 127.0.0.1\"\n\
         \taudio = true\n\tvideo = true\n\
         \taudioport = {audio}\n\taudioiface = \"127.0.0.1\"\n\taudiopt = 111\n\taudiocodec = \"opus\"\n\
         \tvideoport = {video}\n\tvideoiface = \"127.0.0.1\"\n\tvideopt = 96\n\tvideocodec = \"h264\"\n\
         \tvideofmtp = \"profile-level-id=42e01f;packetization-mode=1\"\n\tvideobufferkf = {kf}\n\
         \tthreads = {threads}\n}}\n",
        id = a.janus_mountpoint,
        kf = a.janus_keyframe_buffer,
        threads = a.janus_relay_threads,
    );
    for (name, text) in [
        ("janus.jcfg", main),
        ("janus.transport.websockets.jcfg", ws),
        ("janus.plugin.streaming.jcfg", streaming),
    ] {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
}

/// Start Janus on a generated loopback configuration; returns once its WebSocket accepts.
pub fn spawn(a: &Args) -> Spawned {
    let lib = lib_dir(a);
    let dir = std::env::temp_dir().join(format!("sluice-bench-janus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ws_port, video, audio) = (free_port(false), free_port(true), free_port(true));
    write_config(a, &dir, &lib, ws_port, video, audio);
    let mut child = Command::new(&a.janus_bin)
        .arg("-C")
        .arg(dir.join("janus.jcfg"))
        .arg("-F")
        .arg(&dir)
        .args(["-o", "-N", "-L"])
        .arg(dir.join("janus.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (apt-get install janus)", a.janus_bin));
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("janus exited ({st}) before serving; its log:\n{}", log_tail(&dir, 30));
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("janus does not serve ws://127.0.0.1:{ws_port} after 15 s:\n{}", log_tail(&dir, 30));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Spawned {
        child,
        ws: format!("ws://127.0.0.1:{ws_port}/"),
        video: SocketAddr::from((Ipv4Addr::LOCALHOST, video)),
        audio: SocketAddr::from((Ipv4Addr::LOCALHOST, audio)),
        dir,
    }
}

/// Keep a candidate line only when its address is in 127.0.0.0/8.
fn loopback_candidate(line: &str) -> bool {
    let c = line.trim_start_matches("a=");
    c.split_whitespace().nth(4).and_then(|ip| ip.parse::<Ipv4Addr>().ok()).is_some_and(|ip| ip.is_loopback())
}

/// The offer without candidates outside 127.0.0.0/8, and how many candidates remain.
pub fn loopback_only(sdp: &str) -> (String, usize) {
    let mut kept = 0;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("a=candidate:") {
            if !loopback_candidate(line) {
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    (out, kept)
}

/// One Janus API session on its own WebSocket, with a streaming-plugin handle.
pub struct JanusWs {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: u64,
    handle: u64,
    tx: u64,
    last_keepalive: Instant,
    /// Candidates Janus trickled (none when it gathers before offering, as it does by default).
    trickled: Vec<String>,
    /// Why Janus hung the handle up, if it did.
    pub hangup: Option<String>,
}

impl JanusWs {
    /// Connect, `create` a session, `attach` the streaming plugin.
    pub fn connect(url: &str) -> Result<JanusWs, String> {
        let mut req = url.into_client_request().map_err(|e| format!("{url}: {e}"))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("janus-protocol"));
        let (ws, _) = tungstenite::connect(req).map_err(|e| format!("websocket {url}: {e}"))?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            let _ = s.set_read_timeout(Some(REQUEST_TIMEOUT));
            let _ = s.set_nodelay(true);
        }
        let mut c = JanusWs {
            ws,
            session: 0,
            handle: 0,
            tx: 0,
            last_keepalive: Instant::now(),
            trickled: Vec::new(),
            hangup: None,
        };
        let r = c.call(json!({"janus": "create"}))?;
        c.session = r["data"]["id"].as_u64().ok_or(format!("create: {r}"))?;
        let r = c.call(json!({"janus": "attach", "plugin": "janus.plugin.streaming"}))?;
        c.handle = r["data"]["id"].as_u64().ok_or(format!("attach: {r}"))?;
        Ok(c)
    }

    fn send(&mut self, mut v: Value) -> String {
        self.tx += 1;
        let tx = format!("t{}", self.tx);
        v["transaction"] = json!(tx);
        if self.session != 0 {
            v["session_id"] = json!(self.session);
        }
        if self.handle != 0 && v["janus"] != "keepalive" {
            v["handle_id"] = json!(self.handle);
        }
        let _ = self.ws.send(Message::text(v.to_string()));
        tx
    }

    /// Note what concerns the handle whatever message it comes in.
    fn note(&mut self, v: &Value) {
        match v["janus"].as_str() {
            Some("trickle") => {
                if let Some(c) = v["candidate"]["candidate"].as_str() {
                    self.trickled.push(c.to_string());
                }
            }
            Some("hangup") => {
                self.hangup = Some(v["reason"].as_str().unwrap_or("hangup").to_string());
            }
            _ => {}
        }
    }

    /// Send a request; the first reply with its transaction that is not an `ack`.
    fn call(&mut self, v: Value) -> Result<Value, String> {
        let what = v["janus"].as_str().unwrap_or("").to_string();
        let tx = self.send(v);
        let t0 = Instant::now();
        loop {
            if t0.elapsed() > REQUEST_TIMEOUT {
                return Err(format!("{what}: no reply in {REQUEST_TIMEOUT:?}"));
            }
            let t = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(e) => return Err(format!("{what}: websocket: {e}")),
            };
            let r: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            self.note(&r);
            if r["transaction"] != tx.as_str() || r["janus"] == "ack" {
                continue;
            }
            if r["janus"] == "error" {
                return Err(format!("{what}: {}", r["error"]));
            }
            if let Some(e) = r["plugindata"]["data"]["error"].as_str() {
                return Err(format!("{what}: {e}"));
            }
            return Ok(r);
        }
    }

    /// `watch` a mountpoint: Janus's SDP offer.
    pub fn watch(&mut self, mountpoint: u64) -> Result<String, String> {
        let r = self.call(json!({"janus": "message", "body": {"request": "watch", "id": mountpoint}}))?;
        r["jsep"]["sdp"].as_str().map(str::to_string).ok_or(format!("watch: no offer in {r}"))
    }

    /// `start` with our answer (all candidates in it: no trickle). Does not wait for the reply.
    pub fn start(&mut self, answer: &str) -> String {
        self.send(json!({
            "janus": "message", "body": {"request": "start"},
            "jsep": {"type": "answer", "sdp": answer, "trickle": false}
        }))
    }

    /// Wait for the reply to `start` (sent by [`JanusWs::start`]).
    pub fn started(&mut self, tx: &str) -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < REQUEST_TIMEOUT {
            let t = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(e) => return Err(format!("start: websocket: {e}")),
            };
            let r: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            self.note(&r);
            if r["transaction"] == tx && r["janus"] != "ack" {
                if let Some(e) = r["plugindata"]["data"]["error"].as_str() {
                    return Err(format!("start: {e}"));
                }
                return if r["janus"] == "error" { Err(format!("start: {}", r["error"])) } else { Ok(()) };
            }
        }
        Err("start: no reply".into())
    }

    /// Candidates Janus trickled so far, in 127.0.0.0/8 only.
    pub fn take_trickled(&mut self) -> Vec<Candidate> {
        self.trickled
            .drain(..)
            .filter(|c| loopback_candidate(c))
            .filter_map(|c| Candidate::from_sdp_string(&c).ok())
            .collect()
    }

    /// Send a keepalive when due and read what came in, without blocking.
    fn tend(&mut self) {
        if self.last_keepalive.elapsed() >= KEEPALIVE {
            self.last_keepalive = Instant::now();
            self.send(json!({"janus": "keepalive"}));
        }
        let MaybeTlsStream::Plain(s) = self.ws.get_ref() else { return };
        let _ = s.set_nonblocking(true);
        while let Ok(m) = self.ws.read() {
            if let Message::Text(t) = m {
                let r: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                self.note(&r);
            }
        }
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            let _ = s.set_nonblocking(false);
        }
    }
}

/// A new subscriber's engine and signalling, once `start` is sent.
pub struct Joined {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    /// When `watch` was sent: the origin of the join times.
    pub watch_sent: Instant,
    pub ws: JanusWs,
    pub start_tx: String,
}

/// Join the mountpoint: session, handle, `watch`, str0m answers Janus's offer, `start`. The
/// subscriber's socket is on `ip`, Janus's own ICE address: with a 127.0.0.1 candidate ICE
/// fails, not one packet from Janus arrives (libnice seems to skip loopback remote candidates).
pub fn join(url: &str, mountpoint: u64, ip: &str) -> Result<Joined, String> {
    let mut ws = JanusWs::connect(url)?;
    let socket = UdpSocket::bind((ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut rtc = crate::new_rtc(true, &socket);
    let watch_sent = Instant::now();
    let offer = ws.watch(mountpoint)?;
    let (offer_text, kept) = loopback_only(&offer);
    if kept == 0 {
        return Err("Janus offered no ICE candidate in 127.0.0.0/8: run it in a network namespace \
                    where a veth carries 127.0.0.2 (bench/side-by-side.sh)"
            .into());
    }
    let offer = SdpOffer::from_sdp_string(&offer_text).map_err(|e| format!("Janus's offer: {e}"))?;
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| format!("accept offer: {e}"))?;
    for c in ws.take_trickled() {
        rtc.add_remote_candidate(c);
    }
    if std::env::var_os("SLUICE_BENCH_DEBUG").is_some() {
        eprintln!("Janus's offer (loopback candidates):\n{offer_text}\nour answer:\n{answer}");
    }
    let start_tx = ws.start(&answer.to_sdp_string());
    Ok(Joined { rtc, socket, watch_sent, ws, start_tx })
}

/// Keeps the subscribers' Janus sessions alive: a keepalive every 25 s, incoming events read.
pub struct Keeper {
    sessions: Arc<Mutex<Vec<JanusWs>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    pub fn start(stop: Arc<AtomicBool>) -> Keeper {
        let sessions: Arc<Mutex<Vec<JanusWs>>> = Arc::default();
        let s = sessions.clone();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                for j in s.lock().expect("lock").iter_mut() {
                    j.tend();
                }
            }
        });
        Keeper { sessions, thread: Some(thread) }
    }

    pub fn add(&self, j: JanusWs) {
        self.sessions.lock().expect("lock").push(j);
    }

    /// Handles Janus hung up, with the first reason.
    pub fn hangups(&self) -> (usize, Option<String>) {
        let s = self.sessions.lock().expect("lock");
        let reasons: Vec<&String> = s.iter().filter_map(|j| j.hangup.as_ref()).collect();
        (reasons.len(), reasons.first().map(|r| r.to_string()))
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_candidates_stay() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2015363327 127.0.0.2 20001 typ host\r\n\
                   a=candidate:2 1 udp 2015363327 192.0.2.2 20002 typ host\r\n\
                   a=candidate:3 1 udp 2015363327 fd00::2 20003 typ host\r\na=end-of-candidates\r\n";
        let (out, kept) = loopback_only(sdp);
        assert_eq!(kept, 1);
        assert!(out.contains("127.0.0.2 20001") && !out.contains("192.0.2.2") && !out.contains("fd00"));
        assert!(out.contains("a=end-of-candidates"));
    }
}
