//! The publisher actor: one per published stream.
//!
//! Owns the publishing browser's engine peer and the stream's [`FanOut`]: every frame the
//! browser sends is shared (`Arc`) with each sink (viewer, recorder), never decoded. Answers
//! the source messages ([`AddSubscriber`], [`crate::messages::RemoveSubscriber`], [`crate::messages::RequestKeyframe`]), plus
//! [`RelayEvent`], [`crate::messages::Stop`] and [`Datagram`]. Reports PUBLISHING, UNPUBLISHED or FAILED to its
//! session.
//!
//! Keyframes: Chromium's encoder sends none on its own after the first, so a joining viewer
//! would wait forever. The publisher asks the browser for one (PLI) whenever a subscriber
//! connects or asks. While a requested keyframe is on its way (up to [`KEYFRAME_IN_FLIGHT`]) it
//! serves every new request; otherwise a request goes out at once, at most once per
//! [`KEYFRAME_MIN_INTERVAL`] whatever the layer (a request inside that window is deferred to its
//! end, not lost: the browser would drop it).
//!
//! Backpressure is the fan-out's ([`crate::fanout`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;
use tracing::{debug, info, info_span, warn};

use crate::engine::PeerEvent;
use crate::error::EngineError;
use crate::fanout::FanOut;
use crate::media_socket::Datagram;
use crate::messages::{AddSubscriber, StatusChanged, StreamEventNotice, VideoRateNotice};
use crate::peer_link::{PeerActor, PeerLink};
use crate::protocol::{info, mute_change, MuteState, StreamInfo, StreamStatus};
use crate::registry::{Registration, Registry};
use crate::source::Source;
use crate::video_rate::RateMeter;

/// Minimum spacing of keyframe requests sent to the publishing browser, of any layer:
/// libwebrtc's encoder ignores a request within 300 ms of the last one it acted on
/// (`kMinKeyframeSendIntervalMs`, for all its simulcast layers at once), so a closer one is lost.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(350);
/// How long a requested keyframe is waited for before a new request may be sent for a joiner.
pub const KEYFRAME_IN_FLIGHT: Duration = Duration::from_millis(500);
/// How long a simulcast publisher's layers may take to all show up before its video goes out
/// anyway (ranked by what came): the best layer must be known before recordings, snapshots and
/// viewers start on it.
pub const SIMULCAST_SETTLE: Duration = Duration::from_secs(2);
/// A lower rendition nobody has watched for this long is stopped.
pub const RENDITION_IDLE: Duration = Duration::from_secs(15);
/// The lower rendition's bitrate, as a share of the stream's.
const RENDITION_SHARE: f64 = 0.45;
/// Seconds between the lower rendition's own keyframes. Its viewers are on slow links, where a
/// packet of a keyframe lost in a shaper's queue and not recovered leaves the pictures after it
/// undecodable, and Chromium may wait for the next keyframe without asking (no PLI in 2.4 s of
/// such a stall, slow-viewers spec): it ended at the next periodic keyframe, 2 s later
/// (`KEYFRAME_INTERVAL_S`). Every second bounds that stall at about one second.
const RENDITION_KEYFRAME_INTERVAL_S: f32 = 1.0;
/// A publisher that has not connected (ICE + DTLS) by then is failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A publisher sending more video than `--max-publish-kbps` (default 20 Mbit/s: far above
/// what browsers send; Chromium's 1080p camera stays under 5 Mbit/s) for this many
/// once-a-second measurements in a row is ended FAILED [`info::BITRATE_OVER_LIMIT`]: only a
/// hostile or broken client does that, and forwarding it would eat every viewer's bandwidth.
/// The media socket also drops what it sends beyond 1.5 times the limit, undecrypted.
pub const OVER_LIMIT_SECONDS: u32 = 3;

/// Lifecycle: `Connecting` until ICE+DTLS are up, `Live` while media flows, `Ended` once a final
/// status was sent (the actor is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Live,
    Ended,
}

