//! RTMP re-publishing ("push", WCS's RTMP transponder): the [`RtmpPusher`] actor, one per push,
//! sends a live stream to an RTMP server (YouTube, Twitch, nginx-rtmp, another sluice); and
//! [`Pushes`], the table signalling and REST start, list and stop them through.
//!
//! ## The actor
//! A pusher is one more sink of the stream's source, like a recorder: it joins with
//! `AddSubscriber` and gets every frame by [`Forward`] and [`SourceEnded`] when the stream goes
//! away. It answers [`Forward`], [`SourceEnded`] and [`StopPush`] (REST terminate). Each
//! connection: resolve the host and check it against the [`PushPolicy`], connect
//! ([`CONNECT_TIMEOUT`]), then the RTMP handshake, `connect` and `publish`
//! ([`super::rtmp_client`], the only caller of `rml_rtmp`), all within [`SETUP_TIMEOUT`]. Once
//! publishing it asks the source for a keyframe (again every [`KEYFRAME_RETRY`] until one came)
//! and sends, from that keyframe on, H.264 as it is and Opus transcoded to AAC-LC
//! ([`FramesToFlv`], pure code in `sluice-codecs`). A failed or lost connection is retried after
//! [`BACKOFF`] (1 s doubling to 30 s; back to 1 s after a connection that published for
//! [`STABLE`]), each failure logged; a fresh connection starts a fresh FLV timeline at the next
//! keyframe. The push ends when the stream ends, on terminate, or when the host is refused.
//!
//! ## Threads and backpressure
//! Pushers run on the *ingest arbiter* (with RTMP ingest and RTSP pulls): socket IO and the
//! Opus → AAC transcode (one Opus decode and at most one AAC encode per 20 ms packet, well under
//! a millisecond) never run on the media arbiter. Bytes go to the socket through a writer task
//! and a queue of [`OUT_QUEUE`] RTMP messages. An RTMP server slower than the stream fills it:
//! video is then skipped until the next keyframe that finds the queue half empty (audio goes on
//! while there is room), and a queue that stays full for [`STALL_TIMEOUT`] drops the connection
//! (retried as any failure). A pusher that cannot keep up with its mailbox ([`PUSH_QUEUE`]) has
//! frames dropped for it alone by the fan-out, as a slow viewer.
//!
//! ## Names (as WCS)
//! `rtmpUrl` is the server and application, `rtmp://host[:port]/app`; the stream is published
//! as `rtmp_<streamName>` ([`STREAM_PREFIX`]), e.g. `rtmp://host/live/rtmp_cam1`. With
//! `rtmpTransponderFullUrl` (REST), the URL's last path segment is the stream key itself
//! (`rtmp://a.rtmp.youtube.com/live2/<key>`). `rtmps://` and credentials in the URL are refused.
//!
//! ## Which hosts: [`PushPolicy`]
//! Pushing makes the server connect out, to a URL a client chose: the same rule as RTSP pull
//! (`--rtsp-allow`) applies, with its own list `--rtmp-push-allow`. By default only hosts whose
//! every address is public unicast (no loopback, private, link-local...); with patterns, only
//! what they match, private hosts included. The host is resolved before each connection and
//! the checked address is the one connected to.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn};

use super::rtmp_client::{ClientEvent, RtmpClient};
use crate::flv::{FlowControl, FramesToFlv};
use crate::media::Codec;
use crate::messages::{Forward, RemoveSubscriber, RequestKeyframe, SourceEnded, StreamSource};
use crate::outbound::{self, HostPattern, OutboundError};
use crate::recorder::RecordingFailed;
use crate::registry::Registry;

