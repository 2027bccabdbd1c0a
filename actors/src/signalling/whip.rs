//! WHIP (RFC 9725) and WHEP sessions: one [`WhipSession`] actor per session resource.
//!
//! A WHIP client publishes one stream and a WHEP client plays one, each with a single HTTP
//! POST of its SDP offer; the HTTP front (`src/whip.rs` in the binary) parses the request,
//! checks the token and the hooks, and calls [`publish`] or [`view`] here. Those start the
//! stream exactly as a WCS session does ([`crate::start`]), with a [`WhipSession`] in the
//! session's place: it receives the stream's [`StatusChanged`], [`StreamEventNotice`],
//! [`VideoRateNotice`] and [`RecordingFailed`] (a WHIP client has no channel to hear them, so
//! they are logged), and owns the stream's [`StreamHandle`].
//!
//! The resource is found by its id in [`WhipResources`] (`Core::whip`): DELETE ([`End`]) stops
//! the stream and the actor; the stream ending on its own (ICE timeout, REST terminate, the
//! publisher of a WHEP viewer's stream stopping, server shutdown) stops the actor too, which
//! then leaves the table. A session counts as one of its client's sessions against
//! `--max-sessions-per-ip` while it lasts ([`crate::limits`]).
//!
//! Resource ids and `mediaSessionId`s are 128 random bits: whoever knows a resource's URL may
//! end it, so it cannot be guessed.

use std::net::IpAddr;
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use tracing::{debug, info, info_span, Span};

use crate::engine::Candidates;
use crate::messages::{ClientRecipients, StatusChanged, StreamEventNotice, VideoRateNotice};
use crate::protocol::{info as wcs, StreamRequest, Transport};
use crate::recorder::RecordingFailed;
use crate::registry::Published;
use crate::start::{self, PublishClient, StartError, StreamHandle};
use crate::Core;

/// The `appKey` of WHIP and WHEP streams (WCS's default application).
pub const APP_KEY: &str = "defaultApp";

/// Which protocol a resource speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whip,
    Whep,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// A live WHIP or WHEP session resource.
#[derive(Clone)]
pub struct Resource {
    pub kind: Kind,
    /// The stream published or played.
    pub name: String,
    pub media_session_id: String,
    /// Our ICE username fragment: the resource's entity tag (`ETag`).
    pub local_ufrag: String,
    /// The client's ICE username fragment in its offer: a PATCH bringing another one is an
    /// ICE restart.
    pub client_ufrag: Option<String>,
    pub session: Addr<WhipSession>,
}

impl Resource {
    /// The `ETag` of the resource (a quoted string, RFC 9110).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.local_ufrag)
    }
}

/// Every live resource by id.
#[derive(Default)]
pub struct WhipResources(DashMap<String, Resource>);

impl WhipResources {
    pub fn get(&self, id: &str) -> Option<Resource> {
        self.0.get(id).map(|r| r.clone())
    }

    /// Take the resource out of the table (DELETE); the caller ends its session.
    pub fn remove(&self, id: &str) -> Option<Resource> {
        self.0.remove(id).map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// 128 random bits in hex.
fn random_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// The client's ICE username fragment in an SDP offer or fragment (the first `a=ice-ufrag`).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).map(str::trim)
}

/// A started WHIP or WHEP session.
pub struct WhipAnswer {
    /// The resource id (the last segment of its URL).
    pub id: String,
    pub answer_sdp: String,
    pub resource: Resource,
}

/// End the session: stop its stream (DELETE of the resource).
#[derive(Message)]
#[rtype(result = "()")]
pub struct End;

/// The stream the session owns, once started.
#[derive(Message)]
#[rtype(result = "()")]
struct Attach(StreamHandle);

/// One WHIP or WHEP session: the stream's client, for one stream.
pub struct WhipSession {
    core: Arc<Core>,
    id: String,
    handle: Option<StreamHandle>,
    /// The stream's final status came: nothing is left to stop.
    ended: bool,
    /// The client address counted against `--max-sessions-per-ip`, released when stopping.
    counted: Option<IpAddr>,
    span: Span,
}

impl Actor for WhipSession {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        debug!(parent: &self.span, "session started");
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if let Some(h) = self.handle.take() {
            if !self.ended {
                h.stop(wcs::STOPPED_BY_USER);
            }
        }
        self.core.whip.0.remove(&self.id);
        if let Some(ip) = self.counted.take() {
            self.core.limits.close_session(ip);
        }
        info!(parent: &self.span, "session ended");
        Running::Stop
    }
}

impl Handler<Attach> for WhipSession {
    type Result = ();
    fn handle(&mut self, Attach(h): Attach, ctx: &mut Context<Self>) {
        self.handle = Some(h);
        if self.ended {
            ctx.stop();
        }
    }
}

impl Handler<End> for WhipSession {
    type Result = ();
    fn handle(&mut self, _: End, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, "end asked");
        ctx.stop();
    }
}

impl Handler<StatusChanged> for WhipSession {
    type Result = ();
    fn handle(&mut self, StatusChanged(i): StatusChanged, ctx: &mut Context<Self>) {
        info!(parent: &self.span, status = %i.status, info = %i.info, "stream status");
        if i.status.is_terminal() {
            self.ended = true;
            ctx.stop();
        }
    }
}

impl Handler<StreamEventNotice> for WhipSession {
    type Result = ();
    fn handle(&mut self, m: StreamEventNotice, _: &mut Context<Self>) {
        // A WHIP/WHEP client has no channel for stream events (mute notices, data).
        debug!(parent: &self.span, kind = %m.kind, "stream event not delivered");
    }
}

