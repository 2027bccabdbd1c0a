//! RTSP pull: IP cameras played by URL, as WCS does it.
//!
//! `playStream` with the name `rtsp://[user:pass@]host[:port]/path` pulls that camera into one
//! shared stream; every viewer of that URL joins it, and it stops [`IDLE`] after its last
//! viewer leaves. The stream is registered under the URL **without its credentials** (the name
//! `/stream/find` shows and viewers' stream objects carry), like any published stream: playable,
//! recordable, snapshot-able.
//!
//! ## The actor
//! [`RtspSource`], one per pulled URL, on the ingest arbiter (RTSP IO, RTP depacketizing and
//! AAC→Opus transcoding never run on the media arbiter). It owns the `retina` session (DESCRIBE,
//! SETUP of the H.264 track and of an AAC track if there is one, PLAY; TCP interleaved by default,
//! UDP with `--rtsp-transport udp`), a [`FanOut`] and the AAC transcoder. Video frames pass
//! through as Annex-B access units with SPS/PPS before every keyframe (retina's `SIMPLE` frame
//! format for video). It answers `WaitReady` (the viewer waits for the camera: connected → the
//! stream, failed → the WCS error), `AddSubscriber`, `RemoveSubscriber`, `RequestKeyframe` (a no-op:
//! a camera cannot be asked; viewers start at its next keyframe), `GetGop` and `Stop`.
//!
//! [`RtspPulls`] finds the running pull of a URL or starts one: concurrent first viewers of a URL
//! share one connection attempt, so a camera is pulled once however many viewers arrive at once.
//! A pull started over REST (`/rest-api/rtsp/startup`, [`RtspPulls::startup`]) is the same pull,
//! kept up with no viewer until it is terminated.
//!
//! ## Errors (the viewer's FAILED `info`, exact WCS strings)
//! - not an `rtsp://` URL, or one that does not parse: "Rtsp has wrong format";
//! - a host the [`RtspPolicy`] refuses: "Restricted access" (the server fetches URLs that
//!   visitors type: the policy keeps it from being used to reach internal hosts; see below);
//! - connection refused, unreachable, [`CONNECT_TIMEOUT`], RTSP failure: "Failed to connect to rtsp
//!   stream"; a 404 answer: "Rtsp stream not found"; no H.264 track: "No common codecs".
//!
//! A camera that stops sending for [`STALL_TIMEOUT`] or drops the connection ends the stream:
//! viewers get STOPPED "Stopped by publisher stop".
//!
//! ## Which hosts: [`RtspPolicy`]
//! The host is resolved once, before connecting (IP literals as they are; names with tokio's
//! `lookup_host`, off the arbiter's thread), and every address it resolves to is checked:
//! - by default (no `--rtsp-allow`), every address must be public unicast
//!   ([`is_public_unicast`]: never loopback, private RFC 1918 or fc00::/7, link-local, CGNAT
//!   100.64/10, documentation, reserved...). `rtsp://127.0.0.1:6379/`, `rtsp://localhost/x` and
//!   `rtsp://10.0.0.5:22/x` are refused without a packet sent.
//! - with `--rtsp-allow` patterns, only what they match may be pulled, private hosts included: a
//!   host name pattern (`*.cams.example.com`) matches the URL's host name, and the operator's
//!   DNS is trusted for it; an address pattern (`192.168.1.*`, `fd00::*`) or CIDR
//!   (`192.168.1.0/24`) must match every resolved address (so `192.168.1.evil.example` never
//!   passes as `192.168.1.*`). `*` alone allows any host.
//! - never, whatever is configured: unspecified, multicast, broadcast ([`is_never_target`]).
//!
//! The pull then connects to the checked address itself: retina is given the URL with the
//! host replaced by that address (there is no TLS to need the name), so a second DNS answer
//! cannot send it elsewhere (DNS rebinding). The stream name, logs and the `/stream/find`
//! objects keep the URL as written. Only `rtsp://` is fetched, and retina follows no redirects.
//! With `--rtsp-transport udp`, RTP comes from the address the camera names in its SETUP answer:
//! that transport is for trusted LAN cameras.
//!
//! ## Credentials
//! Credentials in the URL are taken out before anything else sees it: retina gets them as
//! separate credentials (they never appear in its URL, its errors or its logs), the stream name
//! has none, and log lines show a URL that did not parse with its user info replaced by `***`
//! ([`redact`]). A viewer joins a running pull only with the same credentials it was started with
//! (otherwise FAILED "Restricted access"): knowing a camera's address is not enough to watch a
//! pull someone else authenticated.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn, Instrument};
use url::Url;

