//! # sluice-actors: the actors of the sluice media server
//!
//! sluice is an SFU: browsers publish WebRTC streams by name and any number of browsers play
//! them, over the Flashphoner WCS signalling protocol. This crate holds everything below the
//! HTTP front (which lives in the `sluice` binary).
//!
//! ## The actors
//! - [`session::Session`], one per WebSocket client, on the actix-web worker that accepted it:
//!   parses WCS frames, negotiates WebRTC, starts the stream actors, relays their status events.
//! - [`whip::WhipSession`], one per WHIP or WHEP session (an HTTP resource), on the media arbiter:
//!   the session's part for one stream published or played over WHIP/WHEP. Both fronts start
//!   streams with the same code ([`start`]).
//! - [`publisher::Publisher`], one per published stream, and [`subscriber::Subscriber`], one per
//!   viewer. Each owns one WebRTC engine peer ([`engine::Peer`], a `str0m::Rtc` in ICE-lite mode).
//!   Publishers (and the media socket) run on the *media arbiter*; viewers are spread
//!   round-robin over one *media thread* per core (`--media-threads`), the media arbiter being
//!   the first. All are apart from the web workers, so a restarted web worker never takes media
//!   with it.
//! - [`recorder::Recorder`], one per recorded stream: one more sink of the stream, like a
//!   viewer, writing a crash-safe fragmented MP4 ([`fmp4`], pure code in `sluice-codecs`).
//!   Recorders run on a *recording arbiter* of their own, so file IO never blocks the media arbiter;
//!   [`recorder::Recordings`] is the table sessions and REST start and stop them through.
//! - Streams from outside WebRTC are source actors like a publisher, with the same fan-out:
//!   [`vod::VodSource`] (MP4 files), [`rtmp::RtmpConnection`] (encoders publishing over RTMP) and
//!   [`rtsp::RtspSource`] (IP cameras pulled over RTSP). File reads, ingest IO and AAC→Opus
//!   transcoding run on arbiters of their own (VOD, ingest), never on the media arbiter.
//! - [`hls::muxer::HlsMuxer`], one per stream played over HLS: a sink like a recorder that
//!   packages the stream into CMAF segments and LL-HLS parts in memory ([`sluice_codecs::hls`]);
//!   [`hls::HlsStreams`] is the table the HLS front reads playlists and segments from.
//! - [`turn::TurnServer`] and one [`turn::Allocation`] per allocation: the embedded TURN server
//!   (UDP and TCP clients, relayed UDP) for browsers behind firewalls, on a *TURN arbiter* of its
//!   own; its protocol and policy code is pure, in [`turn_core`].
//! - The stream registry ([`registry::Registry`]) is deliberately *not* an actor: it is a pair of
//!   `DashMap`s (published names; every media session by id) that sessions and REST read and
//!   write synchronously. "Claim this name unless taken" must be atomic, and `DashMap::entry`
//!   gives that without a mailbox round trip on every publish.
//!
//! ## The media path
//! One UDP socket on one port carries every peer; ICE-TCP listens on the same port number
//! ([`media_socket::MediaSocket`]). Datagrams are routed to their peer actor by the ICE ufrag in
//! STUN requests, then by source address. A publisher's engine depacketizes each frame; the frame
//! is shared (`Arc`) with every subscriber, whose engine packetizes and encrypts it for its viewer
//! and answers its NACKs. Nothing is decoded. Keyframes are requested from the publishing browser
//! when a viewer joins or asks (rate-limited), because browsers send none on their own.
//!
//! ## Every source, one lifecycle
//! A source (a publisher, an RTMP encoder, an RTSP pull, a VOD file) implements
//! [`source::Source`] and gets its handlers from [`source_handlers!`]; it registers with
//! [`registry::Registry::register_source`] and holds the [`registry::Registration`], which frees
//! its name and record when dropped; its stream object is [`protocol::StreamInfo::of_source`].
//!
//! ## Layout
//! - [`access`]: tokens, hooks, API keys ([`auth`]) and limits ([`limits`]).
//! - [`signalling`]: the WCS wire format ([`protocol`]), SDP helpers, the session actor; what
//!   every front does to start a stream ([`start`]); WHIP/WHEP sessions ([`whip`]).
//! - [`webrtc`]: the str0m wrapper ([`engine`]), the media socket, publishers, viewers.
//! - [`streams`]: the registry, the fan-out, the source trait, shared messages, snapshots, and
//!   [`transcoder`]: the thread that re-encodes a source's B-frame video once for all its sinks.
//! - [`sources`]: RTMP, RTSP, VOD. [`recording`]: the recorder. [`turn`]: the TURN server.
//! - [`push`]: RTMP re-publishing, a stream sent to an RTMP server ([`push::pusher`]).
//! - [`hls`]: HLS and LL-HLS, one muxer per stream played over HLS and the table the HLS front
//!   reads from.
//! - Pure codec code (MP4, FLV, H.264, pictures, AAC→Opus) is the `sluice-codecs` crate,
//!   re-exported here ([`fmp4`], [`flv`], [`h264`], [`media`], [`mp4_reader`], [`picture`],
//!   [`transcode`], [`opus`]).
//!
//! ## Where to start
//! [`protocol`] is the wire format, [`engine`] is the only file that calls str0m, [`session`]
//! shows the whole flow of a publish and a play.

