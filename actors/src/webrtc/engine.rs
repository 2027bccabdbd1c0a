//! The WebRTC engine: every call into str0m lives in this file, so a str0m bump touches only it.
//!
//! A [`Peer`] wraps one `str0m::Rtc` in ICE-lite mode. It is sans-IO: the owning actor feeds it
//! datagrams ([`Peer::receive`]) and timeouts ([`Peer::timeout`]), writes forwarded frames
//! ([`Peer::write_frame`]), then drains it with [`Peer::poll`] until it returns the next deadline.
//! [`negotiate`] turns a browser's SDP offer into a `Peer` plus the SDP answer to send back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::RtpWrite;
use str0m::unversioned::{H264Packetizer, Packetizer, Vp8Packetizer};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::error::EngineError;
use crate::media::{Codec, Frame, FrameKind};
use crate::video_rate::VideoStats;

/// Packets kept at most per outgoing video stream to answer NACKs (and as str0m's send queue).
/// The payloads are shared with the stream (see [`StreamPacketizer`]); what each viewer pays is
/// str0m's ~430-byte packet record, so 128 packets cost ~55 KB per viewer. 128 packets are 0.5 s
/// of video at 2.5 Mbit/s; below that the age ([`set_nack_history`]) bounds the history first.
const SEND_BUFFER_VIDEO: usize = 128;
/// How long sent video packets are kept to answer NACKs once the viewer has asked for one, in
/// ms (`--nack-history-ms`; default [`DEFAULT_NACK_HISTORY_MS`]); before, the history is
/// [`NACK_HISTORY_CLEAN_MS`]. str0m's history grows only to what this age holds.
static NACK_HISTORY_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_NACK_HISTORY_MS);
/// str0m's own default. Measured (BENCHMARKS.md, "NACK history"): with 500 ms (Janus's
/// `max_nack_queue`) a viewer at 15 % loss decoded a median 6.7 fps instead of 16.2, since a
/// packet whose NACK or retransmission was lost again is asked for several times, and a
/// shorter history answers fewer of the later rounds.
pub const DEFAULT_NACK_HISTORY_MS: u64 = 3000;

/// How long a viewer's sent video is kept until the viewer first asks for a packet again (ms).
/// A viewer on a clean link never does, and 500 ms hold ~85 records at 600 kbit/s (a keyframe's
/// burst included) instead of 128: 17 KB less per viewer. The first round of NACKs for a loss
/// comes one round trip after the packet, so this answers it for round trips up to ~450 ms.
/// Once the viewer's once-a-second counters show a NACK, the next keyframe it is sent switches
/// it to the full history ([`NACK_HISTORY_MS`]), which answers the later rounds that a lossy
/// link needs (BENCHMARKS.md, "NACK history", "Session 12").
const NACK_HISTORY_CLEAN_MS: u64 = 500;

/// Keep sent video packets this long to answer NACKs (at most [`SEND_BUFFER_VIDEO`] of them).
pub fn set_nack_history(ms: u64) {
    NACK_HISTORY_MS.store(ms.max(1), std::sync::atomic::Ordering::Relaxed);
}
/// The bandwidth a viewer's estimate starts from (bit/s), before its browser's feedback says
/// more: enough for the top layer of a typical simulcast publisher (640x480 at ~500 kbit/s).
pub const VIEWER_INITIAL_ESTIMATE: u64 = 1_000_000;
/// Packets kept per outgoing audio stream (one Opus frame is one packet, 20 ms each).
const SEND_BUFFER_AUDIO: usize = 50;

/// Whether viewers that offer transport-wide CC get send-side bandwidth estimation (the
/// default; `--no-viewer-bwe` turns it off: [`set_viewer_bwe`]).
static VIEWER_BWE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Estimate bandwidth towards viewers (true, the default) or only forward to them.
pub fn set_viewer_bwe(on: bool) {
    VIEWER_BWE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// What the peer is for: receiving a published stream, or sending one to a viewer.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Publish,
    /// Play a stream whose publisher sends this video codec (None: audio only).
    Play {
        video: Option<Codec>,
    },
}

/// Where the server's media socket is reachable, written into answers as ICE candidates.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// Advertised addresses (the public or configured media address) with the media port.
    pub addrs: Vec<SocketAddr>,
    /// Offer UDP host candidates.
    pub udp: bool,
    /// Offer ICE-TCP passive candidates (same port number).
    pub tcp: bool,
}

/// RTP payload bytes per packet: what str0m's own payloader uses (its datagram MTU target less
/// the SRTP tag, aligned to the SRTP block), so packets are cut exactly as before.
const PAYLOAD_MTU: usize = (1150 - 16) & !15;