use crate::error::RtspError;
use crate::fanout::FanOut;
use crate::media::{Codec, Frame};
use crate::messages::StreamSource;
use crate::outbound;
pub use crate::outbound::HostPattern;
use crate::protocol::{info, SourceDescription, StreamInfo};
use crate::registry::{Published, Registration, Registry};
use crate::source::Source;
use crate::transcode::AacToOpus;
use crate::turn_core::policy::canonical;

/// A pull with no viewers stops after this long.
pub const IDLE: Duration = Duration::from_secs(60);
/// DESCRIBE, SETUP and PLAY must be done within this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A camera that sends no frame for this long is dropped.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often idleness and stalls are checked.
const TICK: Duration = Duration::from_secs(1);
/// The `mediaProvider` of pulled streams in stream objects.
pub const MEDIA_PROVIDER: &str = "RTSP";

/// Annex-B H.264 with parameter sets before every keyframe; raw AAC (the AudioSpecificConfig
/// stays in the stream's parameters, where the transcoder takes it).
const FRAME_FORMAT: FrameFormat = FrameFormat {
    h26x_framing: FrameFormat::SIMPLE.h26x_framing,
    parameter_set_insertion: FrameFormat::SIMPLE.parameter_set_insertion,
    aac_framing: FrameFormat::MP4.aac_framing,
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// RTP transport asked of cameras.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: works through NAT and firewalls.
    #[default]
    Tcp,
    /// RTP over UDP: for cameras on the LAN (retina has no reorder buffer).
    Udp,
}

impl TryFrom<String> for RtspTransport {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for RtspTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            _ => Err(format!("{s:?}: want tcp or udp")),
        }
    }
}

/// What may be pulled, and how.
#[derive(Debug, Clone, Default)]
pub struct RtspPolicy {
    /// Hosts that may be pulled; empty: those whose every address is public unicast.
    pub allow: Vec<HostPattern>,
    pub transport: RtspTransport,
}

impl RtspPolicy {
    /// May a pull of `host` (as written in the URL) connect, when it resolves to `addrs` (all of
    /// them)? See the module docs and [`crate::outbound`].
    pub fn permits(&self, host: &str, addrs: &[IpAddr]) -> bool {
        outbound::permits(&self.allow, host, addrs)
    }

    fn precheck(&self, host: &str) -> Option<bool> {
        outbound::precheck(&self.allow, host)
    }
}

/// True if a play name is meant as an RTSP URL (and must then be a valid one).
pub fn is_rtsp_name(name: &str) -> bool {
    let n = name.trim_start().as_bytes();
    n.len() >= 5 && n[..4].eq_ignore_ascii_case(b"rtsp") && (n[4] == b':' || n[4].eq_ignore_ascii_case(&b's'))
}

/// `s` with any user info of a URL (between `://` and the `@` before the host) replaced by
/// `***`: for logging a name that may not parse.
pub fn redact(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else { return s.to_string() };
    let rest = &s[start..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..start], &rest[at..]),
        None => s.to_string(),
    }
}

/// A validated camera URL: the URL without credentials, and the credentials apart.
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUrl {
    url: Url,
    creds: Option<Credentials>,
}

impl std::fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtspUrl({}, credentials: {})", self.url, self.creds.is_some())
    }
}

impl RtspUrl {
    pub fn parse(name: &str) -> Result<RtspUrl, RtspError> {
        let mut url = Url::parse(name.trim()).map_err(|_| RtspError::WrongFormat)?;
        if url.scheme() != "rtsp" || url.host_str().is_none_or(str::is_empty) || url.cannot_be_a_base() {
            return Err(RtspError::WrongFormat);
        }
        let decode = |s: &str| percent_decode(s).ok_or(RtspError::WrongFormat);
        let creds = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            Some(Credentials {
                username: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            })
        };
        url.set_username("").map_err(|_| RtspError::WrongFormat)?;
        url.set_password(None).map_err(|_| RtspError::WrongFormat)?;
        url.set_fragment(None);
        Ok(RtspUrl { url, creds })
    }

    /// The stream name: the URL without credentials.
    pub fn name(&self) -> &str {
        self.url.as_str()
    }

    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

type Pulls = DashMap<String, Addr<RtspSource>>;

