//! Starting a publish or a play, whichever front asked for it: the WCS WebSocket session
//! ([`crate::session`]) and WHIP/WHEP ([`crate::whip`]) both come here, so a stream published
//! or played either way is the same stream, with the same checks, actors and registrations.
//!
//! - [`publish`]: the stream limit, the name, the offer, the [`Publisher`] on the media arbiter,
//!   its registration, RTMP re-publishing and recording when asked.
//! - [`open_source`]: what a play of a name plays: a live stream, an `rtsp://` pull (joined or
//!   started), a `vod://` file (opened), a stream of another cluster node
//!   (pulled here as an edge, [`crate::cluster`]).
//! - [`view`]: the viewer limit, the offer, the [`Subscriber`] on the next viewer arbiter, its
//!   registration.
//!
//! Every refusal is a [`StartError`] (or a [`SourceError`]) whose `Display` is the WCS `info`
//! a WebSocket client gets; WHIP/WHEP turn it into a status code. Nothing here blocks: the
//! only IO (opening a VOD file, connecting to a camera) is behind the future of [`open_source`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use tracing::warn;

use crate::engine::{negotiate, Candidates, Role};
use crate::error::{EngineError, RtspError};
use crate::messages::{ClientRecipients, StatusChanged, Stop, StreamSource, VideoRateNotice};
use crate::peer_link::PeerLink;
use crate::protocol::{info as wcs, StreamInfo, StreamRequest};
use crate::publisher::{Hold, Publisher};
use crate::recorder::{RecordTarget, RecordingFailed};
use crate::registry::{ClaimError, Published};
use crate::subscriber::Subscriber;
use crate::vod::{self, VodError, VodUri};
use crate::Core;

static NEXT_PEER_ID: AtomicU64 = AtomicU64::new(1);

/// A running publish or play: what ends it.
pub enum StreamHandle {
    Publish(Addr<Publisher>),
    Play(Addr<Subscriber>),
}

impl StreamHandle {
    pub fn stop(&self, reason: &'static str) {
        match self {
            StreamHandle::Publish(a) => a.do_send(Stop { reason }),
            StreamHandle::Play(a) => a.do_send(Stop { reason }),
        }
    }
}

/// Where a publisher reports: its status, its video rate, and a recording or RTMP
/// re-publishing that failed while the stream goes on.
pub struct PublishClient {
    pub status: Recipient<StatusChanged>,
    pub rates: Recipient<VideoRateNotice>,
    pub failures: Recipient<RecordingFailed>,
}

/// A started publish or play.
pub struct Started<A: Actor> {
    pub addr: Addr<A>,
    /// The SDP answer for the client.
    pub answer_sdp: String,
    /// Our ICE username fragment in that answer.
    pub local_ufrag: String,
    /// The stream object as registered.
    pub stream: StreamInfo,
    /// Recording was asked and could not start (the stream goes on): the client's notice.
    pub record_error: Option<String>,
}

/// Why a publish or a play was not started. `Display` is the WCS `info`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The client has too many sessions (WHIP/WHEP: each resource is one).
    #[error("{}", crate::limits::TOO_MANY_SESSIONS)]
    TooManySessions,
    #[error("{}", crate::limits::TOO_MANY_STREAMS)]
    TooManyStreams,
    #[error("{}", crate::limits::TOO_MANY_VIEWERS)]
    TooManyViewers,
    #[error("{}", wcs::MEDIA_SESSION_ID_IN_USE)]
    MediaSessionIdInUse,
    #[error("{}", wcs::NAME_IN_USE)]
    NameInUse,
    /// The name was taken between the check and the registration: the publisher, already
    /// started, reports FAILED "Stream name is already in use" to its client itself.
    #[error("{}", wcs::NAME_IN_USE)]
    LostNameRace,
    #[error("{}", wcs::SERVER_SHUTDOWN)]
    Shutdown,
    /// The offer was refused (bad SDP, no common codecs).
    #[error("{}", .0.client_info())]
    Offer(EngineError),
    /// The registry refused the stream.
    #[error("{}", .0.info())]
    Claim(ClaimError),
}