pub struct Publisher {
    link: PeerLink,
    info: StreamInfo,
    session: Recipient<StatusChanged>,
    /// Where the once-a-second `inboundVideoRate` reports go (the publishing client).
    rates: Recipient<VideoRateNotice>,
    meter: RateMeter,
    registry: Arc<Registry>,
    /// The stream's place in the registry, handed over by the session ([`Hold`]); dropped when
    /// the stream ends.
    registration: Option<Registration>,
    state: State,
    fanout: FanOut,
    last_keyframe_request: Option<Instant>,
    /// When the last keyframe request (PLI) of any kind went to the browser.
    last_pli: Option<Instant>,
    /// Keyframe requests waiting for [`KEYFRAME_MIN_INTERVAL`]: a bit per layer, and the top
    /// bit for the whole stream's.
    requests_deferred: u8,
    /// A keyframe was requested and has not arrived yet: it will serve every joiner meanwhile.
    keyframe_in_flight: bool,
    /// Simulcast: each layer's `rid` and picture area (from its keyframes), best first; a
    /// layer's index here is its layer in the fan-out.
    layers: Vec<(String, u32)>,
    /// The layers the offer announced, and until when their first keyframes are waited for
    /// (None: not started, or settled).
    announced: Vec<String>,
    settle_until: Option<Instant>,
    settled: bool,
    /// Each simulcast layer counts RTP time from its own origin: every layer's times are moved
    /// onto the first layer's timeline (by arrival), so that a recording, a push or HLS that
    /// moves to another layer sees time go on. The first frame's time and arrival, and each
    /// layer's shift.
    timeline: Option<(u64, Instant)>,
    shifts: Vec<(String, u64)>,
    /// When a keyframe of each layer was last asked for a viewer's switch.
    layer_keyframe_asked: [Option<Instant>; crate::fanout::MAX_LAYERS],
    /// A lower rendition (re-encoded at a lower bitrate, off the arbiter), made while a viewer's
    /// link cannot carry the stream, or with simulcast its lowest layer. It is the fan-out's
    /// last layer ([`Publisher::rendition_layer`]).
    rendition: Option<Rendition>,
    /// Measurements in a row over the publish limit ([`OVER_LIMIT_SECONDS`]).
    over_limit: u32,
    /// Counted in `sluice_actors` while alive.
    _live: crate::metrics::Live,
    span: tracing::Span,
}

/// A lower rendition of an H.264 stream: the transcoding thread, and whether it has been fed
/// from a keyframe on.
struct Rendition {
    thread: crate::transcoder::TranscoderThread,
    fed: bool,
    /// Its first frames have come out (for the log).
    out: bool,
    idle_since: Option<Instant>,
}

impl Rendition {
    fn new(thread: crate::transcoder::TranscoderThread) -> Self {
        crate::metrics::metrics().lower_renditions.inc();
        Rendition { thread, fed: false, out: false, idle_since: None }
    }
}

impl Drop for Rendition {
    fn drop(&mut self) {
        crate::metrics::metrics().lower_renditions.dec();
    }
}

impl Publisher {
    pub fn new(
        link: PeerLink,
        info: StreamInfo,
        session: Recipient<StatusChanged>,
        rates: Recipient<VideoRateNotice>,
        registry: Arc<Registry>,
    ) -> Self {
        let span = info_span!("publisher", stream = %info.name, id = %info.media_session_id);
        Publisher {
            link,
            info,
            session,
            rates,
            meter: RateMeter::default(),
            registry,
            state: State::Connecting,
            registration: None,
            fanout: FanOut::default(),
            last_keyframe_request: None,
            keyframe_in_flight: false,
            last_pli: None,
            requests_deferred: 0,
            layers: Vec::new(),
            announced: Vec::new(),
            settle_until: None,
            settled: false,
            timeline: None,
            shifts: Vec::new(),
            layer_keyframe_asked: [None; crate::fanout::MAX_LAYERS],
            rendition: None,
            over_limit: 0,
            _live: crate::metrics::Live::new("publisher"),
            span,
        }
    }

    fn set_status(&mut self, status: StreamStatus, text: &str) {
        let info = self.registry.set_status(&mut self.info, status, text);
        self.session.do_send(StatusChanged(info));
    }

    /// Send the final status, tell every sink, free the name, stop.
    fn end(&mut self, status: StreamStatus, reason: &str, ctx: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        info!(parent: &self.span, %status, reason, frames = self.fanout.frames(), sinks = self.fanout.len(), "publisher ended");
        if status == StreamStatus::Failed {
            crate::metrics::metrics().peer_failed("publisher", reason);
        }
        self.fanout.end(info::STOPPED_BY_PUBLISHER);
        let info = match self.registration.take() {
            Some(r) => r.finish(&mut self.info, status, reason),
            None => self.registry.finish(&mut self.info, status, reason),
        };
        self.session.do_send(StatusChanged(info));
        ctx.stop();
    }

