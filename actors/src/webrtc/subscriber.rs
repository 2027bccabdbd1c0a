//! The subscriber actor: one per viewer of a stream.
//!
//! Owns the viewer's engine peer. Writes the frames its stream source shares ([`Forward`]) into
//! the peer, which packetizes, encrypts and answers the viewer's NACKs. Forwards the viewer's
//! keyframe requests (PLI/FIR) to the source, which rate-limits them. The source is any actor
//! behind a [`StreamSource`] (a browser publisher, a file, an encoder). Answers [`Forward`],
//! [`SourceEnded`], [`Stop`] and [`Datagram`]; reports PLAYING and STOPPED/FAILED to its session.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, info_span};

use crate::engine::PeerEvent;
use crate::error::EngineError;
use crate::media::FrameKind;
use crate::media_socket::Datagram;
use crate::messages::{
    BandwidthGoal, ClientRecipients, Forward, RemoveSubscriber, RequestKeyframe, SinkReady, SourceEnded,
    StatusChanged, Stop, StreamEventNotice, StreamSource, VideoRateNotice, ViewerBandwidth,
};
use crate::peer_link::{PeerActor, PeerLink};
use crate::protocol::{info, StreamInfo, StreamStatus};
use crate::registry::Registry;
use crate::video_rate::RateMeter;

/// Frames queued for one subscriber before the publisher starts dropping for it (about 3 s of
/// 30 fps video plus audio). See the backpressure policy in [`crate::fanout`].
pub const FORWARD_QUEUE: usize = 256;
/// Video waiting this long in the viewer's send queue (its link carries less than the stream
/// sends, even at the lowest layer) sheds video until a keyframe finds the queue half empty:
/// fewer frames, all decodable, instead of a queue that grows into seconds of delay and loss.
pub const VIDEO_BACKLOG_MAX: Duration = Duration::from_millis(250);
/// How long the backlog must stay over [`VIDEO_BACKLOG_MAX`] before video is shed: a keyframe
/// alone queues for longer than that on a thin link (str0m paces at 1.1 times its estimate,
/// which stays near what is sent), and drains; a link slower than the stream never drains.
const BACKLOG_PERSISTS: Duration = Duration::from_secs(1);
/// A backlog this deep sheds video at once.
const BACKLOG_LIMIT: Duration = Duration::from_millis(1500);
/// No shedding this long after a viewer's first video frame when that frame was held (the GOP a
/// source keeps for instant starts): the GOP leaves in one burst, faster than real time.
const START_BURST_GRACE: Duration = Duration::from_secs(2);
/// A first frame captured this long ago comes from a held GOP.
const HELD_FRAME_AGE: Duration = Duration::from_millis(300);
/// How often a viewer's bandwidth estimate goes to its source (which picks its simulcast layer);
/// a drop of more than a sixth goes at once.
pub const BANDWIDTH_REPORT: Duration = Duration::from_millis(250);
/// A viewer that has not connected (ICE + DTLS) by then is failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Playing,
    Ended,
}

