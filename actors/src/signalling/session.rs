//! The session actor: one per WebSocket client.
//!
//! Owns the WebSocket and the client's streams (by `mediaSessionId`). Parses each frame
//! ([`crate::protocol::parse_client`]), negotiates WebRTC for `publishStream`/`playStream`, starts
//! the [`Publisher`](crate::publisher::Publisher) actor on the media arbiter and each
//! [`Subscriber`](crate::subscriber::Subscriber) on the next viewer
//! arbiter (round-robin over the media threads, [`crate::Core::viewer_arbiter`]), and relays their
//! [`StatusChanged`] and [`StreamEventNotice`] back as WCS frames. Keeps the client alive with
//! `ping` every [`PING_INTERVAL`] and drops it after [`CLIENT_TIMEOUT`] of silence. When the socket
//! closes, every stream of the session ends with "Stopped by session disconnect".
//! When the server stops ([`crate::shutdown`]), new streams get FAILED "Server shutdown" and the
//! socket closes with 1001 Going Away once every stream of the session has sent its final status.
//!
//! Access control ([`crate::auth`]): the connection's token (`custom.token`) is verified and the
//! `connect` hook asked before the session is established (a refusal answers `fail` with the
//! reason and closes the socket with 1008); each publish and play is checked against the
//! stream's token (or the session's) and the `publishStream`/`playStream` hook before anything
//! is created, and a refusal is the stream's FAILED with the reason. Snapshots need the
//! `snapshot` grant when tokens are on.
//!
//! Bad input never ends the server: a frame that is not JSON, an unknown message or missing
//! fields get a `fail` answer (stream requests get FAILED); an oversized frame closes the socket
//! with 1009.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::{Map, Value};
use tracing::{debug, info, info_span, warn};

use crate::auth::{self, Action, HookAnswer};
use crate::debug_log::{self, DebugLog};
use crate::engine::Candidates;
use crate::messages::{ClientRecipients, StatusChanged, StreamEventNotice, VideoRateNotice};
use crate::picture::Format;
use crate::protocol::{
    self as p, info as wcs, ClientMessage, ProtocolError, StreamRequest, StreamStatus, Transport,
};
use crate::publisher::RelayEvent;
use crate::recorder::RecordingFailed;
use crate::registry::Published;
use crate::signalling::start::{self, Opening, PublishClient, StartError, StreamHandle as Handle};
use crate::snapshot::{SnapshotError, TakeSnapshot};
use crate::Core;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// How often the server pings the client (WCS `keep_alive.server_interval`).
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A client silent this long (10 missed pings, WCS `keep_alive.probes`) is disconnected.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(50);
/// Largest WebSocket frame accepted. SDP offers are a few KB; anything this big is an attack.
pub const MAX_FRAME: usize = 1 << 20;

pub struct Session {
    core: Arc<Core>,
    id: String,
    /// The client's address, for hooks and logs.
    client_ip: Option<std::net::IpAddr>,
    /// The token the connection carried (`custom.token`), for streams that carry none.
    token: Option<String>,
    /// Stream requests waiting for the application server's answer, by `mediaSessionId`: a
    /// stop in the meantime cancels them.
    pending: std::collections::HashSet<String>,
    /// Counted in [`crate::limits::Limits`] (released when the session stops).
    counted: bool,
    /// Messages per second ([`crate::limits`]).
    bucket: crate::limits::MessageBucket,
    /// A limit was hit and logged: later refusals of this session are not logged again.
    limit_logged: bool,
    app_key: String,
    established: bool,
    last_heard: Instant,
    streams: HashMap<String, Handle>,
    /// The server is stopping: close the socket once the last stream has sent its final status.
    closing: bool,
    /// `sessionDebug start` was asked: the log the Stream Diagnostic page downloads.
    debug_log: Option<DebugLog>,
    /// Counted in `sluice_actors` while alive.
    _live: crate::metrics::Live,
    span: tracing::Span,
}