    /// A mute notice's payload: the client's object (or none) with the stream's name added.
    fn mute_payload(&self, payload: Value) -> Value {
        let mut obj = match payload {
            Value::Object(o) => o,
            _ => serde_json::Map::new(),
        };
        obj.entry("streamName").or_insert_with(|| Value::String(self.info.name.clone()));
        Value::Object(obj)
    }

    /// A frame of the simulcast layer `rid`: its layer is its rank by the largest picture it
    /// has sent among the layers seen (a layer the browser scales down for a while keeps its
    /// rank). A layer is known from its first keyframe on. Video goes out once every announced
    /// layer is known or [`SIMULCAST_SETTLE`] has passed; should the ranking change after
    /// that (a layer the browser held back shows up), every sink waits for a fresh keyframe.
    fn layer_frame(&mut self, rid: String, mut f: crate::media::Frame, ctx: &mut Context<Self>) {
        let now = Instant::now();
        f.rtp_time = f.rtp_time.wrapping_add(self.layer_shift(&rid, &f));
        let settle_until = *self.settle_until.get_or_insert(now + SIMULCAST_SETTLE);
        if let Some((w, h)) = f.dimensions() {
            let area = w * h;
            let before: Vec<String> = self.layers.iter().map(|(r, _)| r.clone()).collect();
            let full = self.layers.len() >= crate::fanout::MAX_LAYERS;
            match self.layers.iter_mut().find(|(r, _)| *r == rid) {
                Some(l) => l.1 = l.1.max(area),
                None if !full => self.layers.push((rid.clone(), area)),
                None => return,
            }
            self.layers.sort_by(|a, b| b.1.cmp(&a.1));
            if self.settled && self.layers.iter().map(|(r, _)| r).ne(before.iter()) {
                debug!(parent: &self.span, layers = ?self.layers, "simulcast layers changed");
                // A lower rendition is made from the lowest layer: started again when wanted.
                self.rendition = None;
                self.fanout.set_layers(self.layers.len());
                self.fanout.lost_frame();
                self.request_keyframe(ctx);
            }
        }
        if !self.settled {
            let all = !self.announced.is_empty()
                && self.announced.iter().all(|a| self.layers.iter().any(|(r, _)| r == a));
            if !(all || now >= settle_until) || self.layers.is_empty() {
                return;
            }
            self.settled = true;
            debug!(parent: &self.span, layers = ?self.layers, announced = ?self.announced, "simulcast layers");
            self.fanout.set_layers(self.layers.len());
            // Every layer's next frames start from a keyframe.
            self.request_keyframe(ctx);
        }
        let Some(layer) = self.layers.iter().position(|(r, _)| *r == rid) else {
            return; // no keyframe of this layer yet: nothing could decode it
        };
        self.frame(layer as u8, f, ctx);
    }

    /// The fan-out layer of the lower rendition: after the simulcast layers (1 without).
    fn rendition_layer(&self) -> u8 {
        self.layers.len().max(1) as u8
    }

    /// How far layer `rid`'s RTP times move onto the stream's timeline (see `timeline`).
    fn layer_shift(&mut self, rid: &str, f: &crate::media::Frame) -> u64 {
        if let Some((_, shift)) = self.shifts.iter().find(|(r, _)| r == rid) {
            return *shift;
        }
        let (t0, at0) = *self.timeline.get_or_insert((f.rtp_time, f.captured));
        let since = f.captured.saturating_duration_since(at0).as_micros() as u64 * 9 / 100;
        let shift = t0.wrapping_add(since).wrapping_sub(f.rtp_time);
        if self.shifts.len() < crate::fanout::MAX_LAYERS {
            self.shifts.push((rid.to_string(), shift));
        }
        shift
    }

    /// A frame of layer `layer` (0: the best, or the only one) to the fan-out.
    fn frame(&mut self, layer: u8, f: crate::media::Frame, ctx: &mut Context<Self>) {
        let video = f.kind() == crate::media::FrameKind::Video;
        if video && f.keyframe {
            // Arrived: a keyframe of this layer may be asked for again (after the spacing).
            if let Some(slot) = self.layer_keyframe_asked.get_mut(usize::from(layer)) {
                *slot = None;
            }
        }
        if video && layer == 0 {
            self.meter.frame();
        }
        if f.keyframe && layer == 0 {
            self.keyframe_in_flight = false;
            // The picture size, for the stream object (REST find, the dashboard).
            if let Some((w, h)) = f.dimensions().filter(|&d| d != (self.info.width, self.info.height)) {
                if let Some(u) = self.registry.update(&self.info.media_session_id, |i| {
                    i.width = w;
                    i.height = h;
                }) {
                    self.info = u;
                }
            }
        }
        let rendition_from = self.rendition_layer() - 1;
        let mut starts = false;
        if let Some(r) = self.rendition.as_mut().filter(|_| video && layer == rendition_from) {
            starts = f.keyframe && !r.fed;
            r.fed |= f.keyframe;
            if r.fed {
                r.thread.push(f.clone());
            }
        }
        if starts {
            debug!(parent: &self.span, layer, "lower rendition: its decoder starts at a keyframe");
        }
        if self.state == State::Live && self.fanout.forward_layer(layer, f) {
            self.request_keyframe(ctx);
        }
    }

