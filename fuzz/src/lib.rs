//! # sluice-fuzz: one fuzz target per parser that takes outside input
//!
//! Each target is a plain function `fn(&[u8])` that feeds the bytes to the real parser the way
//! the server does, and must return, whatever the bytes: a panic, an abort, an allocation past
//! libFuzzer's limit or a hang is a bug in the parser. The functions are shared by
//! - the libFuzzer binaries in `fuzz_targets/` (`cargo fuzz run <target>`, or `fuzz/run.sh`), and
//! - the corpus replay in `actors/tests/fuzz_corpus.rs`, which includes this file by path and
//!   runs every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through it in
//!   the ordinary `cargo test --workspace`.
//!
//! [`TARGETS`] lists them by name; [`seeds`] makes the generated part of the seed corpus (the
//! ffmpeg-made part comes from `fuzz/make-seeds.sh`).
//!
//! Panics that the server itself catches (RTMP input that breaks `rml_rtmp`, an AAC access unit
//! that breaks symphonia's decoder, an offer that breaks str0m's `accept_offer`: all run under
//! `catch_unwind` in production, and the connection is closed, the access unit dropped or the
//! offer refused) are caught here the same way: see [`quiet_caught_panics`]. Any other panic,
//! and any panic that escapes the server's code, reaches libFuzzer and is a crash.

#![allow(clippy::missing_panics_doc)]

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Once, OnceLock};
use std::time::Instant;

use sluice_actors::engine::{self, Candidates, Role};
use sluice_actors::flv::FlvToFrames;
use sluice_actors::media::{self, Codec, Frame};
use sluice_actors::outbound::{self, HostPattern};
use sluice_actors::protocol::{self, ClientMessage};
use sluice_actors::rtsp::{self, RtspUrl};
use sluice_actors::transcode::AacToOpus;
use sluice_actors::turn_core::auth::{Authenticator, StaticUser};
use sluice_actors::turn_core::framing::{self, Kind, StreamSplitter};
use sluice_actors::turn_core::wire::{self, Attr, Incoming};
use sluice_actors::{flv, h264, mp4_reader, sdp};

/// A fuzz target: any bytes in, must return.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/` and `fuzz/run.sh`
/// name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("wcs_message", wcs_message),
    ("sdp_text", sdp_text),
    ("sdp_offer", sdp_offer),
    ("turn_framing", turn_framing),
    ("turn_message", turn_message),
    ("flv_tags", flv_tags),
    ("aac_config", aac_config),
    ("rtmp_ingest", rtmp_ingest),
    ("mp4_reader", mp4_file),
    ("h264", h264_nals),
    ("outbound_hosts", outbound_hosts),
    ("stun_check", stun_check),
];

// ---- Panics the server catches --------------------------------------------------------------

thread_local! {
    /// Set while a call the server runs under `catch_unwind` is running.
    static CAUGHT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Crates whose panics the server catches where it calls them: symphonia (the AAC decoder, in
/// `transcode::AacToOpus`) and str0m (`accept_offer`, in `engine::negotiate`).
const CAUGHT_CRATES: [&str; 2] = ["/symphonia", "/str0m"];

/// Install (once) a panic hook that stays silent and does not abort for panics the server
/// itself catches: those inside [`caught`], and those raised in the [`CAUGHT_CRATES`]. Every other panic goes to
/// the hook that was there before: libFuzzer's, which aborts (a crash), or the test harness's.
/// A panic that escapes the target is a crash either way: libFuzzer aborts on it.
pub fn quiet_caught_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_caught = CAUGHT.with(|c| c.get());
            let in_caught_crate =
                info.location().is_some_and(|l| CAUGHT_CRATES.iter().any(|c| l.file().contains(c)));
            if !in_caught && !in_caught_crate {
                previous(info);
            }
        }));
    });
}

/// Run `f` as the server does, under `catch_unwind` (see [`quiet_caught_panics`]).
fn caught<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    CAUGHT.with(|c| c.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CAUGHT.with(|c| c.set(false));
    r
}

// ---- WCS signalling ------------------------------------------------------------------------

/// A WebSocket text frame from a WCS client (`protocol::parse_client`), and what the session
/// does next with the parsed message's fields.
pub fn wcs_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match protocol::parse_client(text) {
        Ok(ClientMessage::PublishStream(r)) | Ok(ClientMessage::PlayStream(r)) => {
            let info = r.to_info(true, "session", "appKey", 0);
            let _ = protocol::status_event(&info);
            let _ = sdp::summarize(&r.sdp);
        }
        Ok(ClientMessage::SendStreamEvent(e)) => {
            let _ = protocol::mute_change(&e.kind);
            let _ = protocol::relayable_event(&e.kind);
            let _ = protocol::stream_event(&e.media_session_id, &e.kind, &e.payload);
        }
        Ok(ClientMessage::Connection(c)) => {
            let _ = protocol::user_data(&c, "session");
        }
        Ok(_) => {}
        Err(e) => {
            let _ = protocol::fail(&e);
        }
    }
}