/// Every RTSP pull, running or connecting, by stream name; and the policy they obey.
pub struct RtspPulls {
    policy: Arc<RtspPolicy>,
    arbiter: ArbiterHandle,
    registry: Arc<Registry>,
    pulls: Arc<Pulls>,
}

impl RtspPulls {
    pub fn new(policy: RtspPolicy, arbiter: ArbiterHandle, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(RtspPulls { policy: Arc::new(policy), arbiter, registry, pulls: Arc::default() })
    }

    /// Validate a play name against the format and, as far as it can be told without resolving
    /// the host, the policy (an address literal is judged here; a name once resolved, by the
    /// pull, before it connects).
    pub fn check(&self, name: &str) -> Result<RtspUrl, RtspError> {
        let url = RtspUrl::parse(name)?;
        if self.policy.precheck(url.host()) == Some(false) {
            return Err(RtspError::Restricted);
        }
        Ok(url)
    }

    /// How many pulls are running or connecting.
    pub fn len(&self) -> usize {
        self.pulls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pulls.is_empty()
    }

    /// Join the pull of `url`, starting it if there is none; resolves once the camera plays (or
    /// with why it does not). The viewer that starts a pull is its first waiter from the start,
    /// so it always learns the pull's own outcome, however fast that comes (a refused host fails
    /// at once).
    pub fn join(self: &Arc<Self>, url: RtspUrl) -> BoxFuture<'static, Result<Published, RtspError>> {
        self.join_once(url, true, false)
    }

    /// `/rest-api/rtsp/startup`: the pull of `url`, started if there is none, kept running with
    /// no viewer until it is terminated (or the camera ends it), as WCS keeps a pulled stream.
    pub fn startup(self: &Arc<Self>, url: RtspUrl) -> BoxFuture<'static, Result<Published, RtspError>> {
        self.join_once(url, true, true)
    }

    /// Every pull, running or connecting: its stream name (the URL without credentials) and
    /// whether the camera plays yet.
    pub fn list(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> =
            self.pulls.iter().map(|e| (e.key().clone(), self.registry.lookup(e.key()).is_some())).collect();
        v.sort();
        v
    }

    fn join_once(
        self: &Arc<Self>,
        url: RtspUrl,
        retry: bool,
        keep: bool,
    ) -> BoxFuture<'static, Result<Published, RtspError>> {
        let ended = || RtspError::Connect("pull ended".into());
        let joined = match self.pulls.entry(url.name().to_string()) {
            Entry::Occupied(o) => Err(o.get().clone()),
            Entry::Vacant(v) => {
                let (tx, rx) = oneshot::channel();
                let (registry, pulls, policy) =
                    (self.registry.clone(), self.pulls.clone(), self.policy.clone());
                let u = url.clone();
                let addr = RtspSource::start_in_arbiter(&self.arbiter, move |_| {
                    let mut source = RtspSource::new(u, policy, registry, pulls, tx);
                    source.kept = keep;
                    source
                });
                v.insert(addr);
                Ok(rx)
            }
        };
        let me = self.clone();
        async move {
            let rx = match joined {
                Ok(rx) => rx,
                Err(addr) => match addr.send(WaitReady { creds: url.creds.clone(), keep }).await {
                    Ok(rx) => rx,
                    // Ended between the lookup and the message (it has left the map by now):
                    // start over, once.
                    Err(_) if retry => return me.join_once(url, false, keep).await,
                    Err(_) => return Err(ended()),
                },
            };
            rx.await.unwrap_or_else(|_| Err(ended()))
        }
        .boxed()
    }
}

/// A viewer waits for the pull: the answer comes once the camera plays or fails.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Result<Published, RtspError>>")]
pub struct WaitReady {
    pub creds: Option<Credentials>,
    /// Started over REST: the pull stays up with no viewer until terminated.
    pub keep: bool,
}

enum State {
    Connecting(Vec<oneshot::Sender<Result<Published, RtspError>>>),
    Playing(Published),
    Ended,
}

/// The tracks a camera gave us.
struct Setup {
    demuxed: Demuxed,
    video: usize,
    width: u32,
    height: u32,
    /// The AAC track and its transcoder.
    audio: Option<(usize, AacToOpus)>,
}