/// WCS's default prefix of re-published stream names (`rtmp_transponder_stream_name_prefix`).
pub const STREAM_PREFIX: &str = "rtmp_";
/// The standard RTMP port.
pub const DEFAULT_PORT: u16 = 1935;
/// TCP connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From TCP connect to `NetStream.Publish.Start`.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between reconnection attempts: the n-th failure in a row waits `BACKOFF[n]` (the last
/// one repeating).
pub const BACKOFF: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];
/// A connection that published this long resets the backoff.
pub const STABLE: Duration = Duration::from_secs(30);
/// How often a publishing pusher still waiting for its first keyframe asks the source again.
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// RTMP messages queued for the socket (a few seconds of audio and video).
pub const OUT_QUEUE: usize = 512;
/// A queue full this long: the RTMP server does not read, the connection is dropped.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued in a pusher's mailbox before the fan-out drops for it.
pub const PUSH_QUEUE: usize = 1024;
/// How often the timeouts are checked.
const TICK: Duration = Duration::from_millis(500);
/// Bytes read from the socket at a time (servers send little: acks, status).
const READ_CHUNK: usize = 16 * 1024;
/// Longest URL accepted.
const MAX_URL: usize = 2048;

/// Sink ids of pushers, apart from viewers' (from 1) and recorders' (from 2^62).
static NEXT_SINK_ID: AtomicU64 = AtomicU64::new(3 << 61);
static NEXT_PUSH: AtomicU64 = AtomicU64::new(1);

/// Why a push cannot start (or stopped for good).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("bad rtmpUrl {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    /// No published stream of that name.
    #[error("Stream not found")]
    StreamNotFound(String),
    #[error("stream {0:?} is VP8: RTMP carries H.264 only (publish with H.264 to re-publish over RTMP)")]
    Vp8(String),
    #[error("stream {0:?} has neither video nor audio to re-publish")]
    NoMedia(String),
    /// The host is (or resolves to) an address the policy does not allow.
    #[error(
        "Restricted access: {0} is or resolves to an address --rtmp-push-allow does not allow \
         (loopback, private, link-local...)"
    )]
    Restricted(String),
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    /// A push of that stream to that URL runs already (WCS answers 409).
    #[error("a push of {stream:?} to {url:?} is running already")]
    Exists { stream: String, url: String },
    /// No push with that id.
    #[error("push not found")]
    NotFound(String),
}

/// Where a push goes: parsed from `rtmpUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    /// The URL as given (never holds credentials: those are refused).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub app: String,
    /// The stream key published.
    pub key: String,
    /// `rtmp://host:port/app`, sent with `connect`.
    pub tc_url: String,
}

impl PushUrl {
    /// `rtmpUrl` for stream `stream_name`: the key is `rtmp_<stream_name>`, or with `full_url`
    /// the URL's last path segment (see the module docs).
    pub fn parse(rtmp_url: &str, stream_name: &str, full_url: bool) -> Result<PushUrl, PushError> {
        let bad = |why| PushError::BadUrl { url: crate::rtsp::redact(rtmp_url), why };
        if rtmp_url.len() > MAX_URL {
            return Err(bad("too long"));
        }
        let u = url::Url::parse(rtmp_url.trim()).map_err(|_| bad("not a URL"))?;
        match u.scheme() {
            "rtmp" => {}
            "rtmps" | "rtmpe" | "rtmpt" => return Err(bad("only rtmp:// is supported")),
            _ => return Err(bad("not an rtmp:// URL")),
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("no host")),
        };
        let port = u.port().unwrap_or(DEFAULT_PORT);
        let path = u.path().trim_matches('/');
        let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
        let (app, key) = if full_url {
            let (app, key) = path.rsplit_once('/').ok_or(bad("no stream key after the application"))?;
            (app.to_string(), format!("{key}{query}"))
        } else {
            (format!("{path}{query}"), format!("{STREAM_PREFIX}{stream_name}"))
        };
        if app.is_empty() || key.is_empty() {
            return Err(bad("no application in the path"));
        }
        let host_in_url = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let tc_url = format!("rtmp://{host_in_url}:{port}/{app}");
        Ok(PushUrl { url: rtmp_url.trim().to_string(), host, port, app, key, tc_url })
    }
}

/// Which hosts a push may connect to (see the module docs): `--rtmp-push-allow`, judged as
/// `--rtsp-allow` is.
#[derive(Debug, Clone, Default)]
pub struct PushPolicy {
    /// Hosts pushes may reach; empty: those whose every address is public unicast.
    pub allow: Vec<HostPattern>,
}