    /// Stop the lower rendition once nobody has watched it for [`RENDITION_IDLE`].
    fn check_rendition(&mut self) {
        let layer = self.rendition_layer();
        let Some(r) = self.rendition.as_mut() else { return };
        if self.fanout.layer_wanted(layer) {
            r.idle_since = None;
            return;
        }
        let since = *r.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= RENDITION_IDLE {
            info!(parent: &self.span, "lower rendition stopped: no viewer needs it");
            self.rendition = None;
            self.fanout.set_layers(usize::from(layer));
        }
    }

    fn request_keyframe(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        // A keyframe already asked for and not yet arrived serves this request too.
        if self.keyframe_in_flight && self.last_keyframe_request.is_some_and(|t| now - t < KEYFRAME_IN_FLIGHT)
        {
            return;
        }
        if self.pli_deferred(None, now, ctx) {
            return;
        }
        if self.link.peer.request_keyframe(None) {
            crate::metrics::metrics().keyframe_requests.inc();
            self.last_keyframe_request = Some(now);
            self.last_pli = Some(now);
            self.keyframe_in_flight = true;
            self.drive(ctx);
        }
    }

    /// Whether a keyframe request (of `layer`, or None: of the whole stream) must wait, being
    /// within [`KEYFRAME_MIN_INTERVAL`] of the last one sent to the browser. It is then made
    /// again at the interval's end, once however many wait.
    fn pli_deferred(&mut self, layer: Option<u8>, now: Instant, ctx: &mut Context<Self>) -> bool {
        let Some(next) = self.last_pli.map(|t| t + KEYFRAME_MIN_INTERVAL).filter(|&next| now < next) else {
            return false;
        };
        let bit = layer.map_or(1 << 7, |l| 1 << usize::from(l).min(crate::fanout::MAX_LAYERS - 1));
        if self.requests_deferred & bit == 0 {
            self.requests_deferred |= bit;
            ctx.run_later(next - now, move |act, ctx| {
                act.requests_deferred &= !bit;
                match layer {
                    Some(l) => act.layer_keyframe_wanted(l, ctx),
                    None => act.request_keyframe(ctx),
                }
            });
        }
        true
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(CONNECT_TIMEOUT, |act, ctx| {
            if act.state == State::Connecting {
                act.end(StreamStatus::Failed, info::ICE_TIMEOUT, ctx);
            }
        });
        ctx.run_interval(Duration::from_secs(5), |act, _| act.check_rendition());
        self.drive(ctx);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.close_link();
        Running::Stop
    }
}

impl PeerActor for Publisher {
    fn link(&mut self) -> &mut PeerLink {
        &mut self.link
    }