/// One frame cut into RTP payloads. Made once per stream by [`StreamPacketizer`] and shared by
/// every viewer: str0m keeps payloads as `Arc<[u8]>`, so the viewers' NACK histories share the
/// bytes too and a viewer costs only its packet headers.
#[derive(Debug, Default)]
pub struct Packets {
    payloads: Vec<Arc<[u8]>>,
    /// The simulcast layer the frame belongs to (0 the best; always 0 without simulcast).
    pub layer: u8,
}

impl Packets {
    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.payloads.iter().map(|p| p.len()).sum()
    }
}

/// A stream's packetizer state (H.264 parameter sets are aggregated with the next NAL unit).
#[derive(Debug, Default)]
pub struct StreamPacketizer {
    h264: H264Packetizer,
    vp8: Vp8Packetizer,
}

impl StreamPacketizer {
    /// Cut a frame into RTP payloads. A frame the packetizer rejects yields no packets (the
    /// viewers' decoders then ask for a keyframe).
    pub fn packetize(&mut self, frame: &Frame) -> Packets {
        let chunks = match frame.codec {
            // One Opus packet is one RTP payload: shared as is, no copy.
            Codec::Opus => return Packets { payloads: vec![frame.data.clone()], layer: 0 },
            Codec::H264 => self.h264.packetize(PAYLOAD_MTU, &frame.data),
            Codec::Vp8 => self.vp8.packetize(PAYLOAD_MTU, &frame.data),
        };
        match chunks {
            Ok(c) => Packets { payloads: c.into_iter().map(Arc::from).collect(), layer: 0 },
            Err(e) => {
                tracing::debug!(error = %e, codec = ?frame.codec, "frame not packetized");
                Packets::default()
            }
        }
    }
}

/// A negotiated peer, ready to be moved into its actor.
pub struct Negotiated {
    pub peer: Peer,
    pub answer_sdp: String,
    /// Our ICE username fragment: STUN requests carry it, which is how datagrams are routed.
    pub local_ufrag: String,
    pub video: Option<Codec>,
    pub has_audio: bool,
    pub has_video: bool,
}

/// Build the process-wide crypto once and one throw-away `Rtc`: the first build in a process
/// costs 30-40 ms of one-time setup that would otherwise land on the first publisher.
pub fn warm_up() {
    let rtc = base_config().build(Instant::now());
    drop(rtc);
}

/// One DTLS certificate for every peer of the process, as SFUs do: generating a key pair per
/// peer costs CPU on every join. Each answer carries its fingerprint as usual.
fn dtls_cert() -> Option<&'static str0m::config::DtlsCert> {
    static CERT: std::sync::OnceLock<Option<str0m::config::DtlsCert>> = std::sync::OnceLock::new();
    CERT.get_or_init(|| str0m::crypto::from_feature_flags().dtls_provider.generate_certificate()).as_ref()
}

fn base_config() -> RtcConfig {
    let cfg = match dtls_cert() {
        Some(cert) => RtcConfig::new().set_dtls_cert(cert.clone()),
        None => RtcConfig::new(), // str0m generates one per peer
    };
    cfg.set_ice_lite(true)
        .set_send_buffer_video(SEND_BUFFER_VIDEO)
        .set_send_buffer_audio(SEND_BUFFER_AUDIO)
        // Video counters once a second: the clients' inbound/outboundVideoRate and REST metrics.
        .set_stats_interval(Some(crate::video_rate::STATS_INTERVAL))
        .clear_codecs()
}