pub struct Subscriber {
    id: u64,
    link: PeerLink,
    info: StreamInfo,
    session: Recipient<StatusChanged>,
    events: Recipient<StreamEventNotice>,
    /// Where the once-a-second `outboundVideoRate` reports go (the viewer's client).
    rates: Recipient<VideoRateNotice>,
    meter: RateMeter,
    /// The picture size of the video sent, from its keyframes.
    size: (u32, u32),
    registry: Arc<Registry>,
    source: StreamSource,
    state: State,
    /// Video is written only from a keyframe on, so the viewer's decoder starts clean.
    video_started: bool,
    /// While video is shed: a keyframe was asked for since.
    keyframe_asked: bool,
    /// Until when a queue is expected, not a sign of a slow link: the held GOP a viewer starts
    /// with, the keyframe video resumes with (None before the first video frame).
    shed_grace_until: Option<std::time::Instant>,
    /// Since when the video backlog has been over [`VIDEO_BACKLOG_MAX`].
    backlog_since: Option<std::time::Instant>,
    /// While video is shed: the layer it was shed on.
    shed_layer: Option<u8>,
    frames_out: u64,
    /// The simulcast layer of the last video frame, and how far this viewer's video timestamps
    /// are shifted from the source's (the layers of a simulcast stream count time each from its
    /// own origin; the viewer sees one timeline).
    layer: Option<u8>,
    ts_shift: u64,
    /// The last video frame sent: its time on this viewer's stream and when it was captured.
    last_video: Option<(u64, std::time::Instant)>,
    /// The send-side bandwidth estimate towards this viewer (bit/s; 0 before the first).
    bandwidth: u64,
    /// The estimate last reported to the source, and what the estimator aims for.
    reported: u64,
    goal: Option<BandwidthGoal>,
    /// Reports sent: every other one (twice a second), a viewer below the best layer nudges its estimator to
    /// probe ([`Subscriber::report_bandwidth`]).
    reports: u64,
    /// Counted in `sluice_actors` while alive.
    _live: crate::metrics::Live,
    span: tracing::Span,
}

impl Subscriber {
    pub fn new(
        id: u64,
        link: PeerLink,
        info: StreamInfo,
        client: ClientRecipients,
        registry: Arc<Registry>,
        source: StreamSource,
    ) -> Self {
        let ClientRecipients { status: session, events, rates } = client;
        let span = info_span!("subscriber", stream = %info.name, id = %info.media_session_id);
        Subscriber {
            id,
            link,
            info,
            session,
            events,
            rates,
            meter: RateMeter::default(),
            size: (0, 0),
            registry,
            source,
            state: State::Connecting,
            video_started: false,
            keyframe_asked: false,
            shed_grace_until: None,
            backlog_since: None,
            shed_layer: None,
            frames_out: 0,
            layer: None,
            ts_shift: 0,
            last_video: None,
            bandwidth: 0,
            reported: 0,
            goal: None,
            reports: 0,
            _live: crate::metrics::Live::new("viewer"),
            span,
        }
    }

    fn set_status(&mut self, status: StreamStatus, text: &str) {
        let info = self.registry.set_status(&mut self.info, status, text);
        self.session.do_send(StatusChanged(info));
    }

    /// Tell the source this viewer's bandwidth estimate; apply the goal it answers.
    fn report_bandwidth(&mut self, ctx: &mut Context<Self>) {
        if self.bandwidth == 0 || self.state != State::Playing {
            return;
        }
        self.reported = self.bandwidth;
        self.reports += 1;
        let m = ViewerBandwidth { id: self.id, bps: self.bandwidth };
        actix::fut::wrap_future::<_, Self>(self.source.bandwidth.send(m))
            .map(|res, act, ctx| {
                let Ok(Some(mut goal)) = res else { return };
                // Below the best layer, the estimate stays near what is sent unless the link is
                // probed: str0m probes when the desired rate goes up, so every other report
                // (twice a second) lowers it a little and the next raises it back.
                if act.layer.is_some_and(|l| l > 0) && act.reports % 2 == 1 {
                    goal.desired -= 1_000;
                }
                if act.goal != Some(goal) && !act.link.gone {
                    act.goal = Some(goal);
                    act.link.peer.set_bandwidth_goal(goal.minimum, goal.desired);
                    act.drive(ctx);
                }
            })
            .spawn(ctx);
    }

    /// The time a frame goes out with on this viewer's stream. A video frame of another
    /// simulcast layer than the last (a switch, at its keyframe) continues the timeline from
    /// the last frame sent, by the time between their captures.
    fn out_time(&mut self, frame: &crate::media::Frame, layer: u8) -> u64 {
        if frame.kind() != FrameKind::Video {
            return frame.rtp_time;
        }
        if self.layer.is_some_and(|l| l != layer) {
            if let Some((last, at)) = self.last_video {
                let gap = frame.captured.saturating_duration_since(at).as_micros() as u64 * 9 / 100;
                self.ts_shift = last.wrapping_add(gap.max(1)).wrapping_sub(frame.rtp_time);
            }
        }
        self.layer = Some(layer);
        let t = frame.rtp_time.wrapping_add(self.ts_shift);
        self.last_video = Some((t, frame.captured));
        t
    }