/// Negotiate `req.sdp` and start its publisher, registered under `req.name`; RTMP
/// re-publishing (`req.rtmp_url`) and recording (`req.record`) start with it. `stream` is the
/// stream object as the front describes it (`req.to_info(true, ...)`).
pub fn publish(
    core: &Arc<Core>,
    req: &StreamRequest,
    mut stream: StreamInfo,
    cands: &Candidates,
    client: PublishClient,
) -> Result<Started<Publisher>, StartError> {
    if !core.limits.may_publish(core.registry.counts().0) {
        return Err(StartError::TooManyStreams);
    }
    if core.registry.media_session_exists(&req.media_session_id) {
        return Err(StartError::MediaSessionIdInUse);
    }
    if core.registry.name_published(&req.name) {
        return Err(StartError::NameInUse);
    }
    let neg = negotiate(&req.sdp, Role::Publish, cands).map_err(StartError::Offer)?;
    stream.has_audio = neg.has_audio;
    stream.has_video = neg.has_video;
    stream.audio_codec = if neg.has_audio { "opus".into() } else { String::new() };
    stream.video_codec = neg.video.map(|v| v.wcs_name().to_string()).unwrap_or_default();

    let link = PeerLink::new(neg.peer, core.socket.clone(), neg.local_ufrag.clone());
    let PublishClient { status, rates, failures } = client;
    let (info2, registry) = (stream.clone(), core.registry.clone());
    let addr = Publisher::start_in_arbiter(&core.media_arbiter, move |_| {
        Publisher::new(link, info2, status, rates, registry)
    });
    let published = Published {
        media_session_id: req.media_session_id.clone(),
        source: StreamSource::of(&addr),
        video: neg.video,
        has_audio: neg.has_audio,
    };
    let record_source = published.source.clone();
    match core.registry.register_source(stream.clone(), addr.clone().recipient(), Some(published)) {
        Ok(r) => addr.do_send(Hold(r)),
        Err(ClaimError::NameInUse) => {
            // Lost a race for the name: the actor reports FAILED "Stream name is already in use".
            addr.do_send(Stop { reason: wcs::NAME_IN_USE });
            return Err(StartError::LostNameRace);
        }
        Err(e) => {
            addr.do_send(Stop { reason: e.info() });
            return Err(StartError::Claim(e));
        }
    }
    core.socket.register(&neg.local_ufrag, addr.clone().recipient());
    if let Some(url) = req.rtmp_url.as_deref() {
        // RTMP re-publishing while the publish lasts (crate::push).
        let src = crate::push::pusher::PushSource {
            stream_name: req.name.clone(),
            media_session_id: req.media_session_id.clone(),
            source: record_source.clone(),
            video: neg.video,
            has_audio: neg.has_audio,
        };
        crate::push::pusher::start_with_publish(&core.pushes, src, url, failures.clone());
    }
    let mut record_error = None;
    if req.record {
        // Before the answer goes out, so that PUBLISHING carries recordName.
        let target = RecordTarget {
            info: stream.clone(),
            source: record_source,
            video: neg.video,
            has_audio: neg.has_audio,
        };
        if let Err(e) = core.recordings.start(target, None, Some(failures)) {
            warn!(stream = %req.name, error = %e, "cannot record; publishing goes on");
            core.registry.update(&req.media_session_id, |i| i.record = false);
            record_error = Some(format!("Recording failed: {e}"));
        }
    }
    Ok(Started { addr, answer_sdp: neg.answer_sdp, local_ufrag: neg.local_ufrag, stream, record_error })
}

/// Why a play found nothing to play. `Display` is the WCS `info`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No live stream of that name, and it names no file or camera.
    #[error("{}", wcs::STREAM_NOT_FOUND)]
    NotFound,
    /// A `vod://` name of a file that is missing or outside the media folder.
    #[error("{}", vod::FILE_NOT_FOUND)]
    FileNotFound,
    #[error(transparent)]
    Rtsp(RtspError),
    #[error(transparent)]
    Vod(VodError),
}