// ---- SDP -----------------------------------------------------------------------------------

/// Our own SDP helpers on any text: `sdp::summarize`, `sdp::udp_candidates`, `sdp::unify_msid`.
pub fn sdp_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sdp::summarize(&text);
    let _ = sdp::udp_candidates(&text);
    let unified = sdp::unify_msid(&text);
    let _ = sdp::summarize(&unified);
}

/// A browser's offer through `engine::negotiate` (str0m's `SdpOffer` parse, its answer, and our
/// helpers on both), as a publisher or a viewer of each codec: the first byte picks the role.
pub fn sdp_offer(data: &[u8]) {
    quiet_caught_panics();
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return }; // the WS frame is text
    let role = match pick % 4 {
        0 => Role::Publish,
        1 => Role::Play { video: Some(Codec::H264) },
        2 => Role::Play { video: Some(Codec::Vp8) },
        _ => Role::Play { video: None },
    };
    let cands = Candidates {
        addrs: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 31000)],
        udp: true,
        tcp: pick & 4 != 0,
    };
    let _ = engine::negotiate(text, role, &cands);
}

// ---- STUN / TURN ---------------------------------------------------------------------------

/// Bytes on a TURN TCP connection: cut into frames by `StreamSplitter` (the input arrives in
/// reads of varying sizes), each frame classified and read as a UDP datagram would be.
pub fn turn_framing(data: &[u8]) {
    let _ = framing::classify(data);
    let _ = framing::parse_channel_data(data);
    let mut splitter = StreamSplitter::new();
    let mut rest = data;
    let mut step = 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        splitter.extend(&rest[..n]);
        rest = &rest[n..];
        step = step * 3 % 1500 + 1;
        loop {
            match splitter.next_frame() {
                Ok(Some(frame)) => match framing::classify(&frame) {
                    Kind::ChannelData => {
                        let _ = framing::parse_channel_data(&frame);
                    }
                    Kind::Stun => {
                        let _ = wire::read(&frame);
                    }
                    Kind::Invalid => {}
                },
                Ok(None) => break,
                Err(_) => return, // the server closes the connection
            }
        }
        let _ = splitter.pending();
    }
}

/// The TURN server's fixed clock and client address: seeds made by [`seeds`] carry nonces
/// minted for them, so mutations reach the integrity check and beyond.
pub const TURN_NOW: u64 = 1_800_000_000;
pub const TURN_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
pub const TURN_REALM: &str = "sluice";
pub const TURN_USER: &str = "fuzz:fuzzpass";
pub const TURN_SECRET: &str = "fuzz-secret";

fn turn_auth() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let user: StaticUser = TURN_USER.parse().expect("a valid static user");
        let secret = sluice_actors::turn_core::auth::Secret::new(TURN_SECRET);
        Authenticator::new(TURN_REALM, &[user], Some(secret), [7; 32])
    })
}

/// A STUN/TURN datagram as the TURN server reads it: `wire::read`, unknown attributes, the
/// request's fields, long-term authentication, and the answer it would write.
pub fn turn_message(data: &[u8]) {
    let _ = turn_request(data);
}

/// [`turn_message`], saying whether the input was an authenticated request.
pub fn turn_request(data: &[u8]) -> bool {
    let _ = wire::response_code(data);
    match wire::read(data) {
        Ok(Incoming::Request(msg)) => {
            let unknown = wire::unknown_attributes(&msg);
            if !unknown.is_empty() {
                let _ = wire::unknown(&msg, &unknown);
                return false;
            }
            let req = match wire::parse_request(&msg) {
                Ok(r) => r,
                Err(code) => {
                    let _ = wire::error(&msg, code, None);
                    return false;
                }
            };
            let _ = req.name();
            match turn_auth().authenticate(&msg, TURN_CLIENT, TURN_NOW) {
                Ok(authed) => {
                    let peer = SocketAddr::new(TURN_CLIENT, 40000);
                    let attrs = [Attr::XorMapped(peer), Attr::XorRelayed(peer), Attr::Lifetime(600)];
                    let _ = wire::success(&msg, &attrs, Some(&authed.key));
                    true
                }
                Err(e) => {
                    let nonce = turn_auth().make_nonce(TURN_CLIENT, TURN_NOW);
                    let _ = wire::challenge(&msg, e.code(), TURN_REALM, &nonce);
                    false
                }
            }
        }
        Ok(Incoming::Send { peer, data }) => {
            let _ = wire::data_indication(peer, data);
            false
        }
        Ok(Incoming::Ignored) | Err(_) => false,
    }
}

// ---- FLV and AAC ---------------------------------------------------------------------------

