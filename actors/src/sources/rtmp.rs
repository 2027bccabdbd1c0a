//! RTMP ingest: encoders (OBS, ffmpeg, hardware encoders) publish H.264 + AAC as streams like
//! any other.
//!
//! `rtmp://host:1935/<any app>/<streamName>` publishes stream `<streamName>` (a `?query` after
//! the key is dropped): it is registered under that name by the same rule as a browser's
//! publish (a name in use is refused: the encoder gets an `_error` answer to `publish`, and the
//! connection is closed), is listed by REST, played over WebRTC, recorded and snapshot.
//!
//! ## The actors
//! - [`RtmpListener`] owns the listening socket and starts one [`RtmpConnection`] per accepted
//!   client.
//! - [`RtmpConnection`] owns one TCP connection: the handshake and the chunk/session protocol
//!   (both `rml_rtmp`, sans-IO: bytes in, packets and events out), the FLV-to-frames state
//!   ([`crate::flv`], which turns AAC into Opus with [`crate::transcode`]) and the stream's
//!   [`FanOut`]. It is the stream's source: it answers `AddSubscriber`, `RemoveSubscriber`,
//!   `RequestKeyframe` (a no-op: an encoder cannot be asked for one; viewers start at the
//!   encoder's next keyframe, so its keyframe interval is the join delay), `GetGop` and `Stop`
//!   (REST terminate: the connection is closed).
//!
//! Both run on the *ingest arbiter*: socket IO and AAC→Opus transcoding never run on the media
//! arbiter that forwards live streams.
//!
//! ## Ends
//! When the encoder unpublishes, disconnects, goes silent for [`IDLE_TIMEOUT`] or sends
//! something that breaks the protocol (garbage after the handshake), the connection is closed
//! and viewers get STOPPED "Stopped by publisher stop". Bad input never panics the server: the
//! protocol library runs behind `catch_unwind` as a last guard.

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::{WriteHandler, Writer};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, info_span, warn};

use crate::fanout::FanOut;
use crate::flv::FlvError;
use crate::flv::FlvToFrames;
use crate::media::{Codec, Frame};
use crate::messages::StreamSource;
use crate::protocol::{info, SourceDescription, StreamInfo};
use crate::registry::{Published, Registration, Registry};
use crate::source::Source;
use crate::transcoder::{Transcoded, VideoPath};
use crate::video_transcode::{self as vt, Reorder, TranscodeSettings};

/// The standard RTMP port.
pub const DEFAULT_PORT: u16 = 1935;
/// A client must finish the handshake within this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed (encoders send media continuously;
/// an idle, connected-but-not-publishing client is dropped too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the timeouts are checked.
const TICK: Duration = Duration::from_secs(1);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// After a refusal or an end, how long the answer may take to flush before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Longest stream key accepted as a stream name.
const MAX_NAME: usize = 256;
/// The `mediaProvider` of RTMP-published streams in stream objects, as WCS shows them.
pub const MEDIA_PROVIDER: &str = "Flash";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Bind the RTMP port now (so a taken port fails the start and port 0 is resolved), then accept
/// on `arbiter`. Returns the bound address.
pub fn start(bind: SocketAddr, arbiter: &ArbiterHandle, registry: Arc<Registry>) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    RtmpListener::start_in_arbiter(arbiter, move |_| RtmpListener { listener: Some(listener), registry });
    info!(addr = %local, "RTMP ingest listening");
    Ok(local)
}

/// Accepts RTMP clients; one [`RtmpConnection`] each.
pub struct RtmpListener {
    listener: Option<std::net::TcpListener>,
    registry: Arc<Registry>,
}

impl Actor for RtmpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(std_listener) = self.listener.take() else { return };
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "RTMP listener cannot be registered, RTMP ingest is off");
                ctx.stop();
                return;
            }
        };
        let accepts = futures_util::stream::unfold(listener, |l| async move {
            let r = l.accept().await;
            if r.is_err() {
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some((r, l))
        });
        ctx.add_stream(accepts);
    }
}

impl StreamHandler<io::Result<(TcpStream, SocketAddr)>> for RtmpListener {
    fn handle(&mut self, item: io::Result<(TcpStream, SocketAddr)>, _: &mut Context<Self>) {
        match item {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let registry = self.registry.clone();
                RtmpConnection::create(move |ctx| RtmpConnection::new(stream, peer, registry, ctx));
            }
            Err(e) => warn!(error = %e, "RTMP accept failed"),
        }
    }
}