/// Accept a browser's offer. The answer carries our candidates and `a=ice-lite`; the browser's
/// checks arrive from addresses we learn as peer-reflexive candidates (the SDK sends no trickle).
pub fn negotiate(offer_sdp: &str, role: Role, cands: &Candidates) -> Result<Negotiated, EngineError> {
    let offer = str0m::change::SdpOffer::from_sdp_string(offer_sdp)
        .map_err(|e| EngineError::BadSdp(e.to_string()))?;
    // str0m answers in its own codec order and Chromium sends the answer's first codec, so the
    // order enabled here decides what a publisher sends: H.264 first, VP8 second. A player gets
    // exactly its publisher's codec, so nothing is ever transcoded.
    let mut cfg = base_config().enable_opus(true, false);
    if let Role::Play { .. } = role {
        // Send-side bandwidth estimation towards viewers (transport-wide CC feedback from the
        // browser): the fan-out picks the simulcast layer each viewer's link can carry, and
        // str0m paces what it sends to the estimate. Only for a viewer that offers the
        // transport-wide sequence numbers: without its feedback the estimate would never move
        // and the pacing would hold every stream to the starting rate. Publishers keep TWCC
        // too: their browser's estimator needs our feedback.
        if !VIEWER_BWE.load(std::sync::atomic::Ordering::Relaxed) {
            // `--no-viewer-bwe`: forward only. Without the extension str0m keeps no record of
            // the packets it sends for feedback (1,000 per peer) and runs no estimator.
            let mut exts = str0m::rtp::ExtensionMap::empty();
            for (id, ext) in cfg.extension_map().iter() {
                if *ext != str0m::rtp::Extension::TransportSequenceNumber {
                    exts.set(id, ext.clone());
                }
            }
            cfg = cfg.set_extension_map(exts);
        } else if offer_sdp.contains("transport-wide-cc") {
            cfg = cfg.enable_bwe(Some(str0m::bwe::Bitrate::bps(VIEWER_INITIAL_ESTIMATE)));
        }
    }
    cfg = match role {
        Role::Publish => cfg.enable_h264(true).enable_vp8(true),
        Role::Play { video: Some(Codec::H264) } => cfg.enable_h264(true),
        Role::Play { video: Some(Codec::Vp8) } => cfg.enable_vp8(true),
        Role::Play { video: Some(Codec::Opus) | None } => cfg,
    };
    let mut rtc = cfg.build(Instant::now());
    for addr in &cands.addrs {
        if cands.udp {
            let c = Candidate::host(*addr, "udp").map_err(|e| EngineError::Candidate(e.to_string()))?;
            rtc.add_local_candidate(c);
        }
        if cands.tcp {
            let c = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| EngineError::Candidate(e.to_string()))?;
            rtc.add_local_candidate(c);
        }
    }
    // str0m asserts on some offers a browser can send (a payload type claimed twice across
    // m-lines panics in `accept_offer`, found by fuzzing: fuzz/regressions/sdp_offer/). The peer
    // is dropped either way, so a panic there is refused like any offer that does not parse.
    let accepted =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
            .map_err(|_| EngineError::BadSdp("offer refused by the WebRTC library".into()))?;
    let answer = accepted.map_err(|e| EngineError::BadSdp(e.to_string()))?;
    let answer_sdp = match role {
        Role::Play { .. } => crate::sdp::unify_msid(&answer.to_sdp_string()),
        Role::Publish => answer.to_sdp_string(),
    };
    let local = rtc.direct_api().local_ice_credentials();
    let (local_ufrag, local_pass) = (local.ufrag, local.pass);

    let media = crate::sdp::summarize(&answer_sdp);
    let wanted_direction_ok = match role {
        Role::Publish => media.receives,
        Role::Play { .. } => media.sends,
    };
    if !wanted_direction_ok || (!media.has_audio && media.video.is_none()) {
        return Err(EngineError::NoCommonCodecs);
    }
    if let Role::Play { video: Some(_) } = role {
        // The offer wanted video but none of its codecs matches the publisher's.
        if media.video.is_none() && crate::sdp::summarize(offer_sdp).video_offered {
            return Err(EngineError::NoCommonCodecs);
        }
    }
    Ok(Negotiated {
        peer: Peer {
            rtc,
            video_mid: None,
            audio_mid: None,
            pts: [None; 3],
            // Outgoing sequence numbers start low and random (RFC 3550), below 2^15 so the SRTP
            // rollover counter starts at 0 as the viewer expects.
            seq: [rand::random::<u16>() as u64 & 0x7fff, rand::random::<u16>() as u64 & 0x7fff],
            connected: false,
            rids: Vec::new(),
            nacked: false,
            full_history: false,
            early_nomination: Some(local_pass),
        },
        answer_sdp,
        local_ufrag,
        video: media.video,
        has_audio: media.has_audio,
        has_video: media.video.is_some(),
    })
}

/// Our offer to receive a stream from another server (a WebRTC pull, [`crate::pull`]): here
/// the server is the client, so its `Rtc` is a full ICE agent (controlling) that checks the
/// remote's candidates from the shared media socket, recvonly Opus + H.264/VP8.
pub struct PullOffer {
    rtc: Rtc,
    pending: str0m::change::SdpPendingOffer,
    video_mid: Mid,
    audio_mid: Mid,
    pub sdp: String,
    pub local_ufrag: String,
}

/// What the remote's answer settled: the peer to drive, the codecs, where to expect it from.
pub struct PullAnswered {
    pub peer: Peer,
    pub video: Option<Codec>,
    pub has_audio: bool,
    /// The remote's UDP candidates: datagrams from them are this peer's.
    pub remote_addrs: Vec<SocketAddr>,
}

pub fn pull_offer(cands: &Candidates) -> Result<PullOffer, EngineError> {
    let cfg = base_config().set_ice_lite(false).enable_opus(true, false).enable_h264(true).enable_vp8(true);
    let mut rtc = cfg.build(Instant::now());
    for addr in &cands.addrs {
        let c = Candidate::host(*addr, "udp").map_err(|e| EngineError::Candidate(e.to_string()))?;
        rtc.add_local_candidate(c);
    }
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, str0m::media::Direction::RecvOnly, None, None, None);
    let video_mid = api.add_media(MediaKind::Video, str0m::media::Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or_else(|| EngineError::BadSdp("no offer to make".into()))?;
    let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    Ok(PullOffer { rtc, pending, video_mid, audio_mid, sdp: offer.to_sdp_string(), local_ufrag })
}