/// A source that is there now, or one being opened.
pub enum Opening {
    Ready(Published),
    Later(LocalBoxFuture<'static, Result<Published, SourceError>>),
}

/// What a play of `name` plays: a live stream at once; an `rtsp://` pull joined or started,
/// or a `vod://` file opened, later. `name` becomes the stream's name as logged and echoed
/// (an `rtsp://` URL loses its credentials), refused or not.
pub fn open_source(core: &Arc<Core>, name: &mut String) -> Result<Opening, SourceError> {
    if crate::rtsp::is_rtsp_name(name) {
        let rtsp = core.rtsp.clone();
        let url = match rtsp.check(name) {
            Ok(u) => u,
            Err(e) => {
                *name = crate::rtsp::redact(name);
                warn!(name = %name, error = %e, "RTSP play refused");
                return Err(SourceError::Rtsp(e));
            }
        };
        *name = url.name().to_string();
        return Ok(Opening::Later(rtsp.join(url).map(|r| r.map_err(SourceError::Rtsp)).boxed_local()));
    }
    if let Some(source) = core.registry.lookup(name) {
        return Ok(Opening::Ready(source));
    }
    let Some(uri) = VodUri::parse(name) else {
        // Published on another node of the cluster: pulled here once, as an edge.
        return match &core.cluster {
            Some(c) => {
                Ok(Opening::Later(c.edge_source(name).map(|p| p.ok_or(SourceError::NotFound)).boxed_local()))
            }
            None => Err(SourceError::NotFound),
        };
    };
    let path = match vod::resolve(&core.media_dir, &uri.path) {
        Ok(p) => p,
        Err(why) => {
            warn!(name = %name, %why, "VOD file refused");
            return Err(SourceError::FileNotFound);
        }
    };
    let open = vod::OpenVod { name: uri.as_name(), uri, path, looping: false, start_now: false };
    let rx = vod::open(open, &core.vod_arbiter, core.registry.clone(), core.vod.clone());
    let (registry, name) = (core.registry.clone(), name.clone());
    Ok(Opening::Later(
        async move {
            match rx.await.unwrap_or(Err(VodError::Read)) {
                Ok(source) => Ok(source),
                // Two viewers raced to start one vod-live source: join the winner.
                Err(VodError::NameInUse) => registry.lookup(&name).ok_or(SourceError::NotFound),
                Err(e) => Err(SourceError::Vod(e)),
            }
        }
        .boxed_local(),
    ))
}

/// Negotiate a viewer of `source` and start its subscriber on the next viewer arbiter.
/// `stream` is the stream object as the front describes it (`req.to_info(false, ...)`).
pub fn view(
    core: &Arc<Core>,
    req: &StreamRequest,
    mut stream: StreamInfo,
    source: Published,
    cands: &Candidates,
    client: ClientRecipients,
) -> Result<Started<Subscriber>, StartError> {
    if !core.limits.may_view(core.registry.viewers_of(&req.name)) {
        return Err(StartError::TooManyViewers);
    }
    if core.shutdown.is_stopping() {
        // A VOD or RTSP source that opened while the server began to stop.
        return Err(StartError::Shutdown);
    }
    let neg = negotiate(&req.sdp, Role::Play { video: source.video }, cands).map_err(StartError::Offer)?;
    stream.has_audio = neg.has_audio && source.has_audio;
    stream.has_video = neg.has_video;
    stream.audio_codec = if stream.has_audio { "opus".into() } else { String::new() };
    stream.video_codec = neg.video.map(|v| v.wcs_name().to_string()).unwrap_or_default();
    if req.width > 0 || req.height > 0 {
        // WCS would transcode to the requested size; sluice forwards the published picture.
        stream.info = format!("{} {}x{}", wcs::PLAY_SIZE_NOT_APPLIED, req.width, req.height);
    }

    let id = NEXT_PEER_ID.fetch_add(1, Ordering::Relaxed);
    let link = PeerLink::new(neg.peer, core.socket.clone(), neg.local_ufrag.clone());
    let (info2, registry, publisher) = (stream.clone(), core.registry.clone(), source.source.clone());
    let addr = Subscriber::start_in_arbiter(core.viewer_arbiter(), move |_| {
        Subscriber::new(id, link, info2, client, registry, publisher)
    });
    if let Err(e) = core.registry.add_session(stream.clone(), addr.clone().recipient()) {
        addr.do_send(Stop { reason: wcs::MEDIA_SESSION_ID_IN_USE });
        return Err(StartError::Claim(e));
    }
    core.socket.register(&neg.local_ufrag, addr.clone().recipient());
    Ok(Started { addr, answer_sdp: neg.answer_sdp, local_ufrag: neg.local_ufrag, stream, record_error: None })
}