    fn on_peer_event(&mut self, ev: PeerEvent, ctx: &mut Context<Self>) {
        match ev {
            PeerEvent::Connected => {
                if self.state == State::Connecting {
                    self.state = State::Live;
                    info!(parent: &self.span, "publishing");
                    self.set_status(StreamStatus::Publishing, "");
                }
            }
            PeerEvent::Frame(f) => self.frame(0, f, ctx),
            PeerEvent::LayerFrame(rid, f) => self.layer_frame(rid, f, ctx),
            PeerEvent::SimulcastRids(rids) => self.announced = rids,
            PeerEvent::Disconnected => self.peer_gone(EngineError::Closed, ctx),
            PeerEvent::KeyframeRequest => {}
            PeerEvent::AudioBytes(b) => self.meter.audio(b, Instant::now()),
            PeerEvent::Bandwidth(_) => {}
            // The best simulcast layer's counters are the stream's.
            PeerEvent::LayerStats(rid, s) if self.layers.first().is_some_and(|(r, _)| *r == rid) => {
                self.on_peer_event(PeerEvent::VideoStats(s), ctx)
            }
            PeerEvent::LayerStats(..) => {}
            PeerEvent::VideoStats(s) => {
                let (w, h) = (self.info.width, self.info.height);
                if let Some(rate) = self.meter.sample(s, Instant::now(), w, h) {
                    self.registry.update(&self.info.media_session_id, |i| i.metrics = Some(rate));
                    let id = self.info.media_session_id.clone();
                    self.rates.do_send(VideoRateNotice { media_session_id: id, inbound: true, rate });
                    let limit = self.link.socket.publish_limit();
                    let over = limit > 0 && rate.video_rate > limit;
                    self.over_limit = if over { self.over_limit + 1 } else { 0 };
                    if self.over_limit >= OVER_LIMIT_SECONDS {
                        warn!(parent: &self.span, bitrate = rate.video_rate, "publisher over the video bitrate limit");
                        self.end(StreamStatus::Failed, info::BITRATE_OVER_LIMIT, ctx);
                    }
                }
            }
            PeerEvent::BadFrame(why) => {
                // Viewers missed a frame: hold their video until a fresh keyframe.
                debug!(parent: &self.span, %why, "malformed frame from publisher dropped");
                self.fanout.lost_frame();
                if self.state == State::Live {
                    self.request_keyframe(ctx);
                }
            }
        }
    }

    fn on_peer_closed(&mut self, err: EngineError, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, error = %err, "publisher peer closed");
        let reason = if self.state == State::Live { info::ICE_KEEP_ALIVE } else { info::FAILED_BY_ERROR };
        self.end(StreamStatus::Failed, reason, ctx);
    }
}

impl Handler<Datagram> for Publisher {
    type Result = ();
    fn handle(&mut self, d: Datagram, ctx: &mut Context<Self>) {
        self.on_datagram(d, ctx);
    }
}

impl Source for Publisher {
    fn fanout(&mut self) -> &mut FanOut {
        &mut self.fanout
    }

    fn has_video(&self) -> bool {
        self.info.has_video
    }

    fn has_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// A late joiner learns the publisher's current mute state.
    fn viewer_joining(&mut self, m: &AddSubscriber) {
        if let Some((id, events)) = &m.events {
            for (kind, state) in [("audio", self.info.audio_state), ("video", self.info.video_state)] {
                if let Some(MuteState { muted: true }) = state {
                    events.do_send(StreamEventNotice {
                        media_session_id: id.clone(),
                        kind: format!("{kind}Muted"),
                        payload: self.mute_payload(Value::Null),
                    });
                }
            }
        }
    }

    fn keyframe_wanted(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Live {
            self.request_keyframe(ctx);
        }
    }

    /// A viewer cannot carry the stream, or with simulcast its lowest layer: re-encode that
    /// H.264 at a lower bitrate as one more layer (VP8 has no encoder here).
    fn lower_layer_wanted(&mut self, ctx: &mut Context<Self>) {
        let simulcast_unsettled = !self.layers.is_empty() && !self.settled;
        if self.rendition.is_some()
            || simulcast_unsettled
            || self.layers.len() >= crate::fanout::MAX_LAYERS
            || self.info.video_codec != "H264"
        {
            return;
        }
        let from = self.rendition_layer() - 1;
        let rate = self.fanout.layer_rates().get(usize::from(from)).copied().unwrap_or(0);
        if rate == 0 || self.state != State::Live {
            return;
        }
        let settings = crate::video_transcode::TranscodeSettings {
            bitrate: Some((rate as f64 * RENDITION_SHARE) as u32),
            keyframe_interval_s: RENDITION_KEYFRAME_INTERVAL_S,
            ..Default::default()
        };
        match crate::transcoder::TranscoderThread::spawn(&self.info.name, settings, ctx.address().recipient())
        {
            Ok(thread) => {
                info!(parent: &self.span, bitrate = settings.bitrate, from, "lower rendition started for a viewer on a slow link");
                self.rendition = Some(Rendition::new(thread));
                self.fanout.set_layers(usize::from(from) + 2);
                self.fanout.expect_rate(from + 1, settings.bitrate.map_or(0, u64::from));
                // Its decoder starts at a keyframe.
                self.layer_keyframe_wanted(from, ctx);
            }
            Err(e) => debug!(parent: &self.span, error = %e, "no lower rendition"),
        }
    }