    fn end(&mut self, status: StreamStatus, reason: &str, ctx: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        info!(parent: &self.span, %status, reason, frames = self.frames_out, "subscriber ended");
        if status == StreamStatus::Failed {
            crate::metrics::metrics().peer_failed("viewer", reason);
        }
        self.source.leave.do_send(RemoveSubscriber { id: self.id });
        let info = self.registry.finish(&mut self.info, status, reason);
        self.session.do_send(StatusChanged(info));
        ctx.stop();
    }
}

impl Actor for Subscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(FORWARD_QUEUE);
        // Join the source. If it is already gone, the send fails and the viewer is stopped
        // exactly as if the source had stopped after the join.
        let events = Some((self.info.media_session_id.clone(), self.events.clone()));
        self.source.attach(self.id, events, ctx, |act: &mut Self, ctx| {
            act.end(StreamStatus::Stopped, info::STOPPED_BY_PUBLISHER, ctx)
        });
        ctx.run_later(CONNECT_TIMEOUT, |act, ctx| {
            if act.state == State::Connecting {
                act.end(StreamStatus::Failed, info::ICE_TIMEOUT, ctx);
            }
        });
        ctx.run_interval(BANDWIDTH_REPORT, |act, ctx| act.report_bandwidth(ctx));
        self.drive(ctx);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.close_link();
        Running::Stop
    }
}

impl PeerActor for Subscriber {
    fn link(&mut self) -> &mut PeerLink {
        &mut self.link
    }

    fn on_peer_event(&mut self, ev: PeerEvent, ctx: &mut Context<Self>) {
        match ev {
            PeerEvent::Connected => {
                if self.state == State::Connecting {
                    self.state = State::Playing;
                    // createDate is when playStream arrived.
                    let joined_ms = crate::protocol::now_ms().saturating_sub(self.info.create_date);
                    crate::metrics::metrics().join_seconds.observe(joined_ms as f64 / 1000.0);
                    info!(parent: &self.span, joined_ms, "playing");
                    // The PLAYING info keeps a note made at the request (a play size not applied).
                    let note = std::mem::take(&mut self.info.info);
                    self.set_status(StreamStatus::Playing, &note);
                    // The source's held GOP at once (instant start), and a fresh keyframe.
                    self.source.ready.do_send(SinkReady { id: self.id });
                }
            }
            PeerEvent::KeyframeRequest => {
                debug!(parent: &self.span, layer = ?self.layer, "the viewer asks for a keyframe");
                self.source.keyframe.do_send(RequestKeyframe(Some(self.id)));
            }
            PeerEvent::Disconnected => self.peer_gone(EngineError::Closed, ctx),
            PeerEvent::AudioBytes(b) => self.meter.audio(b, std::time::Instant::now()),
            PeerEvent::VideoStats(s) => {
                let (w, h) = self.size;
                if let Some(mut rate) = self.meter.sample(s, std::time::Instant::now(), w, h) {
                    rate.bandwidth_estimate = Some(self.bandwidth).filter(|&b| b > 0);
                    rate.layer = self.layer;
                    self.registry.update(&self.info.media_session_id, |i| i.metrics = Some(rate));
                    let id = self.info.media_session_id.clone();
                    self.rates.do_send(VideoRateNotice { media_session_id: id, inbound: false, rate });
                }
            }
            PeerEvent::Bandwidth(bps) => {
                self.bandwidth = bps;
                if bps < self.reported.saturating_sub(self.reported / 6) {
                    self.report_bandwidth(ctx);
                }
            }
            // A viewer sends no media we use.
            PeerEvent::Frame(_)
            | PeerEvent::LayerFrame(..)
            | PeerEvent::LayerStats(..)
            | PeerEvent::SimulcastRids(_)
            | PeerEvent::BadFrame(_) => {}
        }
    }