/// One pulled camera: the retina session and the stream's fan-out.
pub struct RtspSource {
    url: RtspUrl,
    policy: Arc<RtspPolicy>,
    registry: Arc<Registry>,
    pulls: Arc<Pulls>,
    id: String,
    /// The stream's place in the registry once the camera plays; dropped when the pull ends.
    registration: Option<Registration>,
    state: State,
    fanout: FanOut,
    video_stream: usize,
    audio: Option<(usize, AacToOpus)>,
    last_frame: Instant,
    /// Since when nobody watches (or wants to): the pull stops [`IDLE`] after.
    idle_since: Option<Instant>,
    /// Started by `/rest-api/rtsp/startup`: never stopped for want of viewers.
    kept: bool,
    lost: u64,
    /// Why the pull failed, for viewers that arrive after it did.
    failure: Option<RtspError>,
    span: tracing::Span,
}

impl RtspSource {
    /// `first`: the viewer that starts the pull, its first waiter.
    fn new(
        url: RtspUrl,
        policy: Arc<RtspPolicy>,
        registry: Arc<Registry>,
        pulls: Arc<Pulls>,
        first: oneshot::Sender<Result<Published, RtspError>>,
    ) -> Self {
        let id = format!("rtsp-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let span = info_span!("rtsp", url = %url.name(), id = %id);
        RtspSource {
            url,
            policy,
            registry,
            pulls,
            id,
            registration: None,
            state: State::Connecting(vec![first]),
            fanout: FanOut::default(),
            video_stream: 0,
            audio: None,
            last_frame: Instant::now(),
            idle_since: Some(Instant::now()),
            kept: false,
            lost: 0,
            failure: None,
            span,
        }
    }

    /// The camera plays: register the stream, answer the waiting viewers, take the frames.
    fn on_connected(&mut self, setup: Setup, ctx: &mut Context<Self>) {
        let has_audio = setup.audio.is_some();
        let published = Published {
            media_session_id: self.id.clone(),
            source: StreamSource::of(&ctx.address()),
            video: Some(Codec::H264),
            has_audio,
        };
        let info = self.stream_info(has_audio, setup.width, setup.height);
        match self.registry.register_source(info, ctx.address().recipient(), Some(published.clone())) {
            Ok(r) => self.registration = Some(r),
            Err(e) => {
                warn!(parent: &self.span, why = e.info(), "RTSP stream cannot be registered");
                return self.end(Err(RtspError::NameInUse), ctx);
            }
        }
        info!(parent: &self.span, width = setup.width, height = setup.height, audio = has_audio,
            transport = ?self.policy.transport, "RTSP pull playing");
        self.video_stream = setup.video;
        self.audio = setup.audio;
        self.last_frame = Instant::now();
        ctx.add_stream(setup.demuxed);
        if let State::Connecting(waiters) =
            std::mem::replace(&mut self.state, State::Playing(published.clone()))
        {
            for w in waiters {
                let _ = w.send(Ok(published.clone()));
            }
        }
    }

    fn stream_info(&self, has_audio: bool, width: u32, height: u32) -> StreamInfo {
        StreamInfo::of_source(SourceDescription {
            media_session_id: &self.id,
            name: self.url.name(),
            provider: MEDIA_PROVIDER,
            video_codec: Codec::H264.wcs_name(),
            has_audio,
            width,
            height,
            transport: match self.policy.transport {
                RtspTransport::Tcp => "TCP",
                RtspTransport::Udp => "UDP",
            },
            session_id: "",
        })
    }

    fn on_item(&mut self, item: CodecItem) {
        match item {
            CodecItem::VideoFrame(v) if v.stream_id() == self.video_stream => {
                self.last_frame = Instant::now();
                if v.loss() > 0 {
                    // Packets were lost: hold video until the next keyframe.
                    self.lost += u64::from(v.loss());
                    debug!(parent: &self.span, lost = v.loss(), "RTSP video packets lost");
                    self.fanout.lost_frame();
                }
                let t = v.timestamp();
                let rtp_time = rescale(t.elapsed(), t.clock_rate().get(), 90_000);
                let keyframe = v.is_random_access_point();
                let data = v.into_data();
                let keyframe = keyframe && crate::media::is_keyframe(&data, true);
                let _ = self.fanout.forward(Frame {
                    codec: Codec::H264,
                    keyframe,
                    rtp_time,
                    captured: Instant::now(),
                    data: data.into(),
                });
            }
            CodecItem::AudioFrame(a) => {
                let Self { audio, fanout, span, .. } = self;
                let Some((stream, tc)) = audio.as_mut() else { return };
                if a.stream_id() != *stream {
                    return;
                }
                let t = a.timestamp();
                let pts = rescale(t.elapsed(), t.clock_rate().get(), tc.sample_rate());
                let (frames, res) = tc.frames(a.data(), pts, Instant::now());
                if let Err(e) = res {
                    debug!(parent: &*span, error = %e, "RTSP AAC frame dropped");
                }
                for frame in frames {
                    let _ = fanout.forward(frame);
                }
            }
            _ => {}
        }
    }

    /// End the pull: `Err` answers waiting viewers with the failure; viewers of a playing
    /// stream get STOPPED "Stopped by publisher stop" (or the `Stop` reason).
    fn end(&mut self, why: Result<&'static str, RtspError>, ctx: &mut Context<Self>) {
        let state = std::mem::replace(&mut self.state, State::Ended);
        match state {
            State::Ended => return,
            State::Connecting(waiters) => {
                let e = why.clone().err().unwrap_or(RtspError::Connect("stopped".into()));
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
            State::Playing(_) => {}
        }
        if let Err(e) = &why {
            self.failure = Some(e.clone());
        }
        let reason = match &why {
            Ok(r) => r,
            Err(e) => {
                // Nobody watches a pull that never played; the failure was logged where it happened.
                debug!(parent: &self.span, error = %e, "RTSP pull gone");
                info::STOPPED_BY_PUBLISHER
            }
        };
        if why.is_ok() {
            info!(parent: &self.span, reason, frames = self.fanout.frames(), lost_packets = self.lost,
                "RTSP pull ended");
        }
        self.fanout.end(reason);
        self.registration = None; // releases the name and the record
        let me = ctx.address();
        self.pulls.remove_if(self.url.name(), |_, a| *a == me);
        ctx.stop();
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Playing(_)) {
            return;
        }
        if self.last_frame.elapsed() > STALL_TIMEOUT {
            warn!(parent: &self.span, "RTSP camera sent nothing for {STALL_TIMEOUT:?}, dropping it");
            return self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx);
        }
        if !self.fanout.is_empty() || self.kept {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= IDLE {
            info!(parent: &self.span, "RTSP pull has had no viewer for {IDLE:?}, stopping");
            self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx);
        }
    }
}

