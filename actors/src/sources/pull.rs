//! WebRTC pull: a stream of another server (sluice or WCS), played over its WebSocket API and
//! republished here under a local name, as WCS's `/rest-api/pull/pull` does. The first step of
//! a cluster: an edge pulls from an origin once, however many viewers it serves.
//!
//! ## The actor
//! [`PullSource`], one per pulled stream, on the media arbiter (it is a WebRTC peer like a
//! publisher). It is a WCS client of the remote: it opens the WebSocket (`ws://` or `wss://`,
//! awc), sends `connection` (with `custom.token` when given, for a remote with access control),
//! and once `getUserData` comes, `playStream` of the remote name with an offer to receive
//! (a full ICE agent, controlling, from the shared media socket: [`crate::engine::pull_offer`]).
//! The remote's `setRemoteSDP` answer makes the peer; datagrams from the remote's candidates
//! are routed to it ([`crate::media_socket::MediaSocket::expect_from`]). When ICE and DTLS are
//! up, the stream is registered under the local name like any published stream (playable,
//! recordable, snapshot-able; `mediaProvider` "WebRTC") and every frame goes to its
//! [`FanOut`]. Viewers' keyframe requests go to the remote as PLIs (at most one per
//! [`KEYFRAME_MIN_INTERVAL`]). The remote's pings are answered.
//!
//! ## Ends
//! The remote stopping the stream (STOPPED/FAILED), its WebSocket closing, ICE lost, setup not
//! done within [`SETUP_TIMEOUT`], or `/pull/terminate` end the pull: its viewers get STOPPED
//! "Stopped by publisher stop". A pull is not restarted on its own.
//!
//! ## Which hosts
//! The URL's host goes through [`crate::outbound`] with its own list, `--pull-allow`: by default
//! only public hosts, so a pull cannot be aimed at the server's own network; an origin on a
//! private network needs an entry. The checked address is the one connected to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::io::SinkWrite;
use actix::prelude::*;
use awc::ws::{Codec, Frame as WsFrame, Message as WsMessage};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures_util::stream::{SplitSink, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn};

use crate::engine::{pull_offer, Candidates, PeerEvent, PullOffer};
use crate::error::EngineError;
use crate::fanout::FanOut;
use crate::media::{Codec as MediaCodec, FrameKind};
use crate::media_socket::{Datagram, MediaSocket};
use crate::messages::StreamSource;
use crate::outbound::{self, HostPattern};
use crate::peer_link::{PeerActor, PeerLink};
use crate::protocol::{info, SourceDescription, StreamInfo, StreamStatus};
use crate::registry::{Published, Registration, Registry};
use crate::source::Source;
use crate::video_rate::RateMeter;

/// From the REST call to a playing stream (WebSocket, offer, answer, ICE and DTLS).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Minimum spacing of keyframe requests sent to the remote.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Largest signalling frame taken from the remote (an SDP answer is a few KiB).
const MAX_FRAME: usize = 256 * 1024;
/// The `info` of a pull that could not reach or play the remote stream (a WCS string).
pub const FAILED_TO_CONNECT: &str = "Failed to connect to origin stream";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a pull did not start.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PullError {
    #[error("uri must be ws://host:port/ or wss://host:port/")]
    BadUri,
    #[error("Restricted access: {0}")]
    Restricted(String),
    #[error("{}", info::NAME_IN_USE)]
    NameInUse,
    #[error("{FAILED_TO_CONNECT}: {0}")]
    Connect(String),
    /// The remote answered the play with FAILED (its `info`).
    #[error("{0}")]
    Remote(String),
}

/// What `/pull/pull` asks for.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// The remote's WebSocket URL (`ws://origin:8080/`).
    pub uri: String,
    pub remote_name: String,
    pub local_name: String,
    /// Sent to the remote as `custom.token` of the connection.
    pub token: Option<String>,
}