impl PushPolicy {
    pub fn permits(&self, host: &str, addrs: &[IpAddr]) -> bool {
        outbound::permits(&self.allow, host, addrs)
    }

    /// Resolve the URL's host (off the thread: tokio's resolver pool) and check every address
    /// ([`outbound::resolve_checked`]); the addresses to connect to.
    pub async fn resolve(&self, url: &PushUrl) -> Result<Vec<SocketAddr>, PushError> {
        outbound::resolve_checked(&self.allow, &url.host, url.port).await.map_err(|e| match e {
            OutboundError::Resolve { host, why } => PushError::Resolve { host, why },
            OutboundError::Refused { host, addresses } => {
                info!(%host, %addresses, "RTMP push refused by the host policy (--rtmp-push-allow)");
                PushError::Restricted(host)
            }
        })
    }
}

/// A push as `/push/find_all` lists it (WCS's fields, plus ours).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PushInfo {
    /// The push's own id (`/push/terminate` takes it).
    pub media_session_id: String,
    /// The stream name on the RTMP server (WCS: `rtmp_<name>`).
    pub stream_name: String,
    pub rtmp_url: String,
    pub width: u32,
    pub height: u32,
    pub muted: bool,
    pub sound_enabled: bool,
    pub options: serde_json::Value,
    /// `PENDING` (connecting), `PROCESSED_LOCAL` (publishing), `FAILED` (waiting to retry).
    pub status: &'static str,
    /// Why the last attempt failed, if it did.
    pub info: String,
    /// The stream pushed, by name and `mediaSessionId`.
    pub source_stream_name: String,
    pub source_media_session_id: String,
    /// Connections made so far (1 + reconnections).
    pub attempts: u32,
    /// Unix time, ms.
    pub start_time: u64,
}

pub const STATUS_PENDING: &str = "PENDING";
pub const STATUS_PUBLISHING: &str = "PROCESSED_LOCAL";
pub const STATUS_FAILED: &str = "FAILED";

/// End a push now (REST terminate); the stream goes on.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopPush;

/// What is pushed: a live stream's source and what it carries.
#[derive(Clone)]
pub struct PushSource {
    pub stream_name: String,
    pub media_session_id: String,
    pub source: StreamSource,
    pub video: Option<Codec>,
    pub has_audio: bool,
}

struct Active {
    addr: Addr<RtmpPusher>,
    info: PushInfo,
}

/// Every push in progress, by id.
pub struct Pushes {
    policy: Arc<PushPolicy>,
    arbiter: ArbiterHandle,
    registry: Arc<Registry>,
    active: DashMap<String, Active>,
}