/// Who may do what: tokens, hooks, API keys ([`auth`]), and limits against abuse ([`limits`]).
pub mod access {
    pub mod auth;
    pub mod limits;
    pub mod outbound;
}
/// The WCS WebSocket protocol: the wire format, SDP helpers and the session actor.
pub mod signalling {
    pub mod debug_log;
    pub mod protocol;
    pub mod sdp;
    pub mod session;
    pub mod start;
    pub mod whip;
}
/// WebRTC peers: the str0m engine wrapper, the shared media socket, publishers and viewers.
pub mod webrtc {
    pub mod engine;
    pub mod media_socket;
    pub mod peer_link;
    pub mod publisher;
    pub mod subscriber;
    pub mod udp_io;
    pub mod video_rate;
}
/// Streams: the registry, the fan-out, what every source shares, shared messages, snapshots.
pub mod streams {
    pub mod fanout;
    pub mod messages;
    pub mod metrics;
    pub mod registry;
    pub mod snapshot;
    pub mod source;
    pub mod transcoder;
}
/// Sources from outside WebRTC: RTMP encoders, RTSP cameras, VOD files.
pub mod sources {
    pub mod pull;
    pub mod rtmp;
    pub mod rtsp;
    pub mod vod;
    pub mod vod_cache;
}
/// RTMP re-publishing: streams pushed to RTMP servers.
pub mod push {
    pub mod pusher;
    pub mod rtmp_client;
}
/// Recording to fragmented MP4.
pub mod recording {
    pub mod recorder;
}
/// Many nodes as one service on Redis: node records, cluster-wide names, edge pulls.
pub mod cluster;
pub mod error;
pub mod hls;
pub mod shutdown;
pub mod turn;

// Short paths (`crate::registry`, `sluice_actors::session`, ...) for every module.
pub use access::{auth, limits, outbound};
pub use recording::recorder;
pub use signalling::{debug_log, protocol, sdp, session, start, whip};
pub use sources::{pull, rtmp, rtsp, vod, vod_cache};
pub use streams::{fanout, messages, metrics, registry, snapshot, source, transcoder};
pub use turn::core as turn_core;
pub use webrtc::{engine, media_socket, peer_link, publisher, subscriber, udp_io, video_rate};

/// The pure codec modules live in the `sluice-codecs` crate (no actix there, by its
/// `Cargo.toml`); they are re-exported so `crate::fmp4` and `sluice_actors::fmp4` still name them.
pub use sluice_codecs::{flv, fmp4, h264, media, mp4_reader, opus, picture, transcode, video_transcode};

use std::sync::Arc;

use actix::ArbiterHandle;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Core {
    /// The arbiter the next viewer runs on.
    pub fn viewer_arbiter(&self) -> &ArbiterHandle {
        if self.viewer_arbiters.is_empty() {
            return &self.media_arbiter;
        }
        let i = self.next_viewer.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.viewer_arbiters[i % self.viewer_arbiters.len()]
    }
}

/// Where the server tells browsers to send media: the advertised addresses and transports.
#[derive(Debug, Clone)]
pub struct CandidateConfig {
    pub addrs: Vec<std::net::SocketAddr>,
    /// Also offer ICE-TCP candidates on the media port.
    pub tcp: bool,
}

/// What every session shares: the registry, the media socket and the arbiter media actors run on.
pub struct Core {
    pub registry: Arc<registry::Registry>,
    pub socket: Arc<media_socket::MediaSocket>,
    pub media_arbiter: ArbiterHandle,
    /// Where viewers run, round-robin: the media arbiter and one more per extra media thread.
    /// Frames reach them by message from any thread, so a stream's viewers use every core.
    pub viewer_arbiters: Vec<ArbiterHandle>,
    pub next_viewer: std::sync::atomic::AtomicUsize,
    pub candidates: CandidateConfig,
    /// Pictures of live streams, decoded off the media path.
    pub snapshots: actix::Addr<snapshot::SnapshotHub>,
    /// The media folder VOD files are read from.
    pub media_dir: std::path::PathBuf,
    /// VOD sources run here: file reads and AAC transcoding stay off the media arbiter.
    pub vod_arbiter: ArbiterHandle,
    /// Running VOD sources, for `/vod/find`.
    pub vod: Arc<vod::VodCatalog>,
    /// Recordings in progress; their actors run on a recording arbiter of their own.
    pub recordings: Arc<recorder::Recordings>,
    /// RTSP pulls (`rtsp://` play names), running on the ingest arbiter with RTMP ingest.
    pub rtsp: Arc<rtsp::RtspPulls>,
    /// WebRTC pulls from other servers (`/rest-api/pull/...`), on the media arbiter.
    pub pulls: Arc<pull::Pulls>,
    /// RTMP re-publishing (`rtmpUrl`, `/push/...`), on the ingest arbiter too.
    pub pushes: Arc<push::pusher::Pushes>,
    /// Who may do what ([`auth`]).
    pub auth: Arc<auth::Authorizer>,
    /// Limits against abuse ([`limits`]).
    pub limits: Arc<limits::Limits>,
    /// Where session debug logs are written (served at `/client/session-logs/`).
    pub session_logs_dir: std::path::PathBuf,
    /// Set when the server is stopping: sessions refuse new streams and close when done.
    pub shutdown: shutdown::Shutdown,
    /// WHIP and WHEP sessions by resource id ([`whip`]).
    pub whip: whip::WhipResources,
    /// This node's part in a cluster (`--cluster-redis`), when there is one ([`cluster`]).
    pub cluster: Option<Arc<cluster::Cluster>>,
}
