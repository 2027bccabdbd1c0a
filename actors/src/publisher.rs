//! The publisher actor: one per published stream.
//!
//! Owns the publishing browser's engine peer and the list of subscribers. Every frame the
//! browser sends is shared (`Arc`) with each subscriber actor, never decoded. Answers
//! [`AddSubscriber`], [`RemoveSubscriber`], [`RequestKeyframe`], [`RelayEvent`], [`Stop`] and
//! [`Datagram`]. Reports its status (PUBLISHING, UNPUBLISHED, FAILED) to its session.
//!
//! Keyframes: Chromium's encoder sends none on its own after the first, so a joining viewer
//! would wait forever. The publisher asks the browser for one (PLI) whenever a subscriber
//! connects or asks, at most once per [`KEYFRAME_MIN_INTERVAL`]; a request inside that window is
//! deferred to its end rather than lost.
//!
//! Backpressure: frames go to subscribers with `try_send` on a bounded mailbox. A subscriber whose
//! mailbox is full loses that frame and gets no more video until the next keyframe (which is then
//! requested), so a slow viewer never stalls the publisher or other viewers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;
use tracing::{debug, info, info_span};

use crate::engine::{Frame, FrameKind, PeerEvent};
use crate::error::EngineError;
use crate::media_socket::Datagram;
use crate::messages::{StatusChanged, Stop, StreamEventNotice};
use crate::peer_link::{PeerActor, PeerLink};
use crate::protocol::{info, mute_change, MuteState, StreamInfo, StreamStatus};
use crate::registry::Registry;
use crate::subscriber::{Forward, PublisherGone, Subscriber};

/// Minimum spacing of keyframe requests sent to the publishing browser.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(300);
/// A publisher that has not connected (ICE + DTLS) by then is failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Lifecycle: `Connecting` until ICE+DTLS are up, `Live` while media flows, `Ended` once a final
/// status was sent (the actor is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Live,
    Ended,
}

struct SubscriberLink {
    addr: Addr<Subscriber>,
    media_session_id: String,
    session: Recipient<StreamEventNotice>,
    /// No video goes out until a keyframe: set at join and after a dropped frame.
    wait_keyframe: bool,
}

pub struct Publisher {
    link: PeerLink,
    info: StreamInfo,
    session: Recipient<StatusChanged>,
    registry: Arc<Registry>,
    state: State,
    subscribers: HashMap<u64, SubscriberLink>,
    last_keyframe_request: Option<Instant>,
    keyframe_request_deferred: bool,
    span: tracing::Span,
    frames_in: u64,
}

impl Publisher {
    pub fn new(
        link: PeerLink,
        info: StreamInfo,
        session: Recipient<StatusChanged>,
        registry: Arc<Registry>,
    ) -> Self {
        let span = info_span!("publisher", stream = %info.name, id = %info.media_session_id);
        Publisher {
            link,
            info,
            session,
            registry,
            state: State::Connecting,
            subscribers: HashMap::new(),
            last_keyframe_request: None,
            keyframe_request_deferred: false,
            span,
            frames_in: 0,
        }
    }

    fn set_status(&mut self, status: StreamStatus, text: &str) {
        let updated = self.registry.update(&self.info.media_session_id, |i| {
            i.status = status;
            i.info = text.to_string();
        });
        self.info.status = status;
        self.info.info = text.to_string();
        self.session
            .do_send(StatusChanged(updated.unwrap_or_else(|| self.info.clone())));
    }

    /// Send the final status, tell every subscriber, free the name, stop.
    fn end(&mut self, status: StreamStatus, reason: &str, ctx: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        info!(parent: &self.span, %status, reason, frames = self.frames_in, subscribers = self.subscribers.len(), "publisher ended");
        self.registry
            .release_name(&self.info.name, &self.info.media_session_id);
        for (_, s) in self.subscribers.drain() {
            s.addr.do_send(PublisherGone {
                reason: info::STOPPED_BY_PUBLISHER,
            });
        }
        self.set_status(status, reason);
        self.registry.remove_session(&self.info.media_session_id);
        ctx.stop();
    }

    fn request_keyframe(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if let Some(last) = self.last_keyframe_request {
            let next = last + KEYFRAME_MIN_INTERVAL;
            if now < next {
                if !self.keyframe_request_deferred {
                    self.keyframe_request_deferred = true;
                    ctx.run_later(next - now, |act, ctx| {
                        act.keyframe_request_deferred = false;
                        act.request_keyframe(ctx);
                    });
                }
                return;
            }
        }
        if self.link.peer.request_keyframe() {
            self.last_keyframe_request = Some(now);
            self.drive(ctx);
        }
    }