impl Pushes {
    /// Pushes checked by `policy`, their actors on `arbiter` (not the media arbiter).
    pub fn new(policy: PushPolicy, arbiter: ArbiterHandle, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Pushes { policy: Arc::new(policy), arbiter, registry, active: DashMap::new() })
    }

    /// The published stream `name`, ready to push.
    pub fn source(&self, name: &str) -> Result<PushSource, PushError> {
        let p = self.registry.lookup(name).ok_or_else(|| PushError::StreamNotFound(name.to_string()))?;
        Ok(PushSource {
            stream_name: name.to_string(),
            media_session_id: p.media_session_id,
            source: p.source,
            video: p.video,
            has_audio: p.has_audio,
        })
    }

    pub fn list(&self) -> Vec<PushInfo> {
        let mut v: Vec<PushInfo> = self.active.iter().map(|a| a.info.clone()).collect();
        v.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.media_session_id.cmp(&b.media_session_id)));
        v
    }

    /// Start pushing `src` to `url` once its host passed the policy; answers the push as listed.
    /// `notify` (the publishing session) hears of a push that stops for good.
    pub async fn start(
        self: &Arc<Self>,
        src: PushSource,
        url: PushUrl,
        notify: Option<Recipient<RecordingFailed>>,
    ) -> Result<PushInfo, PushError> {
        match src.video {
            Some(Codec::Vp8) => return Err(PushError::Vp8(src.stream_name)),
            None if !src.has_audio => return Err(PushError::NoMedia(src.stream_name)),
            _ => {}
        }
        let dup = self.active.iter().any(|a| {
            a.info.source_media_session_id == src.media_session_id
                && a.info.rtmp_url == url.url
                && a.info.stream_name == url.key
        });
        if dup {
            return Err(PushError::Exists { stream: src.stream_name, url: url.url });
        }
        self.policy.resolve(&url).await?;
        let id = format!("push-{}-{:x}", NEXT_PUSH.fetch_add(1, Ordering::Relaxed), rand::random::<u32>());
        let info = PushInfo {
            media_session_id: id.clone(),
            stream_name: url.key.clone(),
            rtmp_url: url.url.clone(),
            width: 0,
            height: 0,
            muted: false,
            sound_enabled: src.has_audio,
            options: serde_json::json!({}),
            status: STATUS_PENDING,
            info: String::new(),
            source_stream_name: src.stream_name.clone(),
            source_media_session_id: src.media_session_id.clone(),
            attempts: 0,
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        let span =
            info_span!("rtmp_push", id = %id, stream = %src.stream_name, to = %url.tc_url, key = %url.key);
        info!(parent: &span, "RTMP push started");
        let pusher = RtmpPusher {
            id: id.clone(),
            sink_id: NEXT_SINK_ID.fetch_add(1, Ordering::Relaxed),
            source: src.source,
            video: src.video.is_some(),
            audio: src.has_audio,
            url,
            policy: self.policy.clone(),
            pushes: self.clone(),
            notify,
            source_id: src.media_session_id.clone(),
            conn: None,
            generation: 0,
            failures: 0,
            ended: false,
            span,
        };
        let addr = RtmpPusher::start_in_arbiter(&self.arbiter, move |_| pusher);
        self.active.insert(id, Active { addr, info: info.clone() });
        Ok(info)
    }

    /// End a push (REST terminate).
    pub fn stop(&self, id: &str) -> Result<(), PushError> {
        let a =
            self.active.get(id).map(|a| a.addr.clone()).ok_or_else(|| PushError::NotFound(id.to_string()))?;
        a.do_send(StopPush);
        Ok(())
    }

    /// End every push (server shutdown).
    pub fn stop_all(&self) {
        for a in self.active.iter() {
            a.addr.do_send(StopPush);
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut PushInfo)) {
        if let Some(mut a) = self.active.get_mut(id) {
            f(&mut a.info);
        }
    }

    fn done(&self, id: &str) {
        self.active.remove(id);
    }
}

/// The signalling hook: a `publishStream` with `rtmpUrl` re-publishes its stream there (WCS
/// naming: `rtmp_<name>`), until the publish ends. Failures to start are logged and told to
/// the publishing client with a `fail` notice; the publish goes on either way.
pub fn start_with_publish(
    pushes: &Arc<Pushes>,
    src: PushSource,
    rtmp_url: &str,
    notify: Recipient<RecordingFailed>,
) {
    let id = src.media_session_id.clone();
    let fail = move |notify: &Recipient<RecordingFailed>, e: PushError| {
        warn!(stream = %src_name_of(&e), error = %e, "RTMP re-publishing refused; publishing goes on");
        notify.do_send(RecordingFailed {
            media_session_id: id.clone(),
            reason: format!("RTMP re-publishing failed: {e}"),
        });
    };
    let url = match PushUrl::parse(rtmp_url, &src.stream_name, false) {
        Ok(u) => u,
        Err(e) => return fail(&notify, e),
    };
    let pushes = pushes.clone();
    actix::spawn(async move {
        if let Err(e) = pushes.start(src, url, Some(notify.clone())).await {
            fail(&notify, e);
        }
    });
}

fn src_name_of(e: &PushError) -> String {
    match e {
        PushError::Vp8(s) | PushError::NoMedia(s) | PushError::StreamNotFound(s) => s.clone(),
        _ => String::new(),
    }
}

/// One connection to the RTMP server.
struct Conn {
    generation: u64,
    client: Option<RtmpClient>,
    tx: mpsc::Sender<Bytes>,
    reader: Option<SpawnHandle>,
    muxer: FramesToFlv,
    flow: FlowControl,
    opened: Instant,
    publishing_since: Option<Instant>,
    full_since: Option<Instant>,
}