/// An FLV file's tags (as `ffmpeg -f flv` writes them: the body of each is what an RTMP
/// message carries) through `FlvToFrames`, as RTMP ingest feeds it: video tags to H.264
/// frames, audio tags through AAC→Opus. Without an FLV header the bytes are one video tag
/// body, then one audio tag body.
pub fn flv_tags(data: &[u8]) {
    quiet_caught_panics();
    let mut flv = FlvToFrames::default();
    let now = Instant::now();
    let mut out = Vec::new();
    if data.len() < 9 || &data[..3] != b"FLV" {
        let _ = flv::parse_video(data);
        let _ = flv::parse_audio(data);
        let _ = flv.video(0, data, now);
        let _ = flv.audio(0, data, now, &mut out);
        return;
    }
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len.saturating_add(4); // PreviousTagSize0
    let mut tags = 0;
    while let Some(h) = data.get(pos..pos + 11) {
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let Some(body) = data.get(pos + 11..pos + 11 + size) else { break };
        match h[0] & 0x1f {
            8 => {
                let _ = flv.audio(ts, body, now, &mut out);
                out.clear();
            }
            9 => {
                if let Ok(Some(frame)) = flv.video(ts, body, now) {
                    frame_checks(&frame);
                }
            }
            _ => {}
        }
        let _ = flv.tracks();
        pos += 11 + size + 4;
        tags += 1;
        if tags > 2000 {
            break;
        }
    }
}

/// What sinks do with an H.264 frame before sending it (keyframe test, picture size).
fn frame_checks(frame: &Frame) {
    let _ = frame.dimensions();
    let _ = media::is_keyframe(&frame.data, true);
    let _ = h264::is_disposable(&frame.data);
}

/// An AudioSpecificConfig (MP4 `esds`, the FLV AAC sequence header) through `AacToOpus::new`:
/// `AscInfo`'s parse, then the decoder and resampler it sets up.
pub fn aac_config(data: &[u8]) {
    quiet_caught_panics();
    if let Ok(tc) = AacToOpus::new(data) {
        let _ = (tc.channels(), tc.sample_rate(), tc.pre_skip());
    }
}

// ---- RTMP ----------------------------------------------------------------------------------

/// Bytes an RTMP encoder sends, fed to `rml_rtmp`'s server side as `sources/rtmp.rs` does:
/// the handshake, then the session (under `catch_unwind`, as there), accepting the connection
/// and the publish, and FLV bodies of video and audio messages to `FlvToFrames`.
///
/// The first byte picks the mode: odd, the input is the raw handshake (and what follows it);
/// even, an in-process client completes the handshake first and the rest is the session's
/// input after it, delivered in reads of `1 + byte/2 * 8` bytes (so seeds made by [`seeds`]
/// from a real client session reach the publish and the media).
pub fn rtmp_ingest(data: &[u8]) {
    let _ = rtmp_session(data);
}

/// How far an [`rtmp_ingest`] input got: publish accepted, H.264 frames made, audio tags fed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtmpReached {
    pub published: bool,
    pub video_frames: usize,
    pub audio_tags: usize,
}

/// [`rtmp_ingest`], saying how far the input got.
pub fn rtmp_session(data: &[u8]) -> RtmpReached {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

    quiet_caught_panics();
    let mut reached = RtmpReached::default();
    let Some((&mode, rest)) = data.split_first() else { return reached };
    let mut server = Handshake::new(PeerType::Server);
    let session_input: Vec<u8> = if mode & 1 == 1 {
        match server.process_bytes(rest) {
            Ok(HandshakeProcessResult::Completed { remaining_bytes, .. }) => remaining_bytes,
            _ => return reached,
        }
    } else {
        match handshake_with(&mut server) {
            Some(()) => rest.to_vec(),
            None => return reached,
        }
    };
    let Ok((mut session, _initial)) = ServerSession::new(ServerSessionConfig::new()) else { return reached };
    let mut flv = FlvToFrames::default();
    let now = Instant::now();
    let mut audio_out = Vec::new();
    let read = 1 + usize::from(mode / 2) * 8;
    for chunk in session_input.chunks(read) {
        let results = match caught(|| session.handle_input(chunk)) {
            Ok(Ok(r)) => r,
            _ => return reached, // the server closes the connection
        };
        let mut queue: std::collections::VecDeque<ServerSessionResult> = results.into();
        while let Some(r) = queue.pop_front() {
            let ServerSessionResult::RaisedEvent(e) = r else { continue };
            let more = match e {
                ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                    session.accept_request(request_id)
                }
                ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                    if reached.published || sluice_actors::rtmp::stream_name(&stream_key).is_none() {
                        let _ = session.reject_request(request_id, "NetStream.Publish.BadName", "Bad name");
                        return reached;
                    }
                    reached.published = true;
                    session.accept_request(request_id)
                }
                ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    let _ = session.reject_request(request_id, "NetStream.Play.Failed", "ingest only");
                    return reached;
                }
                ServerSessionEvent::PublishStreamFinished { .. } => return reached,
                ServerSessionEvent::VideoDataReceived { data, timestamp, .. } if reached.published => {
                    if let Ok(Some(frame)) = flv.video(timestamp.value, &data, now) {
                        frame_checks(&frame);
                        reached.video_frames += 1;
                    }
                    continue;
                }
                ServerSessionEvent::AudioDataReceived { data, timestamp, .. } if reached.published => {
                    let _ = flv.audio(timestamp.value, &data, now, &mut audio_out);
                    reached.audio_tags += 1;
                    audio_out.clear();
                    continue;
                }
                _ => continue,
            };
            match more {
                Ok(more) => queue.extend(more),
                Err(_) => return reached,
            }
        }
    }
    reached
}

