//! What publisher and subscriber actors share: an engine [`Peer`], the media socket it sends on,
//! and the one timer that re-arms the engine. [`PeerActor::drive`] is the sans-IO loop: after
//! every input (datagram, timeout, write, keyframe request), drain every output until the engine
//! names its next deadline, then arm the timer for it.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::engine::{Peer, PeerEvent, MAX_TIMER};
use crate::error::EngineError;
use crate::media_socket::{Datagram, MediaSocket};

pub struct PeerLink {
    pub peer: Peer,
    pub socket: Arc<MediaSocket>,
    pub ufrag: String,
    timer: Option<(Instant, SpawnHandle)>,
    events: Vec<PeerEvent>,
}

impl PeerLink {
    pub fn new(peer: Peer, socket: Arc<MediaSocket>, ufrag: String) -> Self {
        PeerLink { peer, socket, ufrag, timer: None, events: Vec::new() }
    }
}

pub trait PeerActor: Actor<Context = Context<Self>> + Sized {
    fn link(&mut self) -> &mut PeerLink;
    fn on_peer_event(&mut self, ev: PeerEvent, ctx: &mut Context<Self>);
    /// The engine failed or closed: end the stream.
    fn on_peer_closed(&mut self, err: EngineError, ctx: &mut Context<Self>);

    /// Drain the engine and re-arm its timer.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let link = self.link();
        let mut events = std::mem::take(&mut link.events);
        let socket = &link.socket;
        let res = link.peer.poll(|t| socket.send(t), |e| events.push(e));
        for e in events.drain(..) {
            self.on_peer_event(e, ctx);
        }
        self.link().events = events;
        match res {
            Ok(deadline) => self.arm(deadline, ctx),
            Err(e) => self.on_peer_closed(e, ctx),
        }
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
                act.on_peer_closed(e, ctx);
                return;
            }
            act.drive(ctx);
        });
        self.link().timer = Some((deadline, handle));
    }

    fn on_datagram(&mut self, d: Datagram, ctx: &mut Context<Self>) {
        let local = d.destination;
        // A malformed datagram is dropped; it does not end the peer.
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