/// `t` ticks of a `from` Hz clock in a `to` Hz clock (negative times clamp to 0).
fn rescale(t: i64, from: u32, to: u32) -> u64 {
    let t = t.max(0) as u128;
    (t * to as u128 / from.max(1) as u128) as u64
}

/// Resolve the host once, check every address against the policy ([`outbound`]), and give back
/// the URL to connect with: the checked address in place of the host name.
async fn checked_url(url: &RtspUrl, policy: &RtspPolicy) -> Result<Url, RtspError> {
    let host = match url.url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(RtspError::WrongFormat),
    };
    let addrs = outbound::resolve_checked(&policy.allow, &host, url.url.port().unwrap_or(554))
        .await
        .map_err(|e| match e {
            outbound::OutboundError::Refused { .. } => {
                info!(host = %url.host(), why = %e,
                    "RTSP pull refused: the host is or resolves to an address the policy does not allow \
                     (loopback, private, link-local...: allow it with --rtsp-allow)");
                RtspError::Restricted
            }
            outbound::OutboundError::Resolve { .. } => RtspError::Connect(e.to_string()),
        })?;
    let mut target = url.url.clone();
    target.set_ip_host(canonical(addrs[0].ip())).map_err(|_| RtspError::WrongFormat)?;
    debug!(host = %url.host(), address = %addrs[0].ip(), "RTSP host resolved and allowed");
    Ok(target)
}

