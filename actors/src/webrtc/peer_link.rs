//! What publisher and subscriber actors share: an engine [`Peer`], the media socket it sends on,
//! and the one timer that re-arms the engine. [`PeerActor::drive`] is the sans-IO loop: after
//! every input (datagram, timeout, write, keyframe request), drain every output until the engine
//! names its next deadline, then arm the timer for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::engine::{Peer, PeerEvent, MAX_TIMER};
use crate::error::EngineError;
use crate::media_socket::{Datagram, MediaSocket, ReplyFrom};

/// A browser closes its peer connection right after sending `unPublishStream`/`stopStream`, so
/// its DTLS close can overtake the stop request. A peer that goes away is only declared failed
/// after this grace period, in which a stop request ends it normally.
pub const PEER_CLOSE_GRACE: Duration = Duration::from_millis(1500);

pub struct PeerLink {
    pub peer: Peer,
    /// The engine reported the peer closed or disconnected; nothing is polled any more.
    pub gone: bool,
    pub socket: Arc<MediaSocket>,
    pub ufrag: String,
    timer: Option<(Instant, SpawnHandle)>,
    events: Vec<PeerEvent>,
    /// What one drive produced, sent together ([`MediaSocket::send_all`]).
    outgoing: Vec<crate::engine::Transmit>,
    /// The local address each remote address sent to: answers leave from it.
    reply_from: ReplyFrom,
}

impl PeerLink {
    pub fn new(peer: Peer, socket: Arc<MediaSocket>, ufrag: String) -> Self {
        PeerLink {
            peer,
            gone: false,
            socket,
            ufrag,
            timer: None,
            events: Vec::new(),
            outgoing: Vec::new(),
            reply_from: ReplyFrom::default(),
        }
    }
}

pub trait PeerActor: Actor<Context = Context<Self>> + Sized {
    fn link(&mut self) -> &mut PeerLink;
    fn on_peer_event(&mut self, ev: PeerEvent, ctx: &mut Context<Self>);
    /// The peer failed or closed and no stop request came within [`PEER_CLOSE_GRACE`]: end
    /// the stream.
    fn on_peer_closed(&mut self, err: EngineError, ctx: &mut Context<Self>);

    /// Drain the engine and re-arm its timer.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let link = self.link();
        if link.gone {
            return;
        }
        let mut events = std::mem::take(&mut link.events);
        let mut outgoing = std::mem::take(&mut link.outgoing);
        let res = link.peer.poll(|t| outgoing.push(t), |e| events.push(e));
        link.socket.send_all(&mut outgoing, &link.reply_from);
        link.outgoing = outgoing;
        for e in events.drain(..) {
            self.on_peer_event(e, ctx);
        }
        self.link().events = events;
        match res {
            Ok(deadline) => self.arm(deadline, ctx),
            Err(e) => self.peer_gone(e, ctx),
        }
    }

    /// The peer closed or lost ICE: stop polling it, and fail the stream after the grace
    /// period unless a stop request ends it first.
    fn peer_gone(&mut self, err: EngineError, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.link().gone, true) {
            return;
        }
        if let Some((_, h)) = self.link().timer.take() {
            ctx.cancel_future(h);
        }
        ctx.run_later(PEER_CLOSE_GRACE, move |act, ctx| act.on_peer_closed(err, ctx));
    }

    fn arm(&mut self, deadline: Instant, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let deadline = deadline.min(now + MAX_TIMER);
        let link = self.link();
        if let Some((at, handle)) = link.timer {
            if at <= deadline {
                return; // an earlier wake-up is already armed; firing early is harmless
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(deadline.saturating_duration_since(now), |act, ctx| {
            act.link().timer = None;
            if let Err(e) = act.link().peer.timeout(Instant::now()) {
                act.peer_gone(e, ctx);
                return;
            }
            act.drive(ctx);
        });
        self.link().timer = Some((deadline, handle));
    }

    fn on_datagram(&mut self, d: Datagram, ctx: &mut Context<Self>) {
        let local = d.destination;
        // A malformed datagram is dropped; it does not end the peer.
        if self.link().gone {
            return;
        }
        self.link().reply_from.learn(d.source, d.arrived_at);
        if self.link().peer.receive(d.at, d.proto, d.source, local, &d.data).is_ok() {
            self.drive(ctx);
        }
    }

    /// Unroute and close; call from `stopping`.
    fn close_link(&mut self) {
        let link = self.link();
        link.socket.unregister(&link.ufrag);
        link.peer.close();
    }
}