/// Bytes read from connection `generation`, or its end.
enum ReadItem {
    Data(u64, Bytes),
    Closed(u64, String),
}

pub struct RtmpPusher {
    id: String,
    sink_id: u64,
    source: StreamSource,
    video: bool,
    audio: bool,
    url: PushUrl,
    policy: Arc<PushPolicy>,
    pushes: Arc<Pushes>,
    notify: Option<Recipient<RecordingFailed>>,
    /// The pushed stream's `mediaSessionId` (what `notify` is about).
    source_id: String,
    conn: Option<Conn>,
    generation: u64,
    /// Failures in a row (picks the backoff).
    failures: usize,
    ended: bool,
    span: tracing::Span,
}

impl RtmpPusher {
    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let (policy, url) = (self.policy.clone(), self.url.clone());
        self.pushes.update(&self.id, |i| {
            i.status = STATUS_PENDING;
            i.attempts += 1;
        });
        let fut = async move {
            let addrs = policy.resolve(&url).await?;
            let mut last = String::from("no address");
            for a in addrs {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
                    Ok(Ok(s)) => return Ok(s),
                    Ok(Err(e)) => last = format!("{a}: {e}"),
                    Err(_) => last = format!("{a}: connect timed out"),
                }
            }
            Err(PushError::Resolve { host: url.host.clone(), why: last })
        };
        fut.into_actor(self)
            .map(move |res, act, ctx| {
                if act.ended || generation != act.generation {
                    return;
                }
                match res {
                    Ok(stream) => act.connected(stream, ctx),
                    Err(PushError::Restricted(h)) => {
                        // The name resolves elsewhere now: a push that will never be allowed ends.
                        warn!(parent: &act.span, host = %h, "RTMP push host refused by policy, push ends");
                        let reason = PushError::Restricted(h).to_string();
                        if let Some(n) = &act.notify {
                            n.do_send(RecordingFailed {
                                media_session_id: act.source_id.clone(),
                                reason: format!("RTMP re-publishing failed: {reason}"),
                            });
                        }
                        act.end(ctx, true, &reason);
                    }
                    Err(e) => act.failed(&e.to_string(), ctx),
                }
            })
            .spawn(ctx);
    }

    fn connected(&mut self, stream: TcpStream, ctx: &mut Context<Self>) {
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
        // The writer task: drains the queue into the socket; ends when the queue is dropped
        // (after writing what is left) or on a write error (the reader then sees the close).
        actix::spawn(async move {
            while let Some(b) = rx.recv().await {
                if write.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        let generation = self.generation;
        let reader = ctx.add_stream(read_stream(read, generation));
        let client = match RtmpClient::new(&self.url.app, &self.url.key, &self.url.tc_url) {
            Ok(c) => c,
            Err(e) => return self.failed(&e.to_string(), ctx),
        };
        debug!(parent: &self.span, "TCP connected, RTMP handshake");
        self.conn = Some(Conn {
            generation,
            client: Some(client),
            tx,
            reader: Some(reader),
            muxer: FramesToFlv::new(self.video, self.audio),
            flow: FlowControl::default(),
            opened: Instant::now(),
            publishing_since: None,
            full_since: None,
        });
        if let Err(e) = self.flush() {
            self.failed(&e, ctx);
        }
    }

    /// Write what the client produced; an error when the connection is gone.
    fn flush(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let Some(client) = conn.client.as_mut() else { return Ok(()) };
        for b in client.take_output() {
            match conn.tx.try_send(b) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return Err("connection closed".into()),
                // Only protocol replies can get here with the queue full (media checks first):
                // a server that does not read for that long is stalled.
                Err(mpsc::error::TrySendError::Full(_)) => return Err("send queue full".into()),
            }
        }
        Ok(())
    }

    fn on_read(&mut self, item: ReadItem, ctx: &mut Context<Self>) {
        let (generation, data) = match item {
            ReadItem::Data(g, d) => (g, Ok(d)),
            ReadItem::Closed(g, why) => (g, Err(why)),
        };
        let current = self.conn.as_ref().is_some_and(|c| c.generation == generation);
        if !current || self.ended {
            return;
        }
        let data = match data {
            Ok(d) => d,
            Err(why) => return self.failed(&why, ctx),
        };
        let res = match self.conn.as_mut().and_then(|c| c.client.as_mut()) {
            Some(client) => client.on_bytes(&data).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        if let Err(e) = res.and_then(|_| self.flush()) {
            return self.failed(&e, ctx);
        }
        while let Some(ev) = self.conn.as_mut().and_then(|c| c.client.as_mut()).and_then(|c| c.poll_event()) {
            match ev {
                ClientEvent::Publishing => {
                    info!(parent: &self.span, "RTMP publishing");
                    if let Some(c) = self.conn.as_mut() {
                        c.publishing_since = Some(Instant::now());
                    }
                    self.pushes.update(&self.id, |i| {
                        i.status = STATUS_PUBLISHING;
                        i.info.clear();
                    });
                    self.source.keyframe.do_send(RequestKeyframe(None));
                }
            }
        }
    }

    /// This connection failed: close it, retry after the backoff.
    fn failed(&mut self, why: &str, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        if let Some(c) = self.conn.take() {
            if c.publishing_since.is_some_and(|t| t.elapsed() >= STABLE) {
                self.failures = 0;
            }
            if let Some(r) = c.reader {
                ctx.cancel_future(r);
            }
        }
        self.generation += 1; // stale reads and connects are ignored from now on
        let wait = BACKOFF[self.failures.min(BACKOFF.len() - 1)];
        self.failures += 1;
        warn!(parent: &self.span, error = %why, retry_in = ?wait, failures = self.failures, "RTMP push connection failed");
        let why = why.to_string();
        self.pushes.update(&self.id, |i| {
            i.status = STATUS_FAILED;
            i.info = why;
        });
        ctx.run_later(wait, |act, ctx| act.connect(ctx));
    }

    /// The push is over: say goodbye to the server, leave the source if asked, forget it.
    fn end(&mut self, ctx: &mut Context<Self>, leave: bool, reason: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(mut c) = self.conn.take() {
            if let Some(client) = c.client.as_mut() {
                client.stop();
                for b in client.take_output() {
                    let _ = c.tx.try_send(b);
                }
            }
            // Dropping the queue lets the writer finish what is queued and close the socket.
        }
        if leave {
            self.source.leave.do_send(RemoveSubscriber { id: self.sink_id });
        }
        info!(parent: &self.span, reason, "RTMP push ended");
        self.pushes.done(&self.id);
        ctx.stop();
    }

    fn on_frame(&mut self, frame: &crate::media::Frame, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.as_mut() else { return };
        if conn.publishing_since.is_none() {
            return;
        }
        let free = conn.tx.capacity();
        if free == 0 {
            let since = *conn.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STALL_TIMEOUT {
                return self.failed("the RTMP server stopped reading", ctx);
            }
        } else {
            conn.full_since = None;
        }
        if !conn.flow.admit(frame.kind(), frame.keyframe, free, OUT_QUEUE) {
            return;
        }
        let pushed = conn.muxer.push(frame);
        let mut size = None;
        while let Some(o) = conn.muxer.pop() {
            if let crate::flv::FlvOut::Metadata(m) = &o {
                size = Some((m.width, m.height));
            }
            if let Some(client) = conn.client.as_mut() {
                if let Err(e) = client.send(&o) {
                    return self.failed(&e.to_string(), ctx);
                }
            }
        }
        if let Some((w, h)) = size {
            self.pushes.update(&self.id, |i| {
                i.width = w;
                i.height = h;
            });
        }
        if let Err(e) = pushed {
            debug!(parent: &self.span, error = %e, "frame not re-published");
        }
        if let Err(e) = self.flush() {
            self.failed(&e, ctx);
        }
    }
}

fn read_stream(r: OwnedReadHalf, generation: u64) -> impl futures_util::Stream<Item = ReadItem> {
    futures_util::stream::unfold(Some((r, BytesMut::new())), move |state| async move {
        let (mut r, mut buf) = state?;
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => {
                Some((ReadItem::Closed(generation, "the RTMP server closed the connection".into()), None))
            }
            Ok(_) => Some((ReadItem::Data(generation, buf.split().freeze()), Some((r, buf)))),
            Err(e) => Some((ReadItem::Closed(generation, format!("read: {e}")), None)),
        }
    })
}

impl Actor for RtmpPusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(PUSH_QUEUE);
        self.source.attach(self.sink_id, None, ctx, |act: &mut Self, ctx| {
            act.end(ctx, false, "the stream was gone before the push joined")
        });
        ctx.run_interval(TICK, |act, ctx| {
            let Some(c) = act.conn.as_ref() else { return };
            match c.publishing_since {
                None if c.opened.elapsed() > SETUP_TIMEOUT => {
                    act.failed("no NetStream.Publish.Start from the RTMP server in time", ctx)
                }
                Some(since) if !c.muxer.started() && since.elapsed() >= KEYFRAME_RETRY => {
                    act.source.keyframe.do_send(RequestKeyframe(None));
                }
                _ => {}
            }
        });
        self.connect(ctx);
    }
}