    fn forward(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        self.frames_in += 1;
        let frame = Arc::new(frame);
        let mut want_keyframe = false;
        let mut gone = Vec::new();
        for (id, s) in self.subscribers.iter_mut() {
            if frame.kind == FrameKind::Video {
                if s.wait_keyframe && !frame.keyframe {
                    continue;
                }
                s.wait_keyframe = false;
            }
            match s.addr.try_send(Forward(frame.clone())) {
                Ok(()) => {}
                Err(SendError::Full(_)) => {
                    s.wait_keyframe = true;
                    want_keyframe = true;
                }
                Err(SendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            self.subscribers.remove(&id);
        }
        if want_keyframe {
            self.request_keyframe(ctx);
        }
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
            PeerEvent::Frame(f) => {
                if self.state == State::Live {
                    self.forward(f, ctx)
                }
            }
            PeerEvent::Disconnected => self.end(StreamStatus::Failed, info::ICE_KEEP_ALIVE, ctx),
            PeerEvent::KeyframeRequest => {}
            PeerEvent::BadFrame(why) => {
                // Viewers missed a frame: hold their video until a fresh keyframe.
                debug!(parent: &self.span, %why, "malformed frame from publisher dropped");
                for s in self.subscribers.values_mut() {
                    s.wait_keyframe = true;
                }
                if self.state == State::Live {
                    self.request_keyframe(ctx);
                }
            }
        }
    }

    fn on_peer_closed(&mut self, err: EngineError, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, error = %err, "publisher peer closed");
        let reason = if self.state == State::Live {
            info::ICE_KEEP_ALIVE
        } else {
            info::FAILED_BY_ERROR
        };
        self.end(StreamStatus::Failed, reason, ctx);
    }
}

impl Handler<Datagram> for Publisher {
    type Result = ();
    fn handle(&mut self, d: Datagram, ctx: &mut Context<Self>) {
        self.on_datagram(d, ctx);
    }
}

impl Handler<Stop> for Publisher {
    type Result = ();
    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) {
        let status = if self.state == State::Connecting && msg.reason != info::STOPPED_BY_USER {
            StreamStatus::Failed
        } else {
            StreamStatus::Unpublished
        };
        self.end(status, msg.reason, ctx);
    }
}

/// A viewer joins this stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddSubscriber {
    pub id: u64,
    pub addr: Addr<Subscriber>,
    pub media_session_id: String,
    pub session: Recipient<StreamEventNotice>,
}

impl Handler<AddSubscriber> for Publisher {
    type Result = ();
    fn handle(&mut self, m: AddSubscriber, _: &mut Context<Self>) {
        if self.state == State::Ended {
            m.addr.do_send(PublisherGone {
                reason: info::STOPPED_BY_PUBLISHER,
            });
            return;
        }
        // A late joiner learns the publisher's current mute state.
        for (kind, state) in [
            ("audio", self.info.audio_state),
            ("video", self.info.video_state),
        ] {
            if let Some(MuteState { muted: true }) = state {
                m.session.do_send(StreamEventNotice {
                    media_session_id: m.media_session_id.clone(),
                    kind: format!("{kind}Muted"),
                    payload: Value::Null,
                });
            }
        }
        self.subscribers.insert(
            m.id,
            SubscriberLink {
                addr: m.addr,
                media_session_id: m.media_session_id,
                session: m.session,
                wait_keyframe: true,
            },
        );
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveSubscriber {
    pub id: u64,
}

impl Handler<RemoveSubscriber> for Publisher {
    type Result = ();
    fn handle(&mut self, m: RemoveSubscriber, _: &mut Context<Self>) {
        self.subscribers.remove(&m.id);
    }
}

/// A viewer needs a keyframe (it just connected, or its decoder asked with PLI/FIR).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestKeyframe;

impl Handler<RequestKeyframe> for Publisher {
    type Result = ();
    fn handle(&mut self, _: RequestKeyframe, ctx: &mut Context<Self>) {
        if self.state == State::Live {
            self.request_keyframe(ctx);
        }
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
    fn handle(&mut self, m: RelayEvent, _: &mut Context<Self>) {
        if let Some((kind, muted)) = mute_change(&m.kind) {
            let state = Some(MuteState { muted });
            let updated = self
                .registry
                .update(&self.info.media_session_id, |i| match kind {
                    "audio" => i.audio_state = state,
                    _ => i.video_state = state,
                });
            if let Some(u) = updated {
                self.info = u;
            }
        }
        for s in self.subscribers.values() {
            s.session.do_send(StreamEventNotice {
                media_session_id: s.media_session_id.clone(),
                kind: m.kind.clone(),
                payload: m.payload.clone(),
            });
        }
        if self.subscribers.is_empty() {
            debug!(parent: &self.span, kind = %m.kind, "stream event with no subscribers to relay to");
        }
    }
}