impl Handler<VideoRateNotice> for WhipSession {
    type Result = ();
    fn handle(&mut self, _: VideoRateNotice, _: &mut Context<Self>) {}
}

impl Handler<RecordingFailed> for WhipSession {
    type Result = ();
    fn handle(&mut self, m: RecordingFailed, _: &mut Context<Self>) {
        info!(parent: &self.span, reason = %m.reason, "recording failed; the stream goes on");
    }
}

/// What the front asks for: the stream, the offer, the client.
pub struct Offer {
    /// The stream's `mediaSessionId` (fresh, from [`Offer::new`]).
    pub media_session_id: String,
    pub name: String,
    pub sdp: String,
    /// Record the published stream (WHIP `?record=true`).
    pub record: bool,
    pub client_ip: Option<IpAddr>,
}

impl Offer {
    pub fn new(name: String, sdp: String, record: bool, client_ip: Option<IpAddr>) -> Offer {
        Offer { media_session_id: random_id(), name, sdp, record, client_ip }
    }

    /// The request as a WCS session would have made it.
    pub fn to_request(&self) -> StreamRequest {
        StreamRequest {
            media_session_id: self.media_session_id.clone(),
            name: self.name.clone(),
            sdp: self.sdp.clone(),
            record: self.record,
            has_audio: true,
            has_video: true,
            transport: Transport::Udp,
            custom: None,
            width: 0,
            height: 0,
            bitrate: 0,
            min_bitrate: 0,
            max_bitrate: 0,
            quality: 0,
            rtmp_url: None,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn candidates(core: &Core) -> Candidates {
    let c = &core.candidates;
    Candidates { addrs: c.addrs.clone(), udp: true, tcp: c.tcp }
}

/// Count the client's session and start its actor, on the media arbiter (apart from the web
/// workers, as every stream's actors).
fn start_session(
    core: &Arc<Core>,
    kind: Kind,
    name: &str,
    client_ip: Option<IpAddr>,
) -> Result<(String, Addr<WhipSession>), StartError> {
    if core.shutdown.is_stopping() {
        return Err(StartError::Shutdown);
    }
    let counted = match client_ip {
        Some(ip) if !core.limits.open_session(ip) => return Err(StartError::TooManySessions),
        other => other,
    };
    let id = random_id();
    let span = info_span!("whip", kind = kind.as_str(), stream = %name, id = %id);
    let (core2, id2) = (core.clone(), id.clone());
    let addr = WhipSession::start_in_arbiter(&core.media_arbiter, move |_| WhipSession {
        core: core2,
        id: id2,
        handle: None,
        ended: false,
        counted,
        span,
    });
    Ok((id, addr))
}

fn finish<A: Actor>(
    core: &Arc<Core>,
    kind: Kind,
    id: String,
    session: Addr<WhipSession>,
    req: &StreamRequest,
    started: start::Started<A>,
    handle: StreamHandle,
) -> WhipAnswer {
    let resource = Resource {
        kind,
        name: req.name.clone(),
        media_session_id: req.media_session_id.clone(),
        local_ufrag: started.local_ufrag,
        client_ufrag: ice_ufrag(&req.sdp).map(str::to_string),
        session: session.clone(),
    };
    core.whip.0.insert(id.clone(), resource.clone());
    session.do_send(Attach(handle));
    info!(kind = kind.as_str(), stream = %req.name, media_session_id = %req.media_session_id, resource = %id, "{} session", kind.as_str());
    WhipAnswer { id, answer_sdp: started.answer_sdp, resource }
}

/// Publish `offer.name` from a WHIP client. The caller has checked the token and hooks.
pub fn publish(core: &Arc<Core>, offer: &Offer) -> Result<WhipAnswer, StartError> {
    let (id, session) = start_session(core, Kind::Whip, &offer.name, offer.client_ip)?;
    let req = offer.to_request();
    let stream = req.to_info(true, &format!("whip/{id}"), APP_KEY, now_ms());
    let client = PublishClient {
        status: session.clone().recipient(),
        rates: session.clone().recipient(),
        failures: session.clone().recipient(),
    };
    match start::publish(core, &req, stream, &candidates(core), client) {
        Ok(s) => {
            let handle = StreamHandle::Publish(s.addr.clone());
            Ok(finish(core, Kind::Whip, id, session, &req, s, handle))
        }
        Err(e) => {
            session.do_send(End);
            Err(e)
        }
    }
}

/// Play `source` (found by [`crate::start::open_source`] under `offer.name`) to a WHEP client.
pub fn view(core: &Arc<Core>, offer: &Offer, source: Published) -> Result<WhipAnswer, StartError> {
    let (id, session) = start_session(core, Kind::Whep, &offer.name, offer.client_ip)?;
    let req = offer.to_request();
    let stream = req.to_info(false, &format!("whep/{id}"), APP_KEY, now_ms());
    let client = ClientRecipients {
        status: session.clone().recipient(),
        events: session.clone().recipient(),
        rates: session.clone().recipient(),
    };
    match start::view(core, &req, stream, source, &candidates(core), client) {
        Ok(s) => {
            let handle = StreamHandle::Play(s.addr.clone());
            Ok(finish(core, Kind::Whep, id, session, &req, s, handle))
        }
        Err(e) => {
            session.do_send(End);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufrag_of_offer_and_fragment() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\n";
        assert_eq!(ice_ufrag(sdp), Some("abcd"));
        assert_eq!(ice_ufrag("a=ice-ufrag: EFGH \n"), Some("EFGH"));
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }

    #[test]
    fn ids_are_random_and_hex() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