impl PullOffer {
    /// Apply the remote's answer (`setRemoteSDP`).
    pub fn accept(mut self, answer_sdp: &str) -> Result<PullAnswered, EngineError> {
        let answer = str0m::change::SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| EngineError::BadSdp(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| EngineError::BadSdp(e.to_string()))?;
        let media = crate::sdp::summarize(answer_sdp);
        if !media.sends || (!media.has_audio && media.video.is_none()) {
            return Err(EngineError::NoCommonCodecs);
        }
        Ok(PullAnswered {
            peer: Peer {
                rtc: self.rtc,
                video_mid: Some(self.video_mid),
                audio_mid: Some(self.audio_mid),
                pts: [None; 3],
                seq: [0, 0],
                connected: false,
                rids: Vec::new(),
                nacked: false,
                full_history: false,
                early_nomination: None, // here we are the controlling side
            },
            video: media.video,
            has_audio: media.has_audio,
            remote_addrs: crate::sdp::udp_candidates(answer_sdp),
        })
    }
}

/// A [`VideoStats`] from str0m's ingress or egress counters: bytes, packets, NACKs, PLIs, FIRs.
fn video_stats(c: [u64; 5], lost: Option<u64>, loss: Option<f32>, rtt: Option<Duration>) -> VideoStats {
    let [bytes, packets, nacks, plis, firs] = c;
    VideoStats { bytes, packets, nacks, plis, firs, lost, loss, rtt, nack_history_full: false }
}

/// Transport protocol of a datagram: the shared UDP socket or an ICE-TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

/// A datagram to send, as the engine produced it.
pub struct Transmit {
    pub proto: Proto,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What a peer reports while it is drained.
pub enum PeerEvent {
    /// ICE and DTLS are up: media flows from here on.
    Connected,
    /// ICE consent lost or the remote closed: the peer is gone.
    Disconnected,
    /// A frame received from a publishing browser.
    Frame(Frame),
    /// The remote (a viewer) asks for a keyframe.
    KeyframeRequest,
    /// A received frame could not be depacketized and was dropped.
    BadFrame(String),
    /// The peer's video counters ([`crate::video_rate`]), every `STATS_INTERVAL`.
    VideoStats(VideoStats),
    /// The peer's audio bytes so far (received from a publisher, sent to a viewer), as often.
    AudioBytes(u64),
    /// The simulcast layers (`rid`s) a publisher's offer announced for its video.
    SimulcastRids(Vec<String>),
    /// A frame of one simulcast layer from a publishing browser, with the layer's `rid`.
    LayerFrame(String, Frame),
    /// The video counters of one simulcast layer received (its `rid`).
    LayerStats(String, VideoStats),
    /// The send-side bandwidth estimate towards this peer (a viewer), bit/s.
    Bandwidth(u64),
}

pub struct Peer {
    rtc: Rtc,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    /// Subscriber side: our payload type per codec (H264, VP8, Opus), found on first use.
    pts: [Option<Option<Pt>>; 3],
    /// Subscriber side: next RTP sequence number of the video and the audio stream.
    seq: [u64; 2],
    connected: bool,
    /// Publisher side: the simulcast layers (`rid`s) seen so far.
    rids: Vec<str0m::media::Rid>,
    /// Our ICE password while the browser has not nominated a pair yet (see [`nominate_early`]).
    early_nomination: Option<String>,
    /// Subscriber side: the viewer has asked for video again (a NACK), and whether its history
    /// is the full one yet ([`Peer::bound_nack_history`]).
    nacked: bool,
    full_history: bool,
}

impl Peer {
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Keep the video packets a viewer may ask again for: [`NACK_HISTORY_CLEAN_MS`] until it
    /// first asks, then [`NACK_HISTORY_MS`]. str0m's history grows only as far as that age
    /// needs (BENCHMARKS.md, "NACK history"). str0m starts a new history on each call, so the
    /// switch is made just before a keyframe is written ([`Peer::write_frame`]): the packets
    /// the short history loses then are ones the viewer's decoder no longer needs. str0m's
    /// guard against resend storms (resends above 15 % of the bytes sent in the last second are
    /// dropped) is on from the start: it keeps its byte history across the call, where one
    /// started at the switch would count a lossy viewer's first resends against a few packets
    /// sent and drop them.
    fn bound_nack_history(&mut self, mid: Mid) {
        let full = NACK_HISTORY_MS.load(std::sync::atomic::Ordering::Relaxed);
        let ms = if self.full_history { full } else { full.min(NACK_HISTORY_CLEAN_MS) };
        if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
            tx.set_rtx_cache(SEND_BUFFER_VIDEO, Duration::from_millis(ms), Some(0.15));
        }
    }