impl Session {
    /// `id` is the WCS session id, "/clientIP:port/serverIP:port".
    pub fn new(core: Arc<Core>, id: String, client_ip: Option<std::net::IpAddr>) -> Self {
        let span = info_span!("session", id = %id);
        let bucket = core.limits.message_bucket();
        Session {
            core,
            id,
            client_ip,
            token: None,
            pending: Default::default(),
            counted: false,
            bucket,
            limit_logged: false,
            app_key: "defaultApp".into(),
            established: false,
            last_heard: Instant::now(),
            streams: HashMap::new(),
            closing: false,
            debug_log: None,
            _live: crate::metrics::Live::new("session"),
            span,
        }
    }

    /// Send a frame to the client (and into the debug log while one is kept).
    fn send(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: String) {
        if let Some(log) = &mut self.debug_log {
            log.line("out", &text);
        }
        ctx.text(text);
    }

    /// `sessionDebug {command}`: "start" begins a debug log, "stop" writes it (off the arbiter)
    /// and answers with the file to download ([`crate::debug_log`]).
    fn on_session_debug(&mut self, command: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let event = |status: &str, file: Option<String>| {
            let mut o = serde_json::json!({ "status": status });
            if let Some(f) = file {
                o["file"] = Value::String(f);
            }
            p::frame("notifySessionDebugEvent", serde_json::json!([o]))
        };
        match command {
            "start" => {
                if self.debug_log.is_none() {
                    info!(parent: &self.span, "session debug log started");
                    self.debug_log = Some(DebugLog::start(&self.id));
                }
                self.send(ctx, event("STARTED", None));
            }
            "stop" => {
                let Some(log) = self.debug_log.take() else {
                    return self.send(ctx, event("STOPPED", None));
                };
                let dir = self.core.session_logs_dir.clone();
                tokio::task::spawn_blocking(move || log.write(&dir))
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(Ok(name)) => {
                            info!(parent: &act.span, file = %name, "session debug log written");
                            act.send(ctx, event("STOPPED", Some(format!("{}/{name}", debug_log::URL_PATH))));
                        }
                        Ok(Err(e)) => {
                            warn!(parent: &act.span, error = %e, "session debug log not written");
                            act.send(ctx, event("FAILED", None));
                        }
                        Err(_) => act.send(ctx, event("FAILED", None)),
                    })
                    .spawn(ctx);
            }
            other => {
                let e = ProtocolError {
                    api_method: "sessionDebug".into(),
                    media_session_id: None,
                    reason: format!("Unknown command \"{other}\" (start, stop)"),
                };
                self.send(ctx, p::fail(&e));
            }
        }
    }

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    /// Answer a stream request with FAILED and the reason, without creating anything.
    fn fail_stream(
        &mut self,
        req: &StreamRequest,
        published: bool,
        reason: &str,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let mut i = req.to_info(published, &self.id, &self.app_key, Self::now_ms());
        i.status = StreamStatus::Failed;
        i.info = reason.to_string();
        debug!(parent: &self.span, stream = %req.name, reason, "stream request failed");
        self.send(ctx, p::status_event(&i));
    }

    fn candidates(&self, transport: Transport) -> Candidates {
        let c = &self.core.candidates;
        Candidates { addrs: c.addrs.clone(), udp: transport == Transport::Udp, tcp: c.tcp }
    }

    /// Decide on a stream request ([`crate::auth`]), then go on with `then` (at once when
    /// nothing is configured; after the application server answers when hooks are on).
    fn authorize(
        &mut self,
        mut req: StreamRequest,
        published: bool,
        ctx: &mut ws::WebsocketContext<Self>,
        then: fn(&mut Self, StreamRequest, &mut ws::WebsocketContext<Self>),
    ) {
        let auth = self.core.auth.clone();
        let token = auth::custom_token(req.custom.as_ref()).or_else(|| self.token.clone());
        // The hook sees `custom` as sent; the stream object (REST, status events) never carries
        // the token.
        let custom_as_sent = req.custom.clone();
        if let Some(Value::Object(c)) = &mut req.custom {
            c.remove("token");
        }
        if !auth.streams_restricted() {
            return then(self, req, ctx);
        }
        if let Err(why) = self.check_stream_token(&req, published, token.as_deref()) {
            return self.fail_stream(&req, published, &why, ctx);
        }
        if !auth.hooks_on() || auth.is_cluster_token(token.as_deref()) {
            return then(self, req, ctx);
        }
        let mut body = serde_json::to_value(req.to_info(published, &self.id, &self.app_key, Self::now_ms()))
            .unwrap_or(Value::Null);
        if let Value::Object(o) = &mut body {
            o.insert("custom".into(), custom_as_sent.unwrap_or(Value::Null));
            o.insert("clientIp".into(), self.client_ip.map(|i| i.to_string()).into());
        }
        let method = if published { "publishStream" } else { "playStream" };
        self.pending.insert(req.media_session_id.clone());
        async move { auth.hook(method, &body).await }
            .into_actor(self)
            .map(move |answer, act, ctx| {
                if !act.pending.remove(&req.media_session_id) {
                    return; // stopped by the client while the backend decided
                }
                match answer {
                    HookAnswer::Deny(reason) => {
                        info!(parent: &act.span, stream = %req.name, %reason, "{method} declined by the application server");
                        act.fail_stream(&req, published, &reason, ctx)
                    }
                    HookAnswer::Allow(over) => {
                        // The backend may rename the stream or switch recording.
                        let renamed = match over.get("name").and_then(Value::as_str) {
                            Some(n) if !n.is_empty() && n != req.name => {
                                req.name = n.to_string();
                                true
                            }
                            _ => false,
                        };
                        if let Some(r) = over.get("record").and_then(Value::as_bool) {
                            req.record = r;
                        }
                        if renamed {
                            if let Err(why) = act.check_stream_token(&req, published, token.as_deref()) {
                                return act.fail_stream(&req, published, &why, ctx);
                            }
                        }
                        if act.core.shutdown.is_stopping() {
                            return act.fail_stream(&req, published, wcs::SERVER_SHUTDOWN, ctx);
                        }
                        then(act, req, ctx)
                    }
                }
            })
            .spawn(ctx);
    }

    /// The token part of a stream decision: `Err` with the client's `info`.
    fn check_stream_token(
        &self,
        req: &StreamRequest,
        published: bool,
        token: Option<&str>,
    ) -> Result<(), String> {
        let auth = &self.core.auth;
        let action = if published { Action::Publish } else { Action::Play };
        let mut res = auth.check_token(token, action, Some(&req.name));
        if res.is_ok() && published && req.record {
            res = auth.check_token(token, Action::Record, Some(&req.name));
        }
        res.map(|_| ()).map_err(|e| {
            info!(parent: &self.span, stream = %req.name, action = action.as_str(), error = %e, "stream refused");
            format!("{}: {e}", auth::RESTRICTED)
        })
    }

    fn on_publish(&mut self, req: StreamRequest, ctx: &mut ws::WebsocketContext<Self>) {
        self.authorize(req, true, ctx, Self::publish_allowed)
    }

    /// Log a limit refusal once per session.
    fn log_limit(&mut self, what: &str) {
        if !self.limit_logged {
            self.limit_logged = true;
            warn!(parent: &self.span, client = ?self.client_ip, limit = what, "limit reached (logged once per session)");
        }
    }

    fn publish_allowed(&mut self, req: StreamRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let client = PublishClient {
            status: ctx.address().recipient(),
            rates: ctx.address().recipient(),
            failures: ctx.address().recipient(),
        };
        let stream = req.to_info(true, &self.id, &self.app_key, Self::now_ms());
        let cands = self.candidates(req.transport);
        let started = match start::publish(&self.core, &req, stream, &cands, client) {
            Ok(s) => s,
            // The publisher reports FAILED "Stream name is already in use" itself.
            Err(StartError::LostNameRace) => return,
            Err(e) => {
                match &e {
                    StartError::TooManyStreams => self.log_limit(crate::limits::TOO_MANY_STREAMS),
                    StartError::Offer(why) => {
                        warn!(parent: &self.span, stream = %req.name, error = %why, "publish offer refused")
                    }
                    _ => {}
                }
                return self.fail_stream(&req, true, &e.to_string(), ctx);
            }
        };
        info!(parent: &self.span, stream = %req.name, id = %req.media_session_id, codec = %started.stream.video_codec, "publish");
        if let Some(why) = &started.record_error {
            self.send(ctx, record_failed(&req.media_session_id, why));
        }
        self.streams.insert(req.media_session_id.clone(), Handle::Publish(started.addr));
        self.send(ctx, p::set_remote_sdp(&req.media_session_id, &started.answer_sdp));
    }

    fn on_play(&mut self, req: StreamRequest, ctx: &mut ws::WebsocketContext<Self>) {
        self.authorize(req, false, ctx, Self::play_allowed)
    }

    fn play_allowed(&mut self, mut req: StreamRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let core = self.core.clone();
        if core.registry.media_session_exists(&req.media_session_id) {
            return self.fail_stream(&req, false, wcs::MEDIA_SESSION_ID_IN_USE, ctx);
        }
        match start::open_source(&core, &mut req.name) {
            Ok(Opening::Ready(source)) => self.start_play(req, source, ctx),
            Ok(Opening::Later(opening)) => {
                opening
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(source) => act.start_play(req, source, ctx),
                        Err(e) => act.fail_stream(&req, false, &e.to_string(), ctx),
                    })
                    .spawn(ctx);
            }
            Err(e) => self.fail_stream(&req, false, &e.to_string(), ctx),
        }
    }

    /// Negotiate a viewer of `source` and start its subscriber actor.
    fn start_play(&mut self, req: StreamRequest, source: Published, ctx: &mut ws::WebsocketContext<Self>) {
        let client = ClientRecipients {
            status: ctx.address().recipient(),
            events: ctx.address().recipient(),
            rates: ctx.address().recipient(),
        };
        let stream = req.to_info(false, &self.id, &self.app_key, Self::now_ms());
        let cands = self.candidates(req.transport);
        let started = match start::view(&self.core, &req, stream, source, &cands, client) {
            Ok(s) => s,
            Err(e) => {
                match &e {
                    StartError::TooManyViewers => self.log_limit(crate::limits::TOO_MANY_VIEWERS),
                    StartError::Offer(why) => {
                        warn!(parent: &self.span, stream = %req.name, error = %why, "play offer refused")
                    }
                    _ => {}
                }
                return self.fail_stream(&req, false, &e.to_string(), ctx);
            }
        };
        info!(parent: &self.span, stream = %req.name, id = %req.media_session_id, "play");
        self.streams.insert(req.media_session_id.clone(), Handle::Play(started.addr));
        self.send(ctx, p::set_remote_sdp(&req.media_session_id, &started.answer_sdp));
    }

    fn on_stop(&mut self, id: &str, name: &str, published: bool, ctx: &mut ws::WebsocketContext<Self>) {
        // A request still waiting for the application server is cancelled (below: confirmed).
        self.pending.remove(id);
        match self.streams.get(id) {
            Some(h) => h.stop(wcs::STOPPED_BY_USER),
            None => {
                // Unknown or already ended: confirm the end so the client's stream resolves.
                let status = if published { StreamStatus::Unpublished } else { StreamStatus::Stopped };
                let obj = serde_json::json!([{ "mediaSessionId": id, "name": name, "published": published,
                    "status": status, "info": wcs::STREAM_NOT_FOUND }]);
                self.send(ctx, p::frame("notifyStreamStatusEvent", obj));
            }
        }
    }

    fn on_message(&mut self, m: ClientMessage, ctx: &mut ws::WebsocketContext<Self>) {
        let needs_session = matches!(
            m,
            ClientMessage::PublishStream(_) | ClientMessage::PlayStream(_) | ClientMessage::Snapshot { .. }
        );
        if needs_session && !self.established {
            if let ClientMessage::PublishStream(r) | ClientMessage::PlayStream(r) = &m {
                let published = matches!(m, ClientMessage::PublishStream(_));
                return self.fail_stream(r, published, wcs::SESSION_NOT_READY, ctx);
            }
        }
        if self.core.shutdown.is_stopping() {
            if let ClientMessage::PublishStream(r) | ClientMessage::PlayStream(r) = &m {
                let published = matches!(m, ClientMessage::PublishStream(_));
                return self.fail_stream(r, published, wcs::SERVER_SHUTDOWN, ctx);
            }
        }
        match m {
            ClientMessage::Connection(conn) => self.on_connection(conn, ctx),
            ClientMessage::PublishStream(r) => self.on_publish(r, ctx),
            ClientMessage::PlayStream(r) => self.on_play(r, ctx),
            ClientMessage::UnPublishStream(r) => self.on_stop(&r.media_session_id, &r.name, true, ctx),
            ClientMessage::StopStream(r) => self.on_stop(&r.media_session_id, &r.name, false, ctx),
            ClientMessage::SendStreamEvent(e) => match self.streams.get(&e.media_session_id) {
                Some(Handle::Publish(a)) if p::relayable_event(&e.kind) => {
                    a.do_send(RelayEvent { kind: e.kind, payload: e.payload })
                }
                _ => self.send(
                    ctx,
                    p::fail(&ProtocolError {
                        api_method: "sendStreamEvent".into(),
                        media_session_id: None,
                        reason: format!("No published stream {} for event {}", e.media_session_id, e.kind),
                    }),
                ),
            },
            ClientMessage::AvailableStream { media_session_id, name } => {
                let available = self.core.registry.lookup(&name).is_some();
                let reason = if available { "" } else { wcs::STREAM_NOT_FOUND };
                self.send(ctx, p::available_stream(&media_session_id, available, reason));
            }
            ClientMessage::Snapshot { media_session_id, name } => {
                self.on_snapshot(media_session_id, name, ctx)
            }
            ClientMessage::SendData { operation_id, .. } => {
                // No application server (WCS REST hooks) is configured to receive it.
                self.send(ctx, p::data_status(&operation_id, false, "No application server configured"));
            }
            ClientMessage::Ping => self.send(ctx, p::pong()),
            ClientMessage::SessionDebug { command } => self.on_session_debug(&command, ctx),
            ClientMessage::PushLogs(lines) => {
                if let Some(log) = &mut self.debug_log {
                    log.line("client", &lines);
                }
            }
            ClientMessage::Pong | ClientMessage::Ignored(_) => {}
        }
    }

    /// `snapshot {name, mediaSessionId}`: the picture comes back as a stream event for that id.
    fn on_snapshot(&mut self, media_session_id: String, name: String, ctx: &mut ws::WebsocketContext<Self>) {
        if let Err(e) = self.core.auth.check_token(self.token.as_deref(), Action::Snapshot, Some(&name)) {
            let payload = serde_json::json!({ "info": format!("{}: {e}", auth::RESTRICTED) });
            return self.send(ctx, p::stream_event(&media_session_id, "snapshotFailed", &payload));
        }
        let req = TakeSnapshot { stream: name, format: Format::Png, width: 0, height: 0 };
        let started = Instant::now();
        self.core
            .snapshots
            .send(req)
            .into_actor(self)
            .map(move |res, act, ctx| {
                let res = res.unwrap_or(Err(SnapshotError::Unavailable));
                crate::metrics::metrics().snapshot_seconds.observe(started.elapsed().as_secs_f64());
                let (kind, payload) = match res {
                    Ok(png) => ("snapshotCompleted", serde_json::json!({ "snapshot": BASE64.encode(png) })),
                    Err(e) => ("snapshotFailed", serde_json::json!({ "info": e.to_string() })),
                };
                act.send(ctx, p::stream_event(&media_session_id, kind, &payload));
            })
            .spawn(ctx);
    }

    fn on_connection(&mut self, conn: Map<String, Value>, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(Value::String(k)) = conn.get("appKey") {
            if !k.is_empty() {
                self.app_key = k.clone();
            }
        }
        let auth = self.core.auth.clone();
        self.token = auth::custom_token(conn.get("custom"));
        if let Some(t) = &self.token {
            // A token that is there must be valid; its grants are checked per stream.
            if let Err(e) = auth.verify(t) {
                return self.refuse_connection(&format!("{}: {e}", auth::RESTRICTED), ctx);
            }
        }
        if !auth.hooks_on() || auth.is_cluster_token(self.token.as_deref()) {
            return self.establish(conn, ctx);
        }
        let mut body = Value::Object(conn.clone());
        if let Value::Object(o) = &mut body {
            o.insert("sessionId".into(), self.id.clone().into());
            o.insert("clientIp".into(), self.client_ip.map(|i| i.to_string()).into());
            o.remove("sipPassword");
        }
        async move { auth.hook("connect", &body).await }
            .into_actor(self)
            .map(move |answer, act, ctx| match answer {
                HookAnswer::Allow(_) => act.establish(conn, ctx),
                HookAnswer::Deny(reason) => act.refuse_connection(&reason, ctx),
            })
            .spawn(ctx);
    }

    /// Tell the client why (`fail`, the SDK's WARN) and close with 1008 Policy Violation.
    fn refuse_connection(&mut self, reason: &str, ctx: &mut ws::WebsocketContext<Self>) {
        info!(parent: &self.span, %reason, "connection refused");
        self.send(
            ctx,
            p::fail(&ProtocolError {
                api_method: "connection".into(),
                media_session_id: None,
                reason: reason.to_string(),
            }),
        );
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Policy,
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn establish(&mut self, conn: Map<String, Value>, ctx: &mut ws::WebsocketContext<Self>) {
        self.established = true;
        info!(parent: &self.span, app = %self.app_key, "session established");
        self.send(ctx, p::user_data(&conn, &self.id));
        self.send(ctx, p::version(crate::VERSION));
    }
}