/// Where a connection is in the protocol.
enum Proto {
    Handshake(Box<Handshake>),
    Session(Box<ServerSession>),
    /// Closing or closed: input is ignored.
    Closed,
}

/// The stream this connection publishes.
struct Publishing {
    id: String,
    /// The stream's place in the registry; dropped when the stream ends.
    _registration: Registration,
}

/// One RTMP client connection, and the source of the stream it publishes.
pub struct RtmpConnection {
    peer: SocketAddr,
    registry: Arc<Registry>,
    proto: Proto,
    writer: Writer<OwnedWriteHalf, io::Error>,
    reader: Option<SpawnHandle>,
    publishing: Option<Publishing>,
    /// Set once a stream ended (it is never published again on this connection).
    ended: bool,
    flv: FlvToFrames,
    fanout: FanOut,
    /// Audio frames completed by the last audio tag (reused).
    audio_out: Vec<Frame>,
    /// H.264 on its way to the fan-out: as it is, or re-encoded once B-frames are found (OBS's
    /// defaults), which WebRTC viewers would play as a slideshow. Set at publish.
    video_path: Option<VideoPath>,
    /// The frame rate the encoder announced in its metadata.
    fps: Option<f32>,
    opened: Instant,
    last_heard: Instant,
    /// FLV errors already logged (each kind once per connection, then counted).
    flv_errors: u64,
    /// Counted in `sluice_actors` while alive.
    _live: crate::metrics::Live,
    span: tracing::Span,
}

impl RtmpConnection {
    fn new(stream: TcpStream, peer: SocketAddr, registry: Arc<Registry>, ctx: &mut Context<Self>) -> Self {
        let (read, write) = stream.into_split();
        let reader = ctx.add_stream(read_stream(read));
        let span = info_span!("rtmp", peer = %peer);
        debug!(parent: &span, "RTMP client connected");
        RtmpConnection {
            peer,
            registry,
            proto: Proto::Handshake(Box::new(Handshake::new(PeerType::Server))),
            writer: Writer::new(write, ctx),
            reader: Some(reader),
            publishing: None,
            ended: false,
            flv: FlvToFrames::default(),
            fanout: FanOut::default(),
            audio_out: Vec::new(),
            video_path: None,
            fps: None,
            opened: Instant::now(),
            last_heard: Instant::now(),
            flv_errors: 0,
            _live: crate::metrics::Live::new("rtmp"),
            span,
        }
    }