/// A pull as `/pull/find_all` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PullInfo {
    pub uri: String,
    pub remote_stream_name: String,
    pub local_stream_name: String,
    pub local_media_session_id: String,
    /// PENDING while it connects, PUBLISHING while it plays.
    pub status: StreamStatus,
}

struct PullEntry {
    addr: Addr<PullSource>,
    info: Arc<Mutex<PullInfo>>,
}

/// Every pull by local stream name, and what they need to start.
pub struct Pulls {
    allow: Arc<Vec<HostPattern>>,
    arbiter: ArbiterHandle,
    registry: Arc<Registry>,
    socket: Arc<MediaSocket>,
    candidates: Vec<std::net::SocketAddr>,
    table: Arc<DashMap<String, PullEntry>>,
}

impl Pulls {
    pub fn new(
        allow: Vec<HostPattern>,
        arbiter: ArbiterHandle,
        registry: Arc<Registry>,
        socket: Arc<MediaSocket>,
        candidates: Vec<std::net::SocketAddr>,
    ) -> Arc<Self> {
        Arc::new(Pulls {
            allow: Arc::new(allow),
            arbiter,
            registry,
            socket,
            candidates,
            table: Arc::default(),
        })
    }

    pub fn list(&self) -> Vec<PullInfo> {
        let mut v: Vec<PullInfo> =
            self.table.iter().map(|e| e.info.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
        v.sort_by(|a, b| a.local_stream_name.cmp(&b.local_stream_name));
        v
    }

    /// Stop the pull of `local_name` (with `remote_name`, only if it pulls that); whether one was.
    /// A name that is no local name stops the pulls *of* that remote name: the WCS console's
    /// pulled view sends the remote name as `localStreamName`.
    pub fn terminate(&self, local_name: &str, remote_name: Option<&str>) -> bool {
        let matching: Vec<Addr<PullSource>> = match self.table.get(local_name) {
            Some(e) => {
                let remote = e.info.lock().unwrap_or_else(|p| p.into_inner()).remote_stream_name.clone();
                if remote_name.is_some_and(|r| r != remote) {
                    return false;
                }
                vec![e.addr.clone()]
            }
            None if remote_name.is_none() => self
                .table
                .iter()
                .filter(|e| e.info.lock().is_ok_and(|i| i.remote_stream_name == local_name))
                .map(|e| e.addr.clone())
                .collect(),
            None => Vec::new(),
        };
        for a in &matching {
            a.do_send(crate::messages::Stop { reason: info::STOPPED_BY_REST_TERMINATE });
        }
        !matching.is_empty()
    }

    /// Start a pull; resolves once it plays (or with why it does not).
    pub async fn start(self: &Arc<Self>, req: PullRequest) -> Result<PullInfo, PullError> {
        self.start_allowing(req, self.allow.clone()).await
    }

    /// Start a pull from a host `allow` lets through instead of `--pull-allow` (the cluster
    /// allows the node that publishes the stream, for that pull only).
    pub async fn start_allowing(
        self: &Arc<Self>,
        req: PullRequest,
        allow: Arc<Vec<HostPattern>>,
    ) -> Result<PullInfo, PullError> {
        let url = url::Url::parse(&req.uri).map_err(|_| PullError::BadUri)?;
        let (host, port) = match (url.scheme(), url.host_str()) {
            ("ws", Some(h)) => (h.to_string(), url.port().unwrap_or(80)),
            ("wss", Some(h)) => (h.to_string(), url.port().unwrap_or(443)),
            _ => return Err(PullError::BadUri),
        };
        if outbound::precheck(&allow, &host) == Some(false) {
            return Err(PullError::Restricted(format!("{host} is not in --pull-allow")));
        }
        if self.registry.name_published(&req.local_name) {
            return Err(PullError::NameInUse);
        }
        let id = format!("pull-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let info = Arc::new(Mutex::new(PullInfo {
            uri: req.uri.clone(),
            remote_stream_name: req.remote_name.clone(),
            local_stream_name: req.local_name.clone(),
            local_media_session_id: id.clone(),
            status: StreamStatus::Pending,
        }));
        let (tx, rx) = oneshot::channel();
        match self.table.entry(req.local_name.clone()) {
            Entry::Occupied(_) => return Err(PullError::NameInUse),
            Entry::Vacant(v) => {
                let me = self.clone();
                let i2 = info.clone();
                let addr = PullSource::start_in_arbiter(&self.arbiter, move |_| PullSource {
                    id,
                    req,
                    url,
                    host,
                    port,
                    allow,
                    registry: me.registry.clone(),
                    socket: me.socket.clone(),
                    candidates: me.candidates.clone(),
                    table: me.table.clone(),
                    info: i2,
                    ws: None,
                    remote_id: format!("sluice-pull-{:016x}", rand::random::<u64>()),
                    offer: None,
                    link: None,
                    fanout: FanOut::default(),
                    registration: None,
                    state: State::Connecting,
                    waiter: Some(tx),
                    last_keyframe_request: None,
                    meter: RateMeter::default(),
                    video: None,
                    has_audio: false,
                    span: tracing::Span::none(),
                });
                v.insert(PullEntry { addr, info: info.clone() });
            }
        }
        rx.await.unwrap_or_else(|_| Err(PullError::Connect("pull ended".into())))?;
        let out = info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// WebSocket, `connection`, `playStream`, answer, ICE and DTLS.
    Connecting,
    Live,
    Ended,
}