    fn on_peer_closed(&mut self, err: EngineError, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, error = %err, "subscriber peer closed");
        let reason = if self.state == State::Playing { info::ICE_KEEP_ALIVE } else { info::FAILED_BY_ERROR };
        self.end(StreamStatus::Failed, reason, ctx);
    }
}

impl Handler<Datagram> for Subscriber {
    type Result = ();
    fn handle(&mut self, d: Datagram, ctx: &mut Context<Self>) {
        self.on_datagram(d, ctx);
    }
}

impl Handler<Forward> for Subscriber {
    type Result = ();
    fn handle(&mut self, Forward(frame, packets): Forward, ctx: &mut Context<Self>) {
        if self.state != State::Playing {
            return;
        }
        if frame.kind() == FrameKind::Video {
            let now = std::time::Instant::now();
            // Not while the held GOP that started the viewer is still leaving (a burst by design).
            let held = now.saturating_duration_since(frame.captured) > HELD_FRAME_AGE;
            let grace =
                *self.shed_grace_until.get_or_insert(if held { now + START_BURST_GRACE } else { now });
            let backlog = if now >= grace {
                self.link.peer.video_backlog(now).unwrap_or_default()
            } else {
                Duration::ZERO
            };
            let behind_since = if backlog > VIDEO_BACKLOG_MAX {
                *self.backlog_since.get_or_insert(now)
            } else {
                self.backlog_since = None;
                now
            };
            let persists = now.saturating_duration_since(behind_since) >= BACKLOG_PERSISTS;
            if self.video_started && (persists || backlog > BACKLOG_LIMIT) {
                debug!(parent: &self.span, ?backlog, "viewer's link behind: video shed until a keyframe");
                crate::metrics::metrics().video_shed.inc();
                self.backlog_since = None;
                self.video_started = false;
                self.keyframe_asked = false;
                self.shed_layer = self.layer;
            }
            if !self.video_started {
                // A keyframe of a lower layer than the one shed (the viewer is moving down)
                // resumes at once: it is what the link can carry, so the queue drains behind it.
                let lower = frame.keyframe && self.shed_layer.is_some_and(|l| packets.layer > l);
                if backlog > VIDEO_BACKLOG_MAX / 2 && !lower {
                    return;
                }
                if !frame.keyframe {
                    // The queue has drained: the next keyframe resumes video.
                    if !std::mem::replace(&mut self.keyframe_asked, true) && self.frames_out > 0 {
                        self.source.keyframe.do_send(RequestKeyframe(Some(self.id)));
                    }
                    return;
                }
                self.video_started = true;
                self.shed_layer = None;
                // The keyframe takes its time through a link that was too slow: no shedding
                // before it can have left at the estimated rate.
                let bps = self.bandwidth.max(50_000) as f64;
                let keyframe_time = Duration::from_secs_f64(frame.data.len() as f64 * 8.0 / bps);
                // Nor before what was queued ahead of it (resuming on a lower layer) has left.
                self.shed_grace_until = Some(grace.max(now + keyframe_time + backlog));
            }
        }
        let time = self.out_time(&frame, packets.layer);
        match self.link.peer.write_frame(&frame, &packets, time) {
            Ok(true) => {
                self.frames_out += 1;
                if frame.kind() == FrameKind::Video {
                    self.meter.frame();
                    if let Some(size) = frame.dimensions() {
                        self.size = size;
                    }
                }
                self.drive(ctx);
            }
            Ok(false) => {}
            Err(e) => self.peer_gone(e, ctx),
        }
    }
}

impl Handler<SourceEnded> for Subscriber {
    type Result = ();
    fn handle(&mut self, m: SourceEnded, ctx: &mut Context<Self>) {
        self.end(StreamStatus::Stopped, m.reason, ctx);
    }
}

impl Handler<Stop> for Subscriber {
    type Result = ();
    fn handle(&mut self, m: Stop, ctx: &mut Context<Self>) {
        self.end(StreamStatus::Stopped, m.reason, ctx);
    }
}