    /// Feed one received datagram. Errors mean the datagram was not for this peer or was
    /// malformed; the peer stays usable.
    pub fn receive(
        &mut self,
        now: Instant,
        proto: Proto,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) -> Result<(), EngineError> {
        let proto = match proto {
            Proto::Udp => Protocol::Udp,
            Proto::Tcp => Protocol::Tcp,
        };
        let nominated = match &self.early_nomination {
            Some(pass) if buf.first().is_some_and(|&b| b < 2) => nominate_early(buf, pass),
            _ => None,
        };
        if nominated.is_some() {
            self.early_nomination = None;
        }
        let buf = nominated.as_deref().unwrap_or(buf);
        let recv = Receive::new(proto, source, destination, buf)
            .map_err(|e| EngineError::Datagram(e.to_string()))?;
        self.rtc.handle_input(Input::Receive(now, recv)).map_err(|e| EngineError::Rtc(e.to_string()))
    }

    pub fn timeout(&mut self, now: Instant) -> Result<(), EngineError> {
        self.rtc.handle_input(Input::Timeout(now)).map_err(|e| EngineError::Rtc(e.to_string()))
    }

    /// The send side of [`Peer::timeout`] only (the patched str0m's `Rtc::handle_written`): send
    /// queues, bandwidth estimation, pacer. ICE, RTCP and stats keep their own deadlines.
    fn send_side_timeout(&mut self, now: Instant) -> Result<(), EngineError> {
        self.rtc.handle_written(now).map_err(|e| EngineError::Rtc(e.to_string()))
    }