type WsSink = SinkWrite<WsMessage, SplitSink<actix_codec::Framed<awc::BoxedSocket, Codec>, WsMessage>>;

/// One pulled stream (see the module docs).
pub struct PullSource {
    id: String,
    req: PullRequest,
    url: url::Url,
    host: String,
    port: u16,
    allow: Arc<Vec<HostPattern>>,
    registry: Arc<Registry>,
    socket: Arc<MediaSocket>,
    candidates: Vec<std::net::SocketAddr>,
    table: Arc<DashMap<String, PullEntry>>,
    info: Arc<Mutex<PullInfo>>,
    ws: Option<WsSink>,
    /// Our `mediaSessionId` on the remote.
    remote_id: String,
    offer: Option<PullOffer>,
    /// The WebRTC peer, once the remote answered.
    link: Option<PeerLink>,
    fanout: FanOut,
    registration: Option<Registration>,
    state: State,
    /// The REST call waiting for the outcome.
    waiter: Option<oneshot::Sender<Result<(), PullError>>>,
    last_keyframe_request: Option<Instant>,
    meter: RateMeter,
    video: Option<MediaCodec>,
    has_audio: bool,
    span: tracing::Span,
}

impl PullSource {
    fn send_ws(&mut self, message: &str, data: Value) {
        if let Some(ws) = &mut self.ws {
            let text = json!({ "message": message, "data": data }).to_string();
            let _ = ws.write(WsMessage::Text(text.into()));
        }
    }