/// Complete `server`'s handshake with an in-process client.
fn handshake_with(server: &mut rml_rtmp::handshake::Handshake) -> Option<()> {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut client = Handshake::new(PeerType::Client);
    let mut to_server = client.generate_outbound_p0_and_p1().ok()?;
    let (mut server_done, mut client_done) = (false, false);
    for _ in 0..4 {
        if !to_server.is_empty() && !server_done {
            let to_client = match server.process_bytes(&to_server).ok()? {
                HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
                HandshakeProcessResult::Completed { response_bytes, .. } => {
                    server_done = true;
                    response_bytes
                }
            };
            to_server = Vec::new();
            if !to_client.is_empty() && !client_done {
                to_server = match client.process_bytes(&to_client).ok()? {
                    HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
                    HandshakeProcessResult::Completed { response_bytes, .. } => {
                        client_done = true;
                        response_bytes
                    }
                };
            }
        }
        if server_done && client_done {
            return Some(());
        }
    }
    server_done.then_some(())
}

// ---- MP4 -----------------------------------------------------------------------------------

/// An MP4 file (progressive or fragmented) as VOD reads it: `mp4_reader::index`, then the first
/// samples read and turned into frames (`avcc_to_annexb` for H.264, the AAC config checked).
pub fn mp4_file(data: &[u8]) {
    quiet_caught_panics();
    let mut r = Cursor::new(data);
    let Ok(idx) = mp4_reader::index(&mut r) else { return };
    if let Some(mp4_reader::AudioSetup::Aac { asc, .. }) = &idx.audio {
        let _ = AacToOpus::new(asc);
    }
    for s in idx.samples.iter().take(64) {
        let Ok(sample) = mp4_reader::read_sample(&mut r, s) else { continue };
        if s.track == mp4_reader::TrackKind::Video {
            if let Some(mp4_reader::VideoSetup::H264 { sps, pps, length_size }) = &idx.video {
                let au = h264::avcc_to_annexb(&sample, *length_size, s.sync, sps, pps);
                let _ = media::is_keyframe(&au, true);
            }
        }
    }
}

// ---- H.264 ---------------------------------------------------------------------------------

/// The H.264 helpers on any bytes: the Annex-B scanner, Annex-B ↔ AVCC, the
/// `AVCDecoderConfigurationRecord`, SPS parsing (size, profile, reorder depth), slice headers.
pub fn h264_nals(data: &[u8]) {
    let _ = h264::nal_type(data);
    let _ = h264::sps_dimensions(data);
    let _ = h264::sps_profile_idc(data);
    let _ = h264::sps_max_num_reorder_frames(data);
    let _ = h264::slice_type(data);
    let _ = h264::is_disposable(data);
    let _ = media::is_keyframe(data, true);
    if let Ok(c) = h264::AvcConfig::parse(data) {
        let _ = c.dimensions();
        if let (Some(sps), Some(pps)) = (c.sps.first(), c.pps.first()) {
            let _ = flv::avc_decoder_config(sps, pps);
        }
    }
    for nal in h264::annexb_nals(data) {
        let _ = h264::sps_dimensions(nal);
        let _ = h264::sps_max_num_reorder_frames(nal);
        let _ = h264::slice_type(nal);
    }
    let _ = h264::annexb_nal_types(data).count();
    let avcc = h264::annexb_to_avcc(data);
    let ls = data.first().map_or(4, |b| b % 5);
    let _ = h264::avcc_to_annexb(&avcc, 4, true, &[data.to_vec()], &[]);
    let _ = h264::avcc_to_annexb(data, ls, true, &[], &[]);
}

// ---- ICE connectivity checks ----------------------------------------------------------------