/// Resolve and check the host, then DESCRIBE, SETUP, PLAY. Errors carry the detail for the log
/// (without credentials: the URL has none, they travel apart).
async fn connect(url: RtspUrl, policy: Arc<RtspPolicy>) -> Result<Setup, RtspError> {
    let transport = policy.transport;
    let target = checked_url(&url, &policy).await?;
    let opts =
        SessionOptions::default().creds(url.creds.clone()).user_agent(format!("sluice/{}", crate::VERSION));
    let mut session = Session::describe(target, opts).await.map_err(classify)?;
    let streams = session.streams();
    let video = streams.iter().position(|s| s.media() == "video" && s.encoding_name() == "h264");
    let Some(video) = video else {
        let offered: Vec<String> =
            streams.iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
        return Err(RtspError::NoCodecs(format!("no H.264 video; the camera offers {offered:?}")));
    };
    let audio = streams.iter().position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
    let setup_opts = || {
        let t = match transport {
            RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        SetupOptions::default().transport(t).frame_format(FRAME_FORMAT)
    };
    session.setup(video, setup_opts()).await.map_err(classify)?;
    let mut audio_setup = None;
    if let Some(a) = audio {
        match session.setup(a, setup_opts()).await {
            Ok(()) => audio_setup = Some(a),
            Err(e) => debug!(error = %e, "RTSP audio track not set up; video only"),
        }
    }
    // The AudioSpecificConfig is known from the SDP (fmtp `config`); without it, no audio.
    let audio = audio_setup.and_then(|a| {
        let asc = match session.streams()[a].parameters() {
            Some(ParametersRef::Audio(p)) => p.extra_data().to_vec(),
            _ => return None,
        };
        match AacToOpus::new(&asc) {
            Ok(t) => Some((a, t)),
            Err(e) => {
                info!(error = %e, "RTSP AAC track not playable; video only");
                None
            }
        }
    });
    let (width, height) = match session.streams()[video].parameters() {
        Some(ParametersRef::Video(v)) => v.pixel_dimensions(),
        _ => (0, 0),
    };
    let playing = session.play(PlayOptions::default()).await.map_err(classify)?;
    let demuxed = playing.demuxed().map_err(classify)?;
    Ok(Setup { demuxed, video, width, height, audio })
}

/// The WCS error for a retina failure.
fn classify(e: retina::Error) -> RtspError {
    match e.status_code() {
        Some(404) => RtspError::NotFound,
        _ => RtspError::Connect(e.to_string()),
    }
}

impl Actor for RtspSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(parent: &self.span, "RTSP pull connecting");
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connect(self.url.clone(), self.policy.clone()).instrument(self.span.clone()),
        );
        attempt
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(Ok(setup)) => act.on_connected(setup, ctx),
                Ok(Err(e)) => {
                    warn!(parent: &act.span, error = %e, detail = %detail(&e), "RTSP pull failed");
                    act.end(Err(e), ctx);
                }
                Err(_) => {
                    warn!(parent: &act.span, "RTSP pull timed out after {CONNECT_TIMEOUT:?}");
                    act.end(Err(RtspError::Connect("timeout".into())), ctx);
                }
            })
            .spawn(ctx);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        // Deregister whatever way the actor goes.
        if !matches!(self.state, State::Ended) {
            self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx);
        }
        Running::Stop
    }
}

fn detail(e: &RtspError) -> &str {
    match e {
        RtspError::Connect(d) | RtspError::NoCodecs(d) => d,
        _ => "",
    }
}