    /// Drain every pending output: transmits and events go to the callbacks, and the return
    /// value is the next deadline at which [`Peer::timeout`] must be called.
    pub fn poll(
        &mut self,
        mut transmit: impl FnMut(Transmit),
        mut event: impl FnMut(PeerEvent),
    ) -> Result<Instant, EngineError> {
        let mut immediate = 0;
        loop {
            if !self.rtc.is_alive() {
                return Err(EngineError::Closed);
            }
            let out = self.rtc.poll_output().map_err(|e| EngineError::Rtc(e.to_string()))?;
            match out {
                // A deadline already reached (str0m packetizes a written frame on its next
                // timeout) is served here and now: a timer armed for "now" would cost a timer
                // registration and another actor poll per frame per viewer.
                Output::Timeout(at) if immediate < MAX_IMMEDIATE_TIMEOUTS && at <= Instant::now() => {
                    immediate += 1;
                    if matches!(self.rtc.last_timeout_reason(), str0m::Reason::Pacer(_)) {
                        // The pacer letting the next queued packet out (a viewer with bandwidth
                        // estimation asks this once per packet): only the send side needs the
                        // time. Any other deadline due as well comes next, as the soonest.
                        self.send_side_timeout(Instant::now())?;
                    } else {
                        self.timeout(Instant::now())?;
                    }
                }
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => transmit(Transmit {
                    proto: if t.proto == Protocol::Tcp { Proto::Tcp } else { Proto::Udp },
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Output::Event(e) => match e {
                    Event::Connected => {
                        self.connected = true;
                        event(PeerEvent::Connected)
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        event(PeerEvent::Disconnected)
                    }
                    Event::MediaAdded(m) => match m.kind {
                        MediaKind::Video if self.video_mid.is_none() => {
                            self.video_mid = Some(m.mid);
                            self.bound_nack_history(m.mid);
                            if let Some(sim) = m.simulcast {
                                let layers = if sim.recv.is_empty() { sim.send } else { sim.recv };
                                let rids = layers.iter().map(|l| l.rid.to_string()).collect::<Vec<_>>();
                                if !rids.is_empty() {
                                    event(PeerEvent::SimulcastRids(rids));
                                }
                            }
                        }
                        MediaKind::Audio if self.audio_mid.is_none() => {
                            self.audio_mid = Some(m.mid);
                            // Opus packets are never resent (not nackable): no resend ratio
                            // to watch, so no per-packet byte history for it either.
                            if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(m.mid, None) {
                                tx.set_rtx_cache(SEND_BUFFER_AUDIO, Duration::from_secs(1), None);
                            }
                        }
                        _ => {}
                    },
                    Event::EgressBitrateEstimate(str0m::bwe::BweKind::Twcc { estimate, .. }) => {
                        event(PeerEvent::Bandwidth(estimate.as_u64()))
                    }
                    Event::MediaData(d) => {
                        let d = *d;
                        let codec = match d.params.spec().codec {
                            str0m::format::Codec::H264 => Codec::H264,
                            str0m::format::Codec::Vp8 => Codec::Vp8,
                            str0m::format::Codec::Opus => Codec::Opus,
                            _ => continue,
                        };
                        let keyframe = match &d.codec_extra {
                            str0m::format::CodecExtra::H264(x) => x.is_keyframe,
                            str0m::format::CodecExtra::Vp8(x) => x.is_keyframe,
                            _ => {
                                codec.kind() == FrameKind::Video
                                    && crate::media::is_keyframe(&d.data, codec == Codec::H264)
                            }
                        };
                        let frame = Frame {
                            codec,
                            keyframe,
                            rtp_time: d
                                .time
                                .rebase(
                                    str0m::media::Frequency::new(codec.clock_rate()).expect("non-zero clock"),
                                )
                                .numer(),
                            captured: d.network_time,
                            data: d.data,
                        };
                        match d.rid {
                            Some(rid) => {
                                if !self.rids.contains(&rid) {
                                    self.rids.push(rid);
                                }
                                event(PeerEvent::LayerFrame(rid.to_string(), frame))
                            }
                            None => event(PeerEvent::Frame(frame)),
                        }
                    }
                    Event::KeyframeRequest(_) => event(PeerEvent::KeyframeRequest),
                    Event::MediaIngressStats(s) if Some(s.mid) == self.audio_mid => {
                        event(PeerEvent::AudioBytes(s.bytes))
                    }
                    Event::MediaEgressStats(s) if Some(s.mid) == self.audio_mid => {
                        event(PeerEvent::AudioBytes(s.bytes))
                    }
                    Event::MediaIngressStats(s) if Some(s.mid) == self.video_mid => {
                        let (b, p, n, pl, f) = (s.bytes, s.packets, s.nacks, s.plis, s.firs);
                        let stats = video_stats([b, p, n, pl, f], None, s.loss, s.rtt);
                        match s.rid {
                            Some(rid) => event(PeerEvent::LayerStats(rid.to_string(), stats)),
                            None => event(PeerEvent::VideoStats(stats)),
                        }
                    }
                    Event::MediaEgressStats(s) if Some(s.mid) == self.video_mid && s.rid.is_none() => {
                        let (b, p, n, pl, f) = (s.bytes, s.packets, s.nacks, s.plis, s.firs);
                        self.nacked |= n > 0;
                        let lost = s.remote.map(|r| r.packets_lost);
                        let stats = video_stats([b, p, n, pl, f], lost, s.loss, s.rtt);
                        let stats = VideoStats { nack_history_full: self.full_history, ..stats };
                        event(PeerEvent::VideoStats(stats))
                    }
                    _ => {}
                },
            }
        }
    }

    /// How long the oldest video packet queued for this viewer has waited: str0m's pacer holds
    /// what the bandwidth estimate does not let out yet. None when nothing waits.
    pub fn video_backlog(&mut self, now: Instant) -> Option<Duration> {
        let mid = self.video_mid?;
        let mut api = self.rtc.direct_api();
        let first = api.stream_tx_by_mid(mid, None)?.queue_info()?.first_unsent()?;
        Some(now.saturating_duration_since(first))
    }

    /// Write a frame of the stream this peer plays, as the stream's shared RTP payloads (see
    /// [`StreamPacketizer`]): this peer only stamps its own headers and encrypts. Returns false
    /// when this peer cannot carry it (not connected yet, no such media, or no payload type for
    /// its codec): the caller skips it. `rtp_time` is the frame's time on this peer's stream
    /// (the source's, or shifted to keep a viewer's timeline across a simulcast switch).
    pub fn write_frame(
        &mut self,
        frame: &Frame,
        packets: &Packets,
        rtp_time: u64,
    ) -> Result<bool, EngineError> {
        if !self.connected || packets.is_empty() {
            return Ok(false);
        }
        let (mid, seq_slot) = match frame.kind() {
            FrameKind::Video => (self.video_mid, 0),
            FrameKind::Audio => (self.audio_mid, 1),
        };
        let Some(mid) = mid else { return Ok(false) };
        let slot = match frame.codec {
            Codec::H264 => 0,
            Codec::Vp8 => 1,
            Codec::Opus => 2,
        };
        let pt = match self.pts[slot] {
            Some(pt) => pt,
            None => {
                let pt = self.rtc.writer(mid).and_then(|w| pick_pt(w.payload_params(), frame.codec));
                self.pts[slot] = Some(pt);
                pt
            }
        };
        let Some(pt) = pt else { return Ok(false) };
        if frame.keyframe && self.nacked && !self.full_history && Some(mid) == self.video_mid {
            self.full_history = true;
            self.bound_nack_history(mid);
        }
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return Ok(false);
        };
        let video = frame.kind() == FrameKind::Video;
        // The RTP timestamp, truncated to 32 bits as on the wire.
        let time = rtp_time as u32;
        let last = packets.payloads.len() - 1;
        for (i, payload) in packets.payloads.iter().enumerate() {
            let seq = self.seq[seq_slot];
            self.seq[seq_slot] += 1;
            // Video: the marker ends the frame, and packets are kept to answer NACKs. Opus
            // packets are not retransmitted (as str0m's own payloader does).
            let w = RtpWrite::new(pt, seq.into(), time, frame.captured, payload.clone())
                .marker(video && i == last)
                .nackable(video);
            stream.write_rtp(w);
        }
        // Written packets leave on the engine's next poll, once their queue has seen the time.
        self.send_side_timeout(Instant::now())?;
        Ok(true)
    }

    /// Ask the publishing browser for a keyframe (PLI): of the simulcast layer `rid`, or of
    /// every layer (None; the only stream when there is no simulcast).
    pub fn request_keyframe(&mut self, rid: Option<&str>) -> bool {
        let Some(mid) = self.video_mid else {
            return false;
        };
        let Some(mut w) = self.rtc.writer(mid) else { return false };
        if self.rids.is_empty() {
            return w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok();
        }
        let mut any = false;
        for r in self.rids.iter().filter(|r| rid.is_none_or(|want| want == &***r)) {
            any |= w.request_keyframe(Some(*r), KeyframeRequestKind::Pli).is_ok();
        }
        any
    }

    /// What a viewer's bandwidth estimation aims for: `desired` (bit/s) is what it probes
    /// towards (the best layer of the stream), `minimum` what padding keeps up to (the next
    /// layer up, so the estimate can grow to it).
    pub fn set_bandwidth_goal(&mut self, minimum: u64, desired: u64) {
        use str0m::bwe::Bitrate;
        self.rtc.bwe().set_bitrate(Bitrate::bps(minimum.min(desired)), Bitrate::bps(desired));
    }

    /// Close the peer (sends nothing further).
    pub fn close(&mut self) {
        self.rtc.disconnect();
    }
}

/// Our payload type for a codec among those negotiated. H.264 prefers packetization-mode 1
/// (what every source here produces); the profile-level-id is not matched, because browsers'
/// decoders play any Baseline/Main stream whatever profile was negotiated.
fn pick_pt<'a>(params: impl Iterator<Item = &'a PayloadParams>, codec: Codec) -> Option<Pt> {
    let want = match codec {
        Codec::H264 => str0m::format::Codec::H264,
        Codec::Vp8 => str0m::format::Codec::Vp8,
        Codec::Opus => str0m::format::Codec::Opus,
    };
    let mut best: Option<(u8, Pt)> = None;
    for p in params.filter(|p| p.spec().codec == want) {
        let score = match (codec, p.spec().format.packetization_mode) {
            (Codec::H264, Some(1)) => 2,
            (Codec::H264, _) => 1,
            _ => 2,
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, p.pt()));
        }
    }
    best.map(|(_, pt)| pt)
}