impl Session {
    /// Server shutdown ([`crate::shutdown`]): once no stream of this session is left, close the
    /// socket with 1001 Going Away.
    fn close_if_done(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.closing && self.streams.is_empty() {
            info!(parent: &self.span, "server shutdown, closing");
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Away,
                description: Some(wcs::SERVER_SHUTDOWN.into()),
            }));
            ctx.stop();
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(parent: &self.span, "websocket open");
        if let Some(ip) = self.client_ip {
            if !self.core.limits.open_session(ip) {
                self.log_limit(crate::limits::TOO_MANY_SESSIONS);
                return self.refuse_connection(crate::limits::TOO_MANY_SESSIONS, ctx);
            }
            self.counted = true;
        }
        ctx.run_interval(PING_INTERVAL, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                info!(parent: &act.span, "client silent too long, closing");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("keep-alive timeout".into()),
                }));
                ctx.stop();
                return;
            }
            act.send(ctx, p::ping());
        });
        ctx.spawn(self.core.shutdown.stopping().into_actor(self).map(|_, act, ctx| {
            act.closing = true;
            act.close_if_done(ctx);
        }));
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let (true, Some(ip)) = (std::mem::take(&mut self.counted), self.client_ip) {
            self.core.limits.close_session(ip);
        }
        for (_, h) in self.streams.drain() {
            h.stop(wcs::STOPPED_BY_SESSION_DISCONNECT);
        }
        // A debug log the client never stopped is kept all the same.
        if let Some(log) = self.debug_log.take() {
            let dir = self.core.session_logs_dir.clone();
            tokio::task::spawn_blocking(move || log.write(&dir));
        }
        info!(parent: &self.span, "session closed");
        Running::Stop
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        if matches!(msg, Ok(ws::Message::Text(_)) | Ok(ws::Message::Binary(_)))
            && !self.bucket.take(self.last_heard)
        {
            self.core.limits.count_message_refusal();
            self.log_limit(crate::limits::TOO_MANY_MESSAGES);
            // A stream request dropped here would stay PENDING: answer it.
            if let Ok(ws::Message::Text(text)) = &msg {
                match p::parse_client(text) {
                    Ok(ClientMessage::PublishStream(r)) => {
                        return self.fail_stream(&r, true, crate::limits::TOO_MANY_MESSAGES, ctx)
                    }
                    Ok(ClientMessage::PlayStream(r)) => {
                        return self.fail_stream(&r, false, crate::limits::TOO_MANY_MESSAGES, ctx)
                    }
                    _ => {}
                }
            }
            return self.send(
                ctx,
                p::fail(&ProtocolError {
                    api_method: "unknown".into(),
                    media_session_id: None,
                    reason: crate::limits::TOO_MANY_MESSAGES.into(),
                }),
            );
        }
        match msg {
            Ok(ws::Message::Text(text)) => match p::parse_client(&text) {
                Ok(m) if self.debug_log.is_some() && !matches!(m, ClientMessage::PushLogs(_)) => {
                    if let Some(log) = &mut self.debug_log {
                        log.line("in", &text);
                    }
                    self.on_message(m, ctx)
                }
                Ok(m) => self.on_message(m, ctx),
                Err(e) => {
                    debug!(parent: &self.span, error = %e, "bad client frame");
                    self.send(ctx, p::fail(&e));
                }
            },
            Ok(ws::Message::Binary(_)) => self.send(
                ctx,
                p::fail(&ProtocolError {
                    api_method: "unknown".into(),
                    media_session_id: None,
                    reason: "Binary frames are not part of the protocol".into(),
                }),
            ),
            Ok(ws::Message::Ping(b)) => ctx.pong(&b),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Continuation(_)) => {
                // actix reassembles continuations below MAX_FRAME; stray ones are ignored.
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) => {
                match &e {
                    // A browser that goes away without a close frame: an ordinary disconnect.
                    ws::ProtocolError::Io(_) => info!(parent: &self.span, error = %e, "client went away"),
                    _ => warn!(parent: &self.span, error = %e, "websocket protocol error, closing"),
                }
                let code = match e {
                    ws::ProtocolError::Overflow => ws::CloseCode::Size,
                    _ => ws::CloseCode::Protocol,
                };
                ctx.close(Some(ws::CloseReason { code, description: Some(e.to_string()) }));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A `fail` notice for a recording that failed while its stream goes on: the SDK fires the
/// session's WARN callback with it and leaves the stream alone (the `apiMethod` is not
/// `StreamStatusEvent`).
fn record_failed(media_session_id: &str, reason: &str) -> String {
    p::frame(
        "fail",
        serde_json::json!([{ "apiMethod": "publishStream", "id": media_session_id, "info": reason }]),
    )
}

impl Handler<RecordingFailed> for Session {
    type Result = ();
    fn handle(&mut self, m: RecordingFailed, ctx: &mut Self::Context) {
        self.send(ctx, record_failed(&m.media_session_id, &m.reason));
    }
}

impl Handler<StatusChanged> for Session {
    type Result = ();
    fn handle(&mut self, StatusChanged(mut info): StatusChanged, ctx: &mut Self::Context) {
        if info.status.is_terminal() {
            self.streams.remove(&info.media_session_id);
        }
        if info.status.is_terminal() && info.published && info.record_name.is_some() {
            // A recorded stream ended: its final status waits (briefly) for the file to be
            // finished, so the recordName it carries names a complete file the page can play.
            let finished = self.core.recordings.finished_name(&info.media_session_id);
            ctx.wait(finished.into_actor(self).map(move |name, act, ctx| {
                info.record_name = name;
                act.send(ctx, p::status_event(&info));
                act.close_if_done(ctx);
            }));
            return;
        }
        // A publisher that lost a name race reports FAILED itself; it still must reach the client.
        self.send(ctx, p::status_event(&info));
        self.close_if_done(ctx);
    }
}

impl Handler<VideoRateNotice> for Session {
    type Result = ();
    fn handle(&mut self, m: VideoRateNotice, ctx: &mut Self::Context) {
        let kind = if m.inbound { "inboundVideoRate" } else { "outboundVideoRate" };
        let mut obj = serde_json::to_value(m.rate).unwrap_or_default();
        obj["mediaSessionId"] = Value::String(m.media_session_id);
        self.send(ctx, p::frame(kind, serde_json::json!([obj])));
    }
}

impl Handler<StreamEventNotice> for Session {
    type Result = ();
    fn handle(&mut self, m: StreamEventNotice, ctx: &mut Self::Context) {
        self.send(ctx, p::stream_event(&m.media_session_id, &m.kind, &m.payload));
    }
}