/// The ICE password the `stun_check` target and its seeds use.
const STUN_PASS: &str = "fuzz-ice-password-0123456";

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A datagram on the media port as a peer's engine first sees it: the STUN username routing
/// (`engine::stun_server_ufrag`) and the early nomination (`engine::nominate_early`). A check
/// the server rewrites must parse, nominate, and carry integrity valid for our password.
pub fn stun_check(data: &[u8]) {
    let _ = engine::stun_server_ufrag(data);
    if let Some(out) = engine::nominate_early(data, STUN_PASS) {
        let msg = str0m::ice::StunMessage::parse(&out).expect("a rewritten check parses");
        assert!(msg.is_binding_request() && msg.use_candidate(), "the rewrite nominates");
        assert!(msg.verify(STUN_PASS.as_bytes(), hmac_sha1), "the rewrite carries valid integrity");
    }
}

/// Binding requests as browsers send them to us: the first check of a controlling agent
/// (rewritten), a nominating one, one from a controlled agent, one signed with another password.
fn stun_check_seeds() -> Vec<(String, Vec<u8>)> {
    use str0m::ice::{StunMessage, TransId};
    let mut out = Vec::new();
    for (name, controlling, nominate, pass) in [
        ("first-check", true, false, STUN_PASS),
        ("nominating", true, true, STUN_PASS),
        ("controlled", false, false, STUN_PASS),
        ("other-password", true, false, "another-password-0000000"),
    ] {
        let msg = StunMessage::binding_request(
            "srvufrag:cliufrag",
            TransId::new(),
            controlling,
            7,
            1_862_270_975,
            nominate,
        );
        let mut buf = vec![0u8; 512];
        let n = msg.to_bytes(Some(pass.as_bytes()), &mut buf, hmac_sha1).expect("a check fits");
        buf.truncate(n);
        out.push((name.to_string(), buf));
    }
    out
}

// ---- Outbound URLs and allow-lists ---------------------------------------------------------

/// An `rtsp://` play name (`RtspUrl::parse`) and an allow-list line (`HostPattern`'s
/// `FromStr`), matched against each other: the first line is the pattern list (comma
/// separated, as in the environment), the second the host or URL.
pub fn outbound_hosts(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = rtsp::is_rtsp_name(text);
    let _ = rtsp::redact(text);
    let url = RtspUrl::parse(text).ok();
    if let Some(u) = &url {
        let _ = (u.name(), u.host());
    }
    let (patterns, host) = text.split_once('\n').unwrap_or((text, "camera.example.com"));
    let allow: Vec<HostPattern> = patterns.split(',').filter_map(|p| p.parse().ok()).collect();
    let host = RtspUrl::parse(host).map(|u| u.host().to_string()).unwrap_or_else(|_| host.to_string());
    for p in &allow {
        let _ = p.matches(&host);
        let _ = p.is_name();
        let _ = p.matches_ip(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)));
    }
    let addrs = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), "2001:db8::1".parse().expect("an address")];
    let _ = outbound::permits(&allow, &host, &addrs);
    let _ = outbound::precheck(&allow, &host);
}

// ---- Seeds ---------------------------------------------------------------------------------

/// The generated seeds, `(target, file name, bytes)`: captured WCS messages and SDP offers,
/// STUN/TURN requests signed for [`turn_message`]'s clock, an RTMP publish by `rml_rtmp`'s
/// own client, URLs and patterns. `fuzz/make-seeds.sh` adds the ffmpeg-made media files.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |t: &'static str, name: &str, b: Vec<u8>| out.push((t, name.to_string(), b));
    for (name, m) in WCS_SEEDS {
        add("wcs_message", name, m.as_bytes().to_vec());
    }
    for (name, s) in [("chrome-offer", CHROME_OFFER), ("firefox-offer", FIREFOX_OFFER)] {
        add("sdp_text", name, s.as_bytes().to_vec());
        for role in 0..4u8 {
            let mut b = vec![role];
            b.extend_from_slice(s.as_bytes());
            add("sdp_offer", &format!("{name}-role{role}"), b);
        }
    }
    for (name, m) in stun_check_seeds() {
        add("stun_check", &name, m);
    }
    for (name, m) in turn_seeds() {
        add("turn_message", &name, m.clone());
        add("turn_framing", &name, m);
    }
    let mut stream = turn_seeds().into_iter().flat_map(|(_, m)| m).collect::<Vec<u8>>();
    stream.extend_from_slice(&framing::channel_data(0x4000, b"hello relay", true).expect("a small payload"));
    add("turn_framing", "tcp-stream", stream);
    add("turn_message", "channel-data", framing::channel_data(0x4001, b"x", false).expect("small"));
    for (name, asc) in [
        ("lc-44100-stereo", vec![0x12, 0x10]),
        ("lc-48000-mono", vec![0x11, 0x88]),
        ("lc-8000-mono", vec![0x15, 0x88]),
        ("he-aac", vec![0x2b, 0x92, 0x08, 0x00]),
        ("explicit-rate", vec![0x17, 0x80, 0x5d, 0xc0, 0x10]),
    ] {
        add("aac_config", name, asc);
    }
    if let Some(session) = rtmp_publish_session() {
        add("rtmp_ingest", "publish-session", session.clone());
        let mut nines = session;
        nines[0] = 2; // reads of 9 bytes
        add("rtmp_ingest", "publish-session-9-byte-reads", nines);
    }
    for (name, s) in OUTBOUND_SEEDS {
        add("outbound_hosts", name, s.as_bytes().to_vec());
    }
    out
}