    fn on_bytes(&mut self, data: &[u8], ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match &mut self.proto {
            Proto::Closed => {}
            Proto::Handshake(h) => match h.process_bytes(data) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.writer.write(&response_bytes)
                }
                Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                    self.writer.write(&response_bytes);
                    let (session, initial) = match ServerSession::new(ServerSessionConfig::new()) {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(parent: &self.span, error = %e, "RTMP session setup failed");
                            return self.close(ctx);
                        }
                    };
                    self.proto = Proto::Session(Box::new(session));
                    self.on_results(initial, ctx);
                    if !remaining_bytes.is_empty() {
                        self.on_bytes(&remaining_bytes, ctx);
                    }
                }
                Err(e) => {
                    debug!(parent: &self.span, error = ?e, "RTMP handshake failed, closing");
                    self.close(ctx);
                }
            },
            Proto::Session(s) => {
                let res = catch_unwind(AssertUnwindSafe(|| s.handle_input(data)));
                match res {
                    Ok(Ok(results)) => self.on_results(results, ctx),
                    Ok(Err(e)) => {
                        warn!(parent: &self.span, error = %e, "RTMP protocol error, closing");
                        self.close(ctx);
                    }
                    Err(_) => {
                        warn!(parent: &self.span, "RTMP input broke the protocol library, closing");
                        self.close(ctx);
                    }
                }
            }
        }
    }

    /// Send what the session produced, act on its events (which may produce more).
    fn on_results(&mut self, results: Vec<ServerSessionResult>, ctx: &mut Context<Self>) {
        let mut queue: std::collections::VecDeque<ServerSessionResult> = results.into();
        while let Some(r) = queue.pop_front() {
            if matches!(self.proto, Proto::Closed) {
                return;
            }
            match r {
                ServerSessionResult::OutboundResponse(packet) => self.writer.write(&packet.bytes),
                ServerSessionResult::RaisedEvent(e) => {
                    if let Some(more) = self.on_event(e, ctx) {
                        queue.extend(more);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn session(&mut self) -> Option<&mut ServerSession> {
        match &mut self.proto {
            Proto::Session(s) => Some(s),
            _ => None,
        }
    }

    /// One session event; returns what answering it produced.
    fn on_event(
        &mut self,
        e: ServerSessionEvent,
        ctx: &mut Context<Self>,
    ) -> Option<Vec<ServerSessionResult>> {
        match e {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                debug!(parent: &self.span, app = %app_name, "RTMP connect");
                self.answer(request_id, Ok(()), ctx)
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                let res = self.publish(&app_name, &stream_key, ctx);
                let refused = res.is_err();
                let out = self.answer(request_id, res, ctx);
                if refused {
                    // ffmpeg and OBS give up on the `_error`; a client that does not is cut off.
                    self.after_refusal(out, ctx);
                    return None;
                }
                out
            }
            ServerSessionEvent::PlayStreamRequested { request_id, stream_key, .. } => {
                info!(parent: &self.span, key = %stream_key, "RTMP play refused: RTMP is ingest only");
                let out = self.answer(
                    request_id,
                    Err(("NetStream.Play.Failed", "Playback over RTMP is not supported")),
                    ctx,
                );
                self.after_refusal(out, ctx);
                None
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.end(info::STOPPED_BY_PUBLISHER);
                self.close(ctx);
                None
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.on_metadata(&metadata);
                None
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.on_video(timestamp.value, &data);
                None
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.on_audio(timestamp.value, &data);
                None
            }
            _ => None,
        }
    }

    /// Accept or reject a connect/publish/play request.
    fn answer(
        &mut self,
        request_id: u32,
        res: Result<(), (&str, &str)>,
        ctx: &mut Context<Self>,
    ) -> Option<Vec<ServerSessionResult>> {
        let session = self.session()?;
        let out = match res {
            Ok(()) => session.accept_request(request_id),
            Err((code, description)) => session.reject_request(request_id, code, description),
        };
        match out {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(parent: &self.span, error = %e, "RTMP answer failed, closing");
                self.close(ctx);
                None
            }
        }
    }

    /// Write a refusal, then close once it is flushed.
    fn after_refusal(&mut self, out: Option<Vec<ServerSessionResult>>, ctx: &mut Context<Self>) {
        for r in out.into_iter().flatten() {
            if let ServerSessionResult::OutboundResponse(p) = r {
                self.writer.write(&p.bytes);
            }
        }
        self.close(ctx);
    }

    /// Register the stream under its key. Errors are the RTMP status code and description.
    fn publish(
        &mut self,
        app: &str,
        key: &str,
        ctx: &mut Context<Self>,
    ) -> Result<(), (&'static str, &'static str)> {
        if self.publishing.is_some() || self.ended {
            warn!(parent: &self.span, key, "second publish on one RTMP connection refused");
            return Err(("NetStream.Publish.BadConnection", "One stream per connection"));
        }
        let name = stream_name(key).ok_or_else(|| {
            warn!(parent: &self.span, key, "RTMP publish with an unusable stream key refused");
            ("NetStream.Publish.BadName", "Bad stream name")
        })?;
        if self.registry.name_published(&name) {
            info!(parent: &self.span, stream = %name, "RTMP publish refused: stream name is already in use");
            return Err(("NetStream.Publish.BadName", info::NAME_IN_USE));
        }
        let id = format!("rtmp-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let addr = ctx.address();
        let info = stream_info(&id, &name, &format!("/{}", self.peer));
        // An encoder announces its tracks only after the publish is accepted: the stream is
        // taken to carry H.264 and audio (a viewer of a silent stream just gets no audio).
        let published = Published {
            media_session_id: id.clone(),
            source: StreamSource::of(&addr),
            video: Some(Codec::H264),
            has_audio: true,
        };
        let registration =
            self.registry.register_source(info, addr.clone().recipient(), Some(published)).map_err(|e| {
                info!(parent: &self.span, stream = %name, why = e.info(), "RTMP publish refused");
                ("NetStream.Publish.BadName", e.info())
            })?;
        let settings = TranscodeSettings { fps: self.fps, ..Default::default() };
        self.video_path = Some(VideoPath::new(&name, settings, addr.clone().recipient()));
        self.span = info_span!("rtmp", peer = %self.peer, stream = %name, id = %id);
        info!(parent: &self.span, app, "RTMP publish");
        self.publishing = Some(Publishing { id, _registration: registration });
        Ok(())
    }

    fn on_metadata(&mut self, m: &StreamMetadata) {
        debug!(parent: &self.span, width = ?m.video_width, height = ?m.video_height,
            video_codec = ?m.video_codec_id, audio_codec = ?m.audio_codec_id, encoder = ?m.encoder,
            "RTMP metadata");
        if let Some(fps) = m.video_frame_rate.filter(|f| f.is_finite() && *f > 0.0) {
            self.fps = Some(fps);
            if let Some(v) = self.video_path.as_mut() {
                v.set_fps(fps);
            }
        }
        let (Some(p), Some(w), Some(h)) = (&self.publishing, m.video_width, m.video_height) else { return };
        self.registry.update(&p.id, |i| {
            if i.width == 0 {
                i.width = w;
                i.height = h;
            }
        });
    }

    fn on_video(&mut self, ts: u32, data: &Bytes) {
        if self.publishing.is_none() || self.ended {
            return;
        }
        let before = self.flv.tracks().clone();
        match self.flv.video(ts, data, Instant::now()) {
            Ok(Some(frame)) => {
                let mut found = None;
                let frame = match self.video_path.as_mut() {
                    Some(v) => v.video(frame, &mut found),
                    None => Some(frame),
                };
                if let Some(frame) = frame {
                    // An encoder cannot be asked for a keyframe: a sink that lost one waits.
                    let _ = self.fanout.forward(frame);
                }
                if let Some(why) = found {
                    self.b_frames_found(why);
                }
            }
            Ok(None) => {}
            Err(e) => self.flv_error(e),
        }
        self.tracks_changed(&before);
    }

    fn on_audio(&mut self, ts: u32, data: &Bytes) {
        if self.publishing.is_none() || self.ended {
            return;
        }
        let before = self.flv.tracks().clone();
        let mut out = std::mem::take(&mut self.audio_out);
        let res = self.flv.audio(ts, data, Instant::now(), &mut out);
        for frame in out.drain(..) {
            let _ = self.fanout.forward(frame);
        }
        self.audio_out = out;
        if let Err(e) = res {
            self.flv_error(e);
        }
        self.tracks_changed(&before);
    }

    /// B-frames found in the first frames: said once, in the log and the stream object.
    fn b_frames_found(&mut self, why: Reorder) {
        info!(parent: &self.span, why = why.describe(), note = vt::NOTE_B_FRAMES,
            "RTMP video has B-frames, which WebRTC viewers play as a slideshow: re-encoding it");
        if let Some(p) = &self.publishing {
            self.registry.update(&p.id, |i| i.transcoding = Some(vt::NOTE_B_FRAMES.to_string()));
        }
    }

    fn tracks_changed(&mut self, before: &crate::flv::Tracks) {
        let now = self.flv.tracks().clone();
        if now == *before {
            return;
        }
        info!(parent: &self.span, width = now.width, height = now.height, video = now.video,
            audio = now.audio, "RTMP tracks");
        if let Some(p) = &self.publishing {
            self.registry.update(&p.id, |i| {
                if now.width > 0 {
                    i.width = now.width;
                    i.height = now.height;
                }
            });
        }
    }

    fn flv_error(&mut self, e: FlvError) {
        self.flv_errors += 1;
        // The first few in full, then one line per thousand: a broken encoder must not flood.
        if self.flv_errors <= 5 || self.flv_errors.is_multiple_of(1000) {
            warn!(parent: &self.span, error = %e, count = self.flv_errors, "RTMP media dropped");
        }
    }

    /// End the published stream (if any): viewers get STOPPED with `reason`.
    fn end(&mut self, reason: &'static str) {
        if self.ended {
            return;
        }
        self.ended = true;
        let Some(p) = self.publishing.take() else { return };
        info!(parent: &self.span, reason, frames = self.fanout.frames(), "RTMP stream ended");
        self.fanout.end(reason);
        self.video_path = None; // ends the transcoding thread, if any
        drop(p); // releases the name and the record
    }

    /// Close the connection: the stream ends, pending answers are flushed, then the actor stops.
    fn close(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.proto, Proto::Closed) {
            return;
        }
        self.proto = Proto::Closed;
        self.end(info::STOPPED_BY_PUBLISHER);
        if let Some(h) = self.reader.take() {
            ctx.cancel_future(h);
        }
        self.writer.close();
        // Wake the writer so it sees the close even with nothing left to send.
        self.writer.write(&[]);
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }
}

/// The stream name an RTMP stream key gives: the key up to any `?query`, if usable.
pub fn stream_name(key: &str) -> Option<String> {
    let name = key.split('?').next().unwrap_or("").trim();
    let ok = !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(|c| c.is_control());
    ok.then(|| name.to_string())
}

fn stream_info(id: &str, name: &str, session_id: &str) -> StreamInfo {
    StreamInfo::of_source(SourceDescription {
        media_session_id: id,
        name,
        provider: MEDIA_PROVIDER,
        video_codec: Codec::H264.wcs_name(),
        has_audio: true,
        width: 0,
        height: 0,
        transport: "TCP",
        session_id,
    })
}

/// The socket's bytes as a stream of chunks; ends at EOF, or after the first read error.
fn read_stream(r: OwnedReadHalf) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    futures_util::stream::unfold(Some((r, BytesMut::new())), |state| async move {
        let (mut r, mut buf) = state?;
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.split().freeze()), Some((r, buf)))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

impl Actor for RtmpConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| {
            let handshaking = matches!(act.proto, Proto::Handshake(_));
            if handshaking && act.opened.elapsed() > HANDSHAKE_TIMEOUT {
                debug!(parent: &act.span, "RTMP handshake timed out, closing");
                act.close(ctx);
            } else if act.last_heard.elapsed() > IDLE_TIMEOUT {
                info!(parent: &act.span, "RTMP client silent too long, closing");
                act.close(ctx);
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.end(info::STOPPED_BY_PUBLISHER);
        debug!(parent: &self.span, "RTMP connection closed");
        Running::Stop
    }
}

impl StreamHandler<io::Result<Bytes>> for RtmpConnection {
    fn handle(&mut self, item: io::Result<Bytes>, ctx: &mut Context<Self>) {
        match item {
            Ok(b) => self.on_bytes(&b, ctx),
            Err(e) => {
                debug!(parent: &self.span, error = %e, "RTMP read failed");
                self.close(ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.publishing.is_some() {
            info!(parent: &self.span, "RTMP publisher disconnected");
        }
        self.close(ctx);
    }
}

impl WriteHandler<io::Error> for RtmpConnection {
    fn error(&mut self, e: io::Error, ctx: &mut Context<Self>) -> Running {
        debug!(parent: &self.span, error = %e, "RTMP write failed");
        self.close(ctx);
        Running::Stop
    }
}

impl Source for RtmpConnection {
    fn fanout(&mut self) -> &mut FanOut {
        &mut self.fanout
    }

    fn has_video(&self) -> bool {
        true
    }

    fn has_ended(&self) -> bool {
        self.ended
    }

    /// An encoder cannot be asked for a keyframe, but a re-encoded stream makes one.
    fn keyframe_wanted(&mut self, _: &mut Context<Self>) {
        if let Some(v) = self.video_path.as_mut() {
            v.request_keyframe();
        }
    }

    /// REST terminate: the stream ends with `reason` and the encoder is disconnected.
    fn stop(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        info!(parent: &self.span, reason, "RTMP stream stopped by the server");
        self.end(reason);
        self.close(ctx);
    }
}

crate::source_handlers!(RtmpConnection);

/// Frames back from the transcoding thread: forwarded like the encoder's own.
impl Handler<Transcoded> for RtmpConnection {
    type Result = ();

    fn handle(&mut self, m: Transcoded, _: &mut Context<Self>) {
        if self.publishing.is_none() || self.ended {
            return;
        }
        for frame in m.0 {
            if self.fanout.forward(frame) {
                if let Some(v) = self.video_path.as_mut() {
                    v.request_keyframe();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys() {
        assert_eq!(stream_name("enc1"), Some("enc1".into()));
        assert_eq!(stream_name("enc1?token=abc"), Some("enc1".into()));
        assert_eq!(stream_name(""), None);
        assert_eq!(stream_name("?x"), None);
        assert_eq!(stream_name("a\nb"), None);
        assert_eq!(stream_name(&"x".repeat(MAX_NAME + 1)), None);
    }
}