    fn end(&mut self, outcome: Result<&'static str, PullError>, ctx: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        match &outcome {
            Ok(reason) => info!(parent: &self.span, reason, frames = self.fanout.frames(), "pull ended"),
            Err(e) => warn!(parent: &self.span, error = %e, "pull failed"),
        }
        if let Some(w) = self.waiter.take() {
            let _ =
                w.send(Err(outcome.clone().err().unwrap_or_else(|| PullError::Connect("stopped".into()))));
        }
        self.fanout.end(info::STOPPED_BY_PUBLISHER);
        if let Some(r) = self.registration.take() {
            let mut i = self.stream_info();
            r.finish(&mut i, StreamStatus::Unpublished, outcome.as_ref().map_or(FAILED_TO_CONNECT, |r| r));
        }
        if self.ws.is_some() {
            self.send_ws(
                "stopStream",
                json!([{ "mediaSessionId": self.remote_id, "name": self.req.remote_name }]),
            );
            if let Some(ws) = &mut self.ws {
                let _ = ws.write(WsMessage::Close(None));
                ws.close();
            }
        }
        ctx.stop();
    }

    fn stream_info(&self) -> StreamInfo {
        let mut i = StreamInfo::of_source(SourceDescription {
            media_session_id: &self.id,
            name: &self.req.local_name,
            provider: "WebRTC",
            video_codec: self.video.map_or("", |c| c.wcs_name()),
            has_audio: self.has_audio,
            width: 0,
            height: 0,
            transport: "UDP",
            session_id: "",
        });
        i.custom = Some(json!({ "pulledFrom": self.url.as_str(), "remoteStreamName": self.req.remote_name }));
        i
    }

    /// The remote's `getUserData`: offer to play its stream.
    fn on_established(&mut self, ctx: &mut Context<Self>) {
        let cands = Candidates { addrs: self.candidates.clone(), udp: true, tcp: false };
        let offer = match pull_offer(&cands) {
            Ok(o) => o,
            Err(e) => return self.end(Err(PullError::Connect(e.to_string())), ctx),
        };
        let sdp = offer.sdp.clone();
        self.offer = Some(offer);
        self.send_ws(
            "playStream",
            json!([{ "mediaSessionId": self.remote_id, "name": self.req.remote_name, "published": false,
                     "hasVideo": true, "hasAudio": true, "status": "PENDING", "record": false,
                     "mediaProvider": "WebRTC", "sdp": sdp }]),
        );
    }

    /// The remote's `setRemoteSDP`: the peer exists from here on.
    fn on_answer(&mut self, sdp: &str, ctx: &mut Context<Self>) {
        let Some(offer) = self.offer.take() else { return };
        let ufrag = offer.local_ufrag.clone();
        let answered = match offer.accept(sdp) {
            Ok(a) => a,
            Err(e) => return self.end(Err(PullError::Connect(format!("answer: {e}"))), ctx),
        };
        if answered.remote_addrs.is_empty() {
            return self.end(Err(PullError::Connect("the answer has no UDP candidate".into())), ctx);
        }
        self.video = answered.video;
        self.has_audio = answered.has_audio;
        self.socket.register(&ufrag, ctx.address().recipient());
        for a in &answered.remote_addrs {
            self.socket.expect_from(*a, &ufrag);
        }
        debug!(parent: &self.span, remote = ?answered.remote_addrs, video = ?self.video, "remote answered");
        self.link = Some(PeerLink::new(answered.peer, self.socket.clone(), ufrag));
        self.drive(ctx);
    }

    fn on_remote_frame(&mut self, text: &str, ctx: &mut Context<Self>) {
        let Ok(v) = serde_json::from_str::<Value>(text) else { return };
        let data0 = &v["data"][0];
        match v["message"].as_str().unwrap_or("") {
            "getUserData" if self.offer.is_none() && self.link.is_none() => self.on_established(ctx),
            "setRemoteSDP" if data0.as_str() == Some(self.remote_id.as_str()) => {
                if let Some(sdp) = v["data"][1].as_str() {
                    self.on_answer(sdp, ctx);
                }
            }
            "notifyStreamStatusEvent" if data0["mediaSessionId"] == self.remote_id.as_str() => {
                match data0["status"].as_str().unwrap_or("") {
                    "FAILED" => {
                        let why = data0["info"].as_str().unwrap_or(FAILED_TO_CONNECT).to_string();
                        self.end(Err(PullError::Remote(why)), ctx)
                    }
                    "STOPPED" => self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx),
                    _ => {}
                }
            }
            "fail" if data0["id"] == self.remote_id.as_str() || self.state == State::Connecting => {
                let why = data0["info"].as_str().unwrap_or("refused").to_string();
                self.end(Err(PullError::Remote(why)), ctx)
            }
            "ping" => self.send_ws("pong", json!([null])),
            _ => {}
        }
    }

    fn request_keyframe(&mut self, ctx: &mut Context<Self>) {
        if self.last_keyframe_request.is_some_and(|t| t.elapsed() < KEYFRAME_MIN_INTERVAL) {
            return;
        }
        if let Some(link) = &mut self.link {
            if link.peer.request_keyframe(None) {
                self.last_keyframe_request = Some(Instant::now());
                self.drive(ctx);
            }
        }
    }
}