impl StreamHandler<ReadItem> for RtmpPusher {
    fn handle(&mut self, item: ReadItem, ctx: &mut Context<Self>) {
        self.on_read(item, ctx);
    }

    /// A connection's read side ended (its `Closed` item was handled): the actor lives on.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Forward> for RtmpPusher {
    type Result = ();
    fn handle(&mut self, Forward(frame, _): Forward, ctx: &mut Context<Self>) {
        if !self.ended {
            self.on_frame(&frame, ctx);
        }
    }
}

impl Handler<SourceEnded> for RtmpPusher {
    type Result = ();
    fn handle(&mut self, m: SourceEnded, ctx: &mut Context<Self>) {
        self.end(ctx, false, m.reason);
    }
}

impl Handler<StopPush> for RtmpPusher {
    type Result = ();
    fn handle(&mut self, _: StopPush, ctx: &mut Context<Self>) {
        self.end(ctx, true, "stopped by rest /terminate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_wcs_names_them() {
        let u = PushUrl::parse("rtmp://example.com/live", "cam1", false).unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str(), u.key.as_str()),
            ("example.com", 1935, "live", "rtmp_cam1")
        );
        assert_eq!(u.tc_url, "rtmp://example.com:1935/live");
        let u = PushUrl::parse("rtmp://1.2.3.4:1940/live/", "x", false).unwrap();
        assert_eq!((u.port, u.app.as_str(), u.key.as_str()), (1940, "live", "rtmp_x"));
        let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh", "x", true).unwrap();
        assert_eq!((u.app.as_str(), u.key.as_str()), ("live2", "abcd-efgh"));
        let u = PushUrl::parse("rtmp://[::1]/app", "x", false).unwrap();
        assert_eq!(u.tc_url, "rtmp://[::1]:1935/app");
        for bad in [
            "",
            "http://x/live",
            "rtmps://x/live",
            "rtmp://u:p@x/live",
            "rtmp://x",
            "rtmp:///live",
            "rtmp://x/",
        ] {
            assert!(PushUrl::parse(bad, "s", false).is_err(), "{bad}");
        }
        assert!(PushUrl::parse("rtmp://x/live", "s", true).is_err(), "full URL without a key");
    }

    #[test]
    fn policy_is_rtsps() {
        let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        let default = PushPolicy::default();
        assert!(default.permits("8.8.8.8", &ip("8.8.8.8")));
        for private in ["127.0.0.1", "10.0.0.1", "192.168.1.2", "169.254.1.1", "::1", "0.0.0.0"] {
            assert!(!default.permits(private, &ip(private)), "{private}");
        }
        let lo = PushPolicy { allow: vec!["127.0.0.1".parse().unwrap()] };
        assert!(lo.permits("127.0.0.1", &ip("127.0.0.1")));
        assert!(!lo.permits("10.0.0.1", &ip("10.0.0.1")));
    }
}