impl StreamHandler<Result<CodecItem, retina::Error>> for RtspSource {
    fn handle(&mut self, item: Result<CodecItem, retina::Error>, ctx: &mut Context<Self>) {
        match item {
            Ok(i) => self.on_item(i),
            Err(e) => {
                warn!(parent: &self.span, error = %e, "RTSP stream failed");
                self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        info!(parent: &self.span, "RTSP camera closed the stream");
        self.end(Ok(info::STOPPED_BY_PUBLISHER), ctx);
    }
}

impl Handler<WaitReady> for RtspSource {
    type Result = MessageResult<WaitReady>;
    fn handle(&mut self, m: WaitReady, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if m.creds != self.url.creds {
            info!(parent: &self.span, "viewer's credentials differ from the running pull's: refused");
            let _ = tx.send(Err(RtspError::Restricted));
            return MessageResult(rx);
        }
        self.kept |= m.keep;
        // A viewer is on its way: the idle clock restarts.
        if self.idle_since.is_some() {
            self.idle_since = Some(Instant::now());
        }
        match &mut self.state {
            State::Connecting(waiters) => waiters.push(tx),
            State::Playing(p) => {
                let _ = tx.send(Ok(p.clone()));
            }
            State::Ended => {
                let e = self.failure.clone().unwrap_or_else(|| RtspError::Connect("pull ended".into()));
                let _ = tx.send(Err(e));
            }
        }
        MessageResult(rx)
    }
}

impl Source for RtspSource {
    fn fanout(&mut self) -> &mut FanOut {
        &mut self.fanout
    }

    fn has_video(&self) -> bool {
        true
    }

    /// Nobody watching: the pull stops [`IDLE`] after.
    fn viewers_changed(&mut self, _ctx: &mut Context<Self>) {
        self.idle_since = self.fanout.is_empty().then(Instant::now);
    }

    fn stop(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        self.end(Ok(reason), ctx);
    }
}

crate::source_handlers!(RtspSource);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_credentials_taken_out() {
        let u = RtspUrl::parse("rtsp://admin:p%40ss@cam.local:8554/live/main?x=1").unwrap();
        assert_eq!(u.name(), "rtsp://cam.local:8554/live/main?x=1");
        assert_eq!(u.creds, Some(Credentials { username: "admin".into(), password: "p@ss".into() }));
        assert!(!format!("{u:?}").contains("p@ss") && !format!("{u:?}").contains("admin"));
        assert_eq!(RtspUrl::parse("RTSP://10.0.0.5/cam").unwrap().name(), "rtsp://10.0.0.5/cam");
        assert_eq!(RtspUrl::parse("rtsp://[::1]:554/x").unwrap().host(), "[::1]");
        for bad in ["rtsp:/x", "rtsp://", "rtsps://cam/x", "rtsp:cam", "rtsp://:554/x", "rtsp://a b/x"] {
            assert_eq!(RtspUrl::parse(bad), Err(RtspError::WrongFormat), "{bad}");
        }
        assert!(is_rtsp_name("rtsp://x") && is_rtsp_name("RTSPS://x") && is_rtsp_name("rtsp:x"));
        assert!(!is_rtsp_name("cam1") && !is_rtsp_name("vod://x") && !is_rtsp_name("rtspcam"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("rtsp://u:p@host/x"), "rtsp://***@host/x");
        assert_eq!(redact("rtsp://u:p@w@host:1/x@y"), "rtsp://***@host:1/x@y");
        assert_eq!(redact("rtsp://host/x@y"), "rtsp://host/x@y");
        assert_eq!(redact("nonsense u:p@x"), "nonsense u:p@x");
    }

    #[test]
    fn allow_list() {
        let p = |s: &str| s.parse::<HostPattern>().unwrap();
        assert!(p("*.cams.example.com").matches("door.cams.example.com"));
        assert!(!p("*.cams.example.com").matches("cams.example.com.evil.net"));
        assert!(p("192.168.1.*").matches("192.168.1.20"));
        assert!(!p("192.168.1.*").matches("192.168.10.2"));
        // Address patterns match addresses, never names that look like them.
        assert!(!p("192.168.1.*").matches("192.168.1.evil.example"));
        assert!(p("192.168.1.0/24").matches("192.168.1.20") && !p("192.168.1.0/24").matches("192.168.2.1"));
        assert!(p("fd00::/8").matches_ip("fd12::1".parse().unwrap()));
        assert!(p("fd00::*").matches("[fd00::7]"));
        assert!(p("10.0.0.1").matches_ip("::ffff:10.0.0.1".parse().unwrap()));
        assert!(p("CAM1").matches("cam1"));
        assert!(p("[::1]").matches("[::1]"));
        assert!(p("*").matches("anything") && p("*").matches_ip("127.0.0.1".parse().unwrap()));
        for bad in ["a/b", "", "10.0.0.0/33", "cam lan", "x%y"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn default_policy_is_public_hosts_only() {
        let d = RtspPolicy::default();
        assert!(d.permits("cam.example.com", &ips(&["8.8.8.8"])));
        assert!(d.permits("cam.example.com", &ips(&["8.8.8.8", "2606:4700::1111"])));
        assert!(d.permits("8.8.8.8", &ips(&["8.8.8.8"])));
        for private in [
            "127.0.0.1",
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.20",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!d.permits(private, &ips(&[private])), "{private}");
            assert!(!d.permits("rebind.example", &ips(&["8.8.8.8", private])), "one bad address: {private}");
        }
        assert!(!d.permits("nothing.example", &[]));
        // Literals are judged before anything resolves; names wait for their addresses.
        assert_eq!(d.precheck("127.0.0.1"), Some(false));
        assert_eq!(d.precheck("[::1]"), Some(false));
        assert_eq!(d.precheck("8.8.8.8"), Some(true));
        assert_eq!(d.precheck("localhost"), None);
    }

    #[test]
    fn allow_patterns_open_private_hosts_and_restrict_the_rest() {
        let p = |s: &str| s.parse::<HostPattern>().unwrap();
        let lan = RtspPolicy { allow: vec![p("192.168.1.*"), p("*.cams.lan")], ..Default::default() };
        assert!(lan.permits("192.168.1.20", &ips(&["192.168.1.20"])));
        assert!(lan.permits("cam3.lan", &ips(&["192.168.1.23"])), "a name resolving into the pattern");
        assert!(lan.permits("door.cams.lan", &ips(&["10.9.9.9"])), "a trusted name");
        assert!(!lan.permits("192.168.1.evil.example", &ips(&["127.0.0.1"])));
        assert!(!lan.permits("cam3.lan", &ips(&["192.168.1.23", "127.0.0.1"])));
        assert!(!lan.permits("8.8.8.8", &ips(&["8.8.8.8"])), "an allow-list restricts public hosts too");
        assert!(!lan.permits("127.0.0.1", &ips(&["127.0.0.1"])));
        assert!(!lan.permits("door.cams.lan", &ips(&["0.0.0.0"])), "never the unspecified address");
        assert_eq!(lan.precheck("127.0.0.1"), Some(false));
        assert_eq!(lan.precheck("cam3.lan"), None);
        let names = RtspPolicy { allow: vec![p("*.cams.lan")], ..Default::default() };
        assert_eq!(names.precheck("evil.example"), Some(false), "no pattern could allow it");
        assert_eq!(names.precheck("a.cams.lan"), None);
        let any = RtspPolicy { allow: vec![p("*")], ..Default::default() };
        assert!(any.permits("localhost", &ips(&["127.0.0.1", "::1"])));
        assert!(!any.permits("x", &ips(&["224.0.0.1"])));
        let test = RtspPolicy { allow: vec![p("127.0.0.1")], ..Default::default() };
        assert_eq!(test.precheck("127.0.0.1"), Some(true));
        assert_eq!(test.precheck("10.0.0.1"), Some(false));
        assert!(!test.permits("localhost", &ips(&["127.0.0.1", "::1"])), "::1 is not 127.0.0.1");
    }

    #[tokio::test]
    async fn the_checked_address_is_the_one_connected_to() {
        let allow = |s: &str| RtspPolicy { allow: vec![s.parse().unwrap()], ..Default::default() };
        let u = RtspUrl::parse("rtsp://admin:pw@localhost:8554/live/main?x=1").unwrap();
        assert_eq!(checked_url(&u, &RtspPolicy::default()).await, Err(RtspError::Restricted));
        // An allowed name: the URL to connect with carries the address, path and query as they were.
        let t = checked_url(&u, &allow("localhost")).await.unwrap();
        assert!(["127.0.0.1", "[::1]"].contains(&t.host_str().unwrap()), "{t}");
        assert_eq!(
            (t.port(), t.path(), t.query(), t.username()),
            (Some(8554), "/live/main", Some("x=1"), "")
        );
        let t = checked_url(&u, &allow("127.0.0.0/8")).await;
        // Either localhost resolved to 127.0.0.1 only, and the URL carries it, or it has ::1 too,
        // which 127.0.0.0/8 does not allow.
        match t {
            Ok(t) => assert_eq!(t.as_str(), "rtsp://127.0.0.1:8554/live/main?x=1"),
            Err(e) => assert_eq!(e, RtspError::Restricted),
        }
        let v6 = RtspUrl::parse("rtsp://[::1]/x").unwrap();
        assert_eq!(checked_url(&v6, &allow("::1")).await.unwrap().as_str(), "rtsp://[::1]/x");
        let lit = RtspUrl::parse("rtsp://10.0.0.5:22/x").unwrap();
        assert_eq!(checked_url(&lit, &RtspPolicy::default()).await, Err(RtspError::Restricted));
        // inet_aton's spellings of 127.0.0.1 resolve, and are judged by what they resolve to.
        for odd in ["rtsp://2130706433/x", "rtsp://0x7f.1/x", "rtsp://127.1/x"] {
            let u = RtspUrl::parse(odd).unwrap();
            let r = checked_url(&u, &RtspPolicy::default()).await;
            assert!(matches!(r, Err(RtspError::Restricted | RtspError::Connect(_))), "{odd}: {r:?}");
        }
        assert!(matches!(
            checked_url(&RtspUrl::parse("rtsp://no-such-host.invalid/x").unwrap(), &RtspPolicy::default())
                .await,
            Err(RtspError::Connect(_))
        ));
    }

    #[test]
    fn clocks() {
        assert_eq!(rescale(90_000, 90_000, 90_000), 90_000);
        assert_eq!(rescale(44_100, 44_100, 48_000), 48_000);
        assert_eq!(rescale(-5, 90_000, 90_000), 0);
    }
}
