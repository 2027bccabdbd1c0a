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
    ClientRecipients, Forward, RemoveSubscriber, RequestKeyframe, SinkReady, SourceEnded, StatusChanged,
    Stop, StreamEventNotice, StreamSource, VideoRateNotice,
};
use crate::video_rate::RateMeter;
use crate::peer_link::{PeerActor, PeerLink};
use crate::protocol::{info, StreamInfo, StreamStatus};
use crate::registry::Registry;

/// Frames queued for one subscriber before the publisher starts dropping for it (about 3 s of
/// 30 fps video plus audio). See the backpressure policy in [`crate::fanout`].
pub const FORWARD_QUEUE: usize = 256;
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
    frames_out: u64,
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
            frames_out: 0,
            _live: crate::metrics::Live::new("viewer"),
            span,
        }
    }

    fn set_status(&mut self, status: StreamStatus, text: &str) {
        let info = self.registry.set_status(&mut self.info, status, text);
        self.session.do_send(StatusChanged(info));
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
            PeerEvent::KeyframeRequest => self.source.keyframe.do_send(RequestKeyframe),
            PeerEvent::Disconnected => self.peer_gone(EngineError::Closed, ctx),
            PeerEvent::AudioBytes(b) => self.meter.audio(b, std::time::Instant::now()),
            PeerEvent::VideoStats(s) => {
                let (w, h) = self.size;
                if let Some(rate) = self.meter.sample(s, std::time::Instant::now(), w, h) {
                    self.registry.update(&self.info.media_session_id, |i| i.metrics = Some(rate));
                    let id = self.info.media_session_id.clone();
                    self.rates.do_send(VideoRateNotice { media_session_id: id, inbound: false, rate });
                }
            }
            PeerEvent::Frame(_) | PeerEvent::BadFrame(_) => {} // a viewer sends no media we use
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
        if frame.kind() == FrameKind::Video && !self.video_started {
            if !frame.keyframe {
                return;
            }
            self.video_started = true;
        }
        match self.link.peer.write_frame(&frame, &packets) {
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