/// STUN binding requests carry `<server ufrag>:<client ufrag>` as USERNAME: the server ufrag
/// names the peer the datagram belongs to. Returns None for anything that is not STUN.
pub fn stun_server_ufrag(buf: &[u8]) -> Option<String> {
    // First two bits of a STUN message are zero, and it carries the magic cookie.
    if buf.len() < 20 || buf[0] >= 2 || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let msg = str0m::ice::StunMessage::parse(buf).ok()?;
    msg.split_username().map(|(server, _)| server.to_string())
}

/// The browser's first valid connectivity check, as if it nominated its pair: the same Binding
/// request with USE-CANDIDATE added (MESSAGE-INTEGRITY and FINGERPRINT computed again with our
/// password), or `None` to pass `buf` on as it is (not a Binding request from a controlling
/// agent with our valid integrity, or already nominating).
///
/// Why: we are an ICE-lite agent, and str0m sends nothing (our DTLS flight included) before the
/// controlling agent nominates a pair. Chromium nominates in a later check, ~50 ms after the
/// first one succeeded, and its DTLS ClientHello waits for our answering flight until its own
/// retransmission timer fires: measured, DTLS completed ~60 ms after ICE on loopback, which was
/// most of a viewer's wait for its first frame. Lite servers such as mediasoup send on the
/// first pair that sends them a valid check; a later nomination of another pair still moves
/// str0m there.
pub fn nominate_early(buf: &[u8], pass: &str) -> Option<Vec<u8>> {
    use hmac::{Hmac, Mac};
    const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
    const MESSAGE_INTEGRITY: u16 = 0x0008;
    const FINGERPRINT: u16 = 0x8028;
    const USE_CANDIDATE: u16 = 0x0025;
    const ICE_CONTROLLING: u16 = 0x802a;
    let length = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]) as usize;
    if buf.len() < 20 || buf[0..2] != BINDING_REQUEST || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    if length(buf) != buf.len() - 20 {
        return None;
    }
    let (mut pos, mut integrity_at, mut controlling) = (20, None, false);
    while pos + 4 <= buf.len() {
        let kind = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
        let len = u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize;
        match kind {
            USE_CANDIDATE => return None,
            ICE_CONTROLLING => controlling = true,
            MESSAGE_INTEGRITY if integrity_at.is_none() && len == 20 => integrity_at = Some(pos),
            FINGERPRINT => {}
            _ if integrity_at.is_some() => return None, // only FINGERPRINT may follow the integrity
            _ => {}
        }
        pos += 4 + len.div_ceil(4) * 4;
    }
    let at = integrity_at.filter(|_| controlling && pos == buf.len())?;
    let mac_of = |msg: &[u8], len_with_integrity: usize| {
        let mut head = msg.to_vec();
        head[2..4].copy_from_slice(&(len_with_integrity as u16).to_be_bytes());
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(pass.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(&head);
        mac.finalize().into_bytes()
    };
    if mac_of(&buf[..at], at - 20 + 24)[..] != buf[at + 4..at + 24] {
        return None; // not our credentials: str0m refuses it as before
    }
    let mut out = Vec::with_capacity(buf.len() + 4);
    out.extend_from_slice(&buf[..at]);
    out.extend_from_slice(&USE_CANDIDATE.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let mac = mac_of(&out, out.len() - 20 + 24);
    out.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
    out.extend_from_slice(&20u16.to_be_bytes());
    out.extend_from_slice(&mac);
    let with_fingerprint = (out.len() - 20 + 8) as u16;
    out[2..4].copy_from_slice(&with_fingerprint.to_be_bytes());
    let crc = crc32fast::hash(&out) ^ 0x5354_554e;
    out.extend_from_slice(&FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// Deadlines already due that [`Peer::poll`] serves itself before handing one to the timer.
const MAX_IMMEDIATE_TIMEOUTS: u32 = 4;

/// How far ahead a timer is armed at most, even if the engine asks for later.
pub const MAX_TIMER: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("connected", &self.connected).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::nominate_early;
    use hmac::{Hmac, Mac};
    use str0m::ice::{StunMessage, TransId};

    fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A Binding request as a controlling (or controlled) agent sends it to us, with `pass`.
    fn check(pass: &str, controlling: bool, use_candidate: bool) -> (Vec<u8>, TransId) {
        let id = TransId::new();
        let msg = StunMessage::binding_request("srv:cli", id, controlling, 7, 100, use_candidate);
        let mut buf = vec![0u8; 512];
        let n = msg.to_bytes(Some(pass.as_bytes()), &mut buf, hmac_sha1).unwrap();
        buf.truncate(n);
        (buf, id)
    }

    #[test]
    fn the_first_check_nominates_with_valid_integrity_and_fingerprint() {
        let (buf, id) = check("our-password-0123456789", true, false);
        let out = nominate_early(&buf, "our-password-0123456789").expect("rewritten");
        let msg = StunMessage::parse(&out).expect("parses (fingerprint checked)");
        assert!(msg.is_binding_request() && msg.use_candidate());
        assert_eq!(msg.trans_id(), id);
        assert_eq!(msg.split_username(), Some(("srv", "cli")));
        assert_eq!(msg.prio(), Some(100));
        assert!(msg.verify(b"our-password-0123456789", hmac_sha1), "integrity with our password");
        // The original's fingerprint, recomputed the same way, for the algorithm itself.
        let fp = crc32fast::hash(&buf[..buf.len() - 8]) ^ 0x5354_554e;
        assert_eq!(buf[buf.len() - 4..], fp.to_be_bytes());
    }

    #[test]
    fn anything_else_passes_unchanged() {
        let pass = "our-password-0123456789";
        // Not our password: left for str0m to refuse.
        assert!(nominate_early(&check("another-password-000000", true, false).0, pass).is_none());
        // Already nominating, or from a controlled agent.
        assert!(nominate_early(&check(pass, true, true).0, pass).is_none());
        assert!(nominate_early(&check(pass, false, false).0, pass).is_none());
        // Truncated, garbage, not STUN.
        let (buf, _) = check(pass, true, false);
        for cut in [0, 1, 19, 20, 24, buf.len() - 1] {
            assert!(nominate_early(&buf[..cut], pass).is_none(), "cut at {cut}");
        }
        assert!(nominate_early(&[0u8; 64], pass).is_none());
        let mut lying = buf.clone();
        lying[3] = lying[3].wrapping_add(4); // length field past the end
        assert!(nominate_early(&lying, pass).is_none());
    }
}