    /// A viewer switches to `layer`: a keyframe of that layer only (a keyframe is the
    /// biggest frame there is, and the viewers of the other layers would pay for it on their
    /// links). While one is on its way (up to [`KEYFRAME_IN_FLIGHT`]) it serves the request; a
    /// request within [`KEYFRAME_MIN_INTERVAL`] of the last to the browser waits for its end.
    fn layer_keyframe_wanted(&mut self, layer: u8, ctx: &mut Context<Self>) {
        let rendition = self.rendition_layer();
        if let Some(r) = self.rendition.as_mut().filter(|_| layer == rendition) {
            if r.fed {
                r.thread.request_keyframe();
                debug!(parent: &self.span, layer, "keyframe asked of the lower rendition");
                return;
            }
            // Its decoder has not started: it waits for a keyframe of the layer it is made from.
            return self.layer_keyframe_wanted(rendition - 1, ctx);
        }
        let Some(rid) = self.layers.get(usize::from(layer)).map(|(r, _)| r.clone()) else {
            return self.keyframe_wanted(ctx);
        };
        let now = Instant::now();
        let i = usize::from(layer).min(crate::fanout::MAX_LAYERS - 1);
        if self.layer_keyframe_asked[i].is_some_and(|t| now - t < KEYFRAME_IN_FLIGHT)
            || self.state != State::Live
        {
            return;
        }
        if self.pli_deferred(Some(layer), now, ctx) {
            return;
        }
        self.layer_keyframe_asked[i] = Some(now);
        self.last_pli = Some(now);
        debug!(parent: &self.span, layer, %rid, "keyframe asked of a simulcast layer");
        if self.link.peer.request_keyframe(Some(&rid)) {
            crate::metrics::metrics().keyframe_requests.inc();
            self.drive(ctx);
        }
    }

    /// The browser answers a PLI within a round trip: faster than decoding seconds of held GOP.
    /// A fresh one (its keyframe under [`crate::fanout::FRESH_GOP`] old) starts a viewer anyway.
    fn starts_from_gop(&self) -> bool {
        false
    }

    fn stop(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        let status = if self.state == State::Connecting && reason != info::STOPPED_BY_USER {
            StreamStatus::Failed
        } else {
            StreamStatus::Unpublished
        };
        self.end(status, reason, ctx);
    }
}

crate::source_handlers!(Publisher);

/// Frames of the lower rendition: the fan-out's last layer.
impl Handler<crate::transcoder::Transcoded> for Publisher {
    type Result = ();
    fn handle(
        &mut self,
        crate::transcoder::Transcoded(frames): crate::transcoder::Transcoded,
        _: &mut Context<Self>,
    ) {
        if self.rendition.is_none() || self.state != State::Live {
            return;
        }
        let layer = self.rendition_layer();
        if let Some(r) = self.rendition.as_mut().filter(|r| !r.out) {
            r.out = true;
            debug!(parent: &self.span, keyframe = frames.first().is_some_and(|f| f.keyframe), "lower rendition: first frames out");
        }
        for f in frames {
            if self.fanout.forward_layer(layer, f) {
                if let Some(r) = self.rendition.as_mut() {
                    r.thread.request_keyframe();
                }
            }
        }
    }
}

/// The session registered the stream: the publisher holds the registration from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold(pub Registration);

impl Handler<Hold> for Publisher {
    type Result = ();
    fn handle(&mut self, Hold(r): Hold, _: &mut Context<Self>) {
        if self.state != State::Ended {
            self.registration = Some(r);
        } // else: dropped here, which unregisters the stream
    }
}

/// `sendStreamEvent` from the publishing client: relayed to every subscriber's client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RelayEvent {
    pub kind: String,
    pub payload: Value,
}

impl Handler<RelayEvent> for Publisher {
    type Result = ();
    fn handle(&mut self, mut m: RelayEvent, _: &mut Context<Self>) {
        if let Some((kind, muted)) = mute_change(&m.kind) {
            // WCS pages (Media Devices Manager) read `payload.streamName` of mute notices.
            m.payload = self.mute_payload(m.payload);
            let state = Some(MuteState { muted });
            let updated = self.registry.update(&self.info.media_session_id, |i| match kind {
                "audio" => i.audio_state = state,
                _ => i.video_state = state,
            });
            if let Some(u) = updated {
                self.info = u;
            }
        }
        self.fanout.relay_event(&m.kind, &m.payload);
        if self.fanout.is_empty() {
            debug!(parent: &self.span, kind = %m.kind, "stream event with no subscribers to relay to");
        }
    }
}