impl Actor for PullSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.span = info_span!("pull", local = %self.req.local_name, remote = %self.req.remote_name,
            uri = %self.url, id = %self.id);
        info!(parent: &self.span, "pull starting");
        ctx.run_later(SETUP_TIMEOUT, |act, ctx| {
            if act.state == State::Connecting {
                act.end(Err(PullError::Connect(format!("not playing after {SETUP_TIMEOUT:?}"))), ctx);
            }
        });
        let (allow, host, port, url) = (self.allow.clone(), self.host.clone(), self.port, self.url.clone());
        let token = self.req.token.clone();
        let connect = async move {
            let addrs = outbound::resolve_checked(&allow, &host, port).await.map_err(|e| match e {
                outbound::OutboundError::Refused { .. } => PullError::Restricted(e.to_string()),
                e => PullError::Connect(e.to_string()),
            })?;
            let tls = crate::auth::hooks::client_tls().map_err(|e| PullError::Connect(e.to_string()))?;
            let client = awc::Client::builder()
                .connector(awc::Connector::new().timeout(SETUP_TIMEOUT).rustls_0_23(tls))
                .finish();
            let (_, framed) = client
                .ws(url.as_str())
                .address(addrs[0])
                .max_frame_size(MAX_FRAME)
                .connect()
                .await
                .map_err(|e| PullError::Connect(e.to_string()))?;
            Ok::<_, PullError>((framed, token))
        };
        connect
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok((framed, token)) => {
                    let (sink, stream) = framed.split();
                    act.ws = Some(SinkWrite::new(sink, ctx));
                    ctx.add_stream(stream);
                    let mut conn = json!({ "appKey": "defaultApp", "mediaProviders": ["WebRTC"],
                        "clientVersion": format!("sluice-pull/{}", crate::VERSION), "clientOSVersion": "",
                        "clientBrowserVersion": "sluice", "keepAlive": false });
                    if let Some(t) = token {
                        conn["custom"] = json!({ "token": t });
                    }
                    act.send_ws("connection", json!([conn]));
                }
                Err(e) => act.end(Err(e), ctx),
            })
            .wait(ctx);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if let Some(link) = &mut self.link {
            link.socket.unregister(&link.ufrag);
            link.peer.close();
        }
        self.table.remove_if(&self.req.local_name, |_, e| {
            e.info.lock().map(|i| i.local_media_session_id == self.id).unwrap_or(true)
        });
        Running::Stop
    }
}

impl StreamHandler<Result<WsFrame, awc::error::WsProtocolError>> for PullSource {
    fn handle(&mut self, msg: Result<WsFrame, awc::error::WsProtocolError>, ctx: &mut Context<Self>) {
        match msg {
            Ok(WsFrame::Text(t)) => match std::str::from_utf8(&t) {
                Ok(text) => self.on_remote_frame(text, ctx),
                Err(_) => debug!(parent: &self.span, "remote sent a text frame that is not UTF-8"),
            },
            Ok(WsFrame::Ping(p)) => {
                if let Some(ws) = &mut self.ws {
                    let _ = ws.write(WsMessage::Pong(p));
                }
            }
            Ok(WsFrame::Close(reason)) => {
                debug!(parent: &self.span, ?reason, "remote closed the WebSocket");
                self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx)
            }
            Ok(_) => {}
            Err(e) => self.end(Err(PullError::Connect(format!("WebSocket: {e}"))), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx);
    }
}

impl actix::io::WriteHandler<awc::error::WsProtocolError> for PullSource {}