const WCS_SEEDS: &[(&str, &str)] = &[
    (
        "connection",
        r#"{"message":"connection","data":[{"appKey":"defaultApp","mediaProviders":["WebRTC"],"keepAlive":false,"authToken":null,"clientVersion":"2.0","clientOSVersion":"5.0 (X11; Linux x86_64)","clientBrowserVersion":"Mozilla/5.0","msePacketizationVersion":2,"custom":{"token":"abc"}}]}"#,
    ),
    (
        "publish",
        r#"{"message":"publishStream","data":[{"mediaSessionId":"a1b2c3","name":"stream1","published":true,"hasVideo":true,"hasAudio":true,"status":"NEW","record":false,"width":640,"height":480,"bitrate":0,"minBitrate":0,"maxBitrate":0,"quality":0,"mediaProvider":"WebRTC","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\n","custom":{},"constraints":{"audio":true,"video":{"width":640,"height":480}}}]}"#,
    ),
    (
        "play",
        r#"{"message":"playStream","data":[{"mediaSessionId":"d4e5","name":"stream1","published":false,"hasVideo":true,"hasAudio":true,"status":"NEW","record":false,"width":0,"height":0,"mediaProvider":"WebRTC","sdp":"v=0\r\n","custom":{}}]}"#,
    ),
    ("unpublish", r#"{"message":"unPublishStream","data":[{"mediaSessionId":"a1b2c3","name":"stream1"}]}"#),
    ("stop", r#"{"message":"stopStream","data":[{"mediaSessionId":"d4e5","name":"stream1"}]}"#),
    (
        "stream-event",
        r#"{"message":"sendStreamEvent","data":[{"mediaSessionId":"a1b2c3","type":"audioMuted","payload":{"a":1}}]}"#,
    ),
    ("available", r#"{"message":"availableStream","data":[{"mediaSessionId":"x","name":"stream1"}]}"#),
    ("snapshot", r#"{"message":"snapshot","data":[{"mediaSessionId":"x","name":"stream1"}]}"#),
    ("send-data", r#"{"message":"sendData","data":[{"operationId":"op1","payload":{"k":"v"}}]}"#),
    ("ping", r#"{"message":"ping","data":[]}"#),
    ("pong", r#"{"message":"pong","data":[null]}"#),
    ("session-debug", r#"{"message":"sessionDebug","data":[{"command":"start"}]}"#),
    ("push-logs", r#"{"message":"pushLogs","data":[{"logs":"line one\nline two"}]}"#),
    ("ignored", r#"{"message":"webRTCMetricsBatch","data":[{"m":[1,2,3]}]}"#),
    ("not-json", "publishStream"),
];

const CHROME_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Wn4B\r\na=ice-pwd:8BQ6HJnX7e0b3mmhpzxOYJ0v\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 3C:4F:2D:8B:1A:9E:77:60:21:5C:DE:0A:44:91:BB:13:F0:6E:2A:58:C9:0D:33:7F:A2:19:E4:65:8C:70:B1:5D\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendonly\r\na=msid:stream a0\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:1001 cname:abc\r\n\
a=ssrc:1001 msid:stream a0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Wn4B\r\na=ice-pwd:8BQ6HJnX7e0b3mmhpzxOYJ0v\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 3C:4F:2D:8B:1A:9E:77:60:21:5C:DE:0A:44:91:BB:13:F0:6E:2A:58:C9:0D:33:7F:A2:19:E4:65:8C:70:B1:5D\r\n\
a=setup:actpass\r\na=mid:1\r\na=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendonly\r\na=msid:stream v0\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 ccm fir\r\n\
a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtpmap:45 AV1/90000\r\n\
a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:abc\r\na=ssrc:2001 msid:stream v0\r\n\
a=ssrc:2002 cname:abc\r\na=ssrc:2002 msid:stream v0\r\n\
a=candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0\r\n";

const FIREFOX_OFFER: &str = "v=0\r\no=mozilla...THIS_IS_SDPARTA-99.0 8048562347302483457 0 IN IP4 0.0.0.0\r\n\
s=-\r\nt=0 0\r\na=fingerprint:sha-256 11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00\r\n\
a=group:BUNDLE 0 1\r\na=ice-options:trickle\r\na=msid-semantic:WMS *\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r\n\
a=fmtp:101 0-15\r\na=ice-pwd:0f5d4c0e8f1a4b2c9d3e6f7a8b9c0d1e\r\na=ice-ufrag:a1b2c3d4\r\na=mid:0\r\n\
a=rtcp-mux\r\na=rtpmap:109 opus/48000/2\r\na=rtpmap:9 G722/8000/1\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=setup:actpass\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n\
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n\
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1\r\na=fmtp:120 max-fs=12288;max-fr=60\r\n\
a=fmtp:124 apt=120\r\na=fmtp:121 max-fs=12288;max-fr=60\r\na=fmtp:125 apt=121\r\na=fmtp:127 apt=126\r\n\
a=fmtp:98 apt=97\r\na=ice-pwd:0f5d4c0e8f1a4b2c9d3e6f7a8b9c0d1e\r\na=ice-ufrag:a1b2c3d4\r\na=mid:1\r\n\
a=rtcp-fb:120 nack\r\na=rtcp-fb:120 nack pli\r\na=rtcp-fb:120 ccm fir\r\na=rtcp-fb:120 goog-remb\r\n\
a=rtcp-fb:126 nack\r\na=rtcp-fb:126 nack pli\r\na=rtcp-fb:126 ccm fir\r\na=rtcp-mux\r\n\
a=rtpmap:120 VP8/90000\r\na=rtpmap:124 rtx/90000\r\na=rtpmap:121 VP9/90000\r\na=rtpmap:125 rtx/90000\r\n\
a=rtpmap:126 H264/90000\r\na=rtpmap:127 rtx/90000\r\na=rtpmap:97 H264/90000\r\na=rtpmap:98 rtx/90000\r\n\
a=setup:actpass\r\n";

const OUTBOUND_SEEDS: &[(&str, &str)] = &[
    ("url-plain", "rtsp://camera.example.com:554/stream1"),
    ("url-creds", "rtsp://admin:p%40ss@192.168.1.64/Streaming/Channels/101?transportmode=unicast"),
    ("url-ipv6", "rtsp://[fd00::1]:8554/live#frag"),
    ("url-rtsps", "rtsps://cam.example.com/a"),
    ("patterns-names", "*.cams.example.com,cam-?.example.org\nrtsp://front.cams.example.com/live"),
    ("patterns-cidr", "192.168.1.0/24,fd00::/8,10.*.*.1\n192.168.1.20"),
    ("patterns-any", "*\n[2001:db8::1]"),
    ("patterns-bad", "a b,/,999.1.1.1/33\n"),
];

/// STUN/TURN requests as a browser's TURN client sends them, signed with [`TURN_USER`]'s key and
/// a nonce valid at [`TURN_NOW`] for [`TURN_CLIENT`], plus an unsigned Allocate (the first
/// request of every client) and a Send indication.
fn turn_seeds() -> Vec<(String, Vec<u8>)> {
    use stun_types::attribute::{Nonce, Realm, Username, XorMappedAddress};
    use stun_types::message::{
        IntegrityAlgorithm, Message, MessageWrite, MessageWriteExt, MessageWriteVec, BINDING,
    };
    use turn_types::attribute::{ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress};
    use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

    let auth = turn_auth();
    let nonce = auth.make_nonce(TURN_CLIENT, TURN_NOW);
    let (user, pass) = TURN_USER.split_once(':').expect("name:password");
    let key = sluice_actors::turn_core::auth::long_term_key(user, pass, TURN_REALM);
    let peer: SocketAddr = "127.0.0.1:31000".parse().expect("an address");
    let mut out = Vec::new();
    for (name, method) in [
        ("binding", BINDING),
        ("allocate", ALLOCATE),
        ("refresh", REFRESH),
        ("create-permission", CREATE_PERMISSION),
        ("channel-bind", CHANNEL_BIND),
    ] {
        for signed in [false, true] {
            let mut m = Message::builder_request(method, MessageWriteVec::new());
            let tid = m.transaction_id();
            if method == ALLOCATE {
                m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).expect("fits");
                m.add_attribute(&Lifetime::new(600)).expect("fits");
            }
            if method == REFRESH {
                m.add_attribute(&Lifetime::new(0)).expect("fits");
            }
            if method == CREATE_PERMISSION || method == CHANNEL_BIND {
                m.add_attribute(&XorPeerAddress::new(peer, tid)).expect("fits");
            }
            if method == CHANNEL_BIND {
                m.add_attribute(&ChannelNumber::new(0x4000)).expect("fits");
            }
            if method == BINDING {
                m.add_attribute(&XorMappedAddress::new(peer, tid)).expect("fits");
            }
            if signed {
                m.add_attribute(&Username::new(user).expect("a short name")).expect("fits");
                m.add_attribute(&Realm::new(TURN_REALM).expect("a short realm")).expect("fits");
                m.add_attribute(&Nonce::new(&nonce).expect("a short nonce")).expect("fits");
                m.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1).expect("fits");
            }
            m.add_fingerprint().expect("fits");
            out.push((format!("{name}{}", if signed { "-signed" } else { "" }), m.finish()));
        }
    }
    let mut send = Message::builder_indication(SEND, MessageWriteVec::new());
    let tid = send.transaction_id();
    send.add_attribute(&XorPeerAddress::new(peer, tid)).expect("fits");
    send.add_attribute(&Data::new(b"relayed bytes")).expect("fits");
    out.push(("send-indication".to_string(), send.finish()));
    out
}

/// An encoder's session after the handshake, made by `rml_rtmp`'s own client against the
/// server side: connect, publish `live/stream1`, metadata, an AVC and an AAC sequence header and
/// a few media messages. The first byte is [`rtmp_ingest`]'s mode: 0, the in-process
/// handshake and reads of 1 byte (a client waits for each answer before its next command, so
/// the server must see the connect before the publish).
fn rtmp_publish_session() -> Option<Vec<u8>> {
    use bytes::Bytes;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType, ServerSession,
        ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
    };
    use rml_rtmp::time::RtmpTimestamp;

    let (mut client, initial) = ClientSession::new(ClientSessionConfig::new()).ok()?;
    let (mut server, server_initial) = ServerSession::new(ServerSessionConfig::new()).ok()?;
    let mut wire = vec![0u8];
    let mut to_server: Vec<u8> = Vec::new();
    let push = |r: ClientSessionResult, buf: &mut Vec<u8>| {
        if let ClientSessionResult::OutboundResponse(p) = r {
            buf.extend_from_slice(&p.bytes);
        }
    };
    for r in initial {
        push(r, &mut to_server);
    }
    // The server's opening messages (chunk size, window) reach the client first.
    let mut opening = Vec::new();
    for r in server_initial {
        if let ServerSessionResult::OutboundResponse(p) = r {
            opening.extend_from_slice(&p.bytes);
        }
    }
    for r in client.handle_input(&opening).ok()? {
        push(r, &mut to_server);
    }
    // Deliver what the client wrote; answer the server's requests; deliver its answers back.
    let mut exchange =
        |client: &mut ClientSession, to_server: &mut Vec<u8>, wire: &mut Vec<u8>| -> Option<()> {
            for _ in 0..8 {
                if to_server.is_empty() {
                    return Some(());
                }
                wire.extend_from_slice(to_server);
                let mut queue: std::collections::VecDeque<ServerSessionResult> =
                    server.handle_input(to_server).ok()?.into();
                to_server.clear();
                let mut to_client = Vec::new();
                while let Some(r) = queue.pop_front() {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => to_client.extend_from_slice(&p.bytes),
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::ConnectionRequested { request_id, .. }
                            | ServerSessionEvent::PublishStreamRequested { request_id, .. },
                        ) => queue.extend(server.accept_request(request_id).ok()?),
                        _ => {}
                    }
                }
                for r in client.handle_input(&to_client).ok()? {
                    if let ClientSessionResult::OutboundResponse(p) = r {
                        to_server.extend_from_slice(&p.bytes);
                    }
                }
            }
            Some(())
        };
    push(client.request_connection("live".into()).ok()?, &mut to_server);
    exchange(&mut client, &mut to_server, &mut wire)?;
    push(client.request_publishing("stream1".into(), PublishRequestType::Live).ok()?, &mut to_server);
    exchange(&mut client, &mut to_server, &mut wire)?;
    let mut meta = StreamMetadata::new();
    meta.video_width = Some(64);
    meta.video_height = Some(64);
    meta.video_frame_rate = Some(25.0);
    push(client.publish_metadata(&meta).ok()?, &mut to_server);
    let sps = [
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x07, 0x3c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0c,
        0xa3, 0xc4, 0x89, 0x92,
    ];
    let pps = [0x68, 0xcb, 0x83, 0xcb, 0x20];
    let avc = flv::avc_sequence_header(&sps, &pps)?;
    push(client.publish_video_data(Bytes::from(avc), RtmpTimestamp::new(0), false).ok()?, &mut to_server);
    let aac = flv::aac_sequence_header(&[0x12, 0x10]);
    push(client.publish_audio_data(Bytes::from(aac), RtmpTimestamp::new(0), false).ok()?, &mut to_server);
    for i in 0..3u32 {
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
        let mut annexb = vec![0, 0, 0, 1];
        annexb.extend_from_slice(idr);
        let body = flv::avc_nalus(&annexb, i == 0);
        push(
            client.publish_video_data(Bytes::from(body), RtmpTimestamp::new(i * 40), false).ok()?,
            &mut to_server,
        );
        let au = flv::aac_frame(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]);
        push(
            client.publish_audio_data(Bytes::from(au), RtmpTimestamp::new(i * 23), false).ok()?,
            &mut to_server,
        );
    }
    for r in client.stop_publishing().ok()? {
        push(r, &mut to_server);
    }
    wire.extend_from_slice(&to_server);
    Some(wire)
}