impl PeerActor for PullSource {
    fn link(&mut self) -> &mut PeerLink {
        self.link.as_mut().expect("invariant: the peer is only driven once the remote's answer made it")
    }

    fn on_peer_event(&mut self, ev: PeerEvent, ctx: &mut Context<Self>) {
        match ev {
            PeerEvent::Connected => {
                if self.state != State::Connecting {
                    return;
                }
                let published = Published {
                    media_session_id: self.id.clone(),
                    source: StreamSource::of(&ctx.address()),
                    video: self.video,
                    has_audio: self.has_audio,
                };
                match self.registry.register_source(
                    self.stream_info(),
                    ctx.address().recipient(),
                    Some(published),
                ) {
                    Ok(r) => self.registration = Some(r),
                    Err(_) => return self.end(Err(PullError::NameInUse), ctx),
                }
                self.state = State::Live;
                if let Ok(mut i) = self.info.lock() {
                    i.status = StreamStatus::Publishing;
                }
                info!(parent: &self.span, video = ?self.video, audio = self.has_audio, "pull playing");
                if let Some(w) = self.waiter.take() {
                    let _ = w.send(Ok(()));
                }
                self.request_keyframe(ctx);
            }
            PeerEvent::Frame(f) => {
                if self.state != State::Live {
                    return;
                }
                if f.kind() == FrameKind::Video {
                    self.meter.frame();
                    if let Some((w, h)) = f.dimensions() {
                        self.registry.update(&self.id, |i| {
                            i.width = w;
                            i.height = h;
                        });
                    }
                }
                if self.fanout.forward(f) {
                    self.request_keyframe(ctx);
                }
            }
            PeerEvent::VideoStats(s) => {
                let size = self.registry.find(&crate::registry::Filter {
                    media_session_ids: Some(vec![self.id.clone()]),
                    ..Default::default()
                });
                let (w, h) = size.first().map_or((0, 0), |i| (i.width, i.height));
                if let Some(rate) = self.meter.sample(s, Instant::now(), w, h) {
                    self.registry.update(&self.id, |i| i.metrics = Some(rate));
                }
            }
            PeerEvent::AudioBytes(b) => self.meter.audio(b, Instant::now()),
            PeerEvent::BadFrame(_) => {
                self.fanout.lost_frame();
                self.request_keyframe(ctx);
            }
            PeerEvent::Disconnected => self.peer_gone(EngineError::Closed, ctx),
            PeerEvent::KeyframeRequest | PeerEvent::Bandwidth(_) | PeerEvent::LayerStats(..) => {}
            // Our offer to the origin asks for no simulcast.
            PeerEvent::LayerFrame(..) | PeerEvent::SimulcastRids(_) => {}
        }
    }

    fn on_peer_closed(&mut self, err: EngineError, ctx: &mut Context<Self>) {
        self.end(Err(PullError::Connect(format!("peer: {err}"))), ctx);
    }
}

impl Handler<Datagram> for PullSource {
    type Result = ();
    fn handle(&mut self, d: Datagram, ctx: &mut Context<Self>) {
        if self.link.is_some() {
            self.on_datagram(d, ctx);
        }
    }
}

impl Source for PullSource {
    fn fanout(&mut self) -> &mut FanOut {
        &mut self.fanout
    }

    fn has_video(&self) -> bool {
        self.video.is_some()
    }

    fn has_ended(&self) -> bool {
        self.state == State::Ended
    }

    fn keyframe_wanted(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Live {
            self.request_keyframe(ctx);
        }
    }

    /// A new viewer starts from the GOP the pull holds (the keyframe the pull asked for when it
    /// connected, and what followed): at once, without a keyframe request travelling to the
    /// remote and on to its publisher. Measured: the first viewer of a cluster edge waited for
    /// the publisher's next periodic keyframe otherwise (BENCHMARKS.md, cluster).
    fn starts_from_gop(&self) -> bool {
        true
    }

    fn stop(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        self.end(Ok(reason), ctx);
    }
}

crate::source_handlers!(PullSource);
