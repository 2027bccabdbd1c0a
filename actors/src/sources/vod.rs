//! VOD: MP4 files from the media folder played as streams.
//!
//! `vod://<path>` gives each viewer a private [`VodSource`] that starts at 0 when the viewer
//! connects. `vod-live://<path>` is one shared source, registered under that name like any
//! published stream (playable, recordable, snapshot-able), started by its first viewer (or by
//! REST `/vod/startup`), joined in progress by later viewers (they start at the next keyframe),
//! and stopped [`VOD_LIVE_IDLE`] after its last viewer leaves.
//!
//! The source owns the file and its index ([`crate::mp4_reader`]) and a [`FanOut`]. It emits
//! samples at real-time pace from a timer: each sample is due at `start + decode time`. Video
//! goes out as is (AVCC converted to Annex-B, parameter sets before every keyframe); AAC is
//! decoded and re-encoded to 48 kHz Opus ([`crate::transcode`]); Opus passes through. At the end
//! of the file viewers get STOPPED with info [`END_OF_FILE`] (unless the source loops).
//!
//! All VOD sources run on a VOD arbiter of their own: file reads and audio transcoding never
//! run on the media arbiter that forwards live streams.
//!
//! Paths are resolved inside the media folder only: absolute paths, `..` and symlinks that lead
//! out are refused as "File not found" (and logged).

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::fanout::FanOut;
use crate::media::{Codec, Frame};
use crate::messages::{Stop, StreamSource};
use crate::mp4_reader::{self, AudioSetup, Mp4Error, Mp4Index, Sample, TrackKind, VideoSetup};
use crate::protocol::{info, SourceDescription, StreamInfo};
use crate::registry::{Published, Registration, Registry};
use crate::source::Source;
use crate::transcode::AacToOpus;
use crate::transcoder::{Transcoded, VideoPath};
use crate::video_transcode::{self as vt, Reorder, Rotation, TranscodeSettings};
use crate::vod_cache::{fps_of as video_fps, VodCache};

/// A shared `vod-live://` source with no viewers stops after this long.
pub const VOD_LIVE_IDLE: Duration = Duration::from_secs(60);
/// A private `vod://` source whose viewer never connects stops after this long.
const PRIVATE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Video samples whose presentation order is checked for B-frames when a file opens.
const REORDER_CHECK_SAMPLES: usize = 300;
/// Samples due within this margin are sent in the same timer tick.
const TICK_SLACK: Duration = Duration::from_millis(2);

/// The stream object's `transcoding` of a file played from its converted copy.
pub const NOTE_CONVERTED: &str = "re-encoded once to constrained baseline: played from the converted copy";

/// Info of the STOPPED status a viewer gets when the file ends (WCS leaves it undocumented).
pub const END_OF_FILE: &str = info::END_OF_FILE;
pub const FILE_NOT_FOUND: &str = info::FILE_NOT_FOUND;
pub const WRONG_FORMAT: &str = info::FILE_WRONG_FORMAT;

/// A parsed `vod://` or `vod-live://` stream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VodUri {
    pub shared: bool,
    pub path: String,
}

impl VodUri {
    pub fn parse(name: &str) -> Option<VodUri> {
        if let Some(p) = name.strip_prefix("vod-live://") {
            Some(VodUri { shared: true, path: p.to_string() })
        } else {
            name.strip_prefix("vod://").map(|p| VodUri { shared: false, path: p.to_string() })
        }
    }

    pub fn as_name(&self) -> String {
        format!("{}://{}", if self.shared { "vod-live" } else { "vod" }, self.path)
    }
}

/// Why a VOD path was refused (logged; the client gets "File not found").
#[derive(Debug, thiserror::Error)]
pub enum VodPathError {
    #[error("empty path or NUL in it")]
    Empty,
    #[error("path {0:?} is absolute or climbs out with '..'")]
    Escapes(String),
    #[error("media folder {dir}: {source}")]
    MediaDir { dir: PathBuf, source: std::io::Error },
    #[error("{path:?}: {source}")]
    Missing { path: String, source: std::io::Error },
    #[error("path {0:?} resolves outside the media folder (symlink)")]
    Outside(String),
    #[error("{0:?} is not a file")]
    NotAFile(String),
}

/// Resolve a VOD path inside `media_dir`. Anything that leaves it is refused.
pub fn resolve(media_dir: &Path, rel: &str) -> Result<PathBuf, VodPathError> {
    let p = Path::new(rel);
    if rel.is_empty() || rel.contains('\0') {
        return Err(VodPathError::Empty);
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(VodPathError::Escapes(rel.into()));
    }
    let root = media_dir
        .canonicalize()
        .map_err(|source| VodPathError::MediaDir { dir: media_dir.to_path_buf(), source })?;
    let full =
        root.join(p).canonicalize().map_err(|source| VodPathError::Missing { path: rel.into(), source })?;
    if !full.starts_with(&root) {
        return Err(VodPathError::Outside(rel.into()));
    }
    if !full.is_file() {
        return Err(VodPathError::NotAFile(rel.into()));
    }
    Ok(full)
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VodError {
    #[error("{}", info::FILE_NOT_FOUND)]
    NotFound,
    #[error("{}", info::FILE_WRONG_FORMAT)]
    WrongFormat,
    #[error("Unsupported codec: {0}")]
    Unsupported(String),
    #[error("{}", info::FAILED_TO_READ_FILE)]
    Read,
    #[error("{}", info::NAME_IN_USE)]
    NameInUse,
}

impl From<Mp4Error> for VodError {
    fn from(e: Mp4Error) -> Self {
        match e {
            Mp4Error::WrongFormat(_) => VodError::WrongFormat,
            Mp4Error::UnsupportedCodec(c) => VodError::Unsupported(c),
            Mp4Error::Io(_) => VodError::Read,
        }
    }
}

/// What `/vod/find` lists.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VodEntry {
    pub local_media_session_id: String,
    pub local_stream_name: String,
    pub uri: String,
    pub status: &'static str,
    pub has_audio: bool,
    pub has_video: bool,
    pub record: bool,
    #[serde(rename = "loop")]
    pub looping: bool,
    /// The source's own address: only [`VodCatalog::terminate`] sends it `Stop`.
    #[serde(skip)]
    control: Option<Recipient<Stop>>,
}

/// Which running VOD sources a REST call means: every field given must match, an empty filter
/// matches all of them.
#[derive(Debug, Default, Clone)]
pub struct VodFilter {
    pub local_stream_name: Option<String>,
    pub uri: Option<String>,
}

impl VodFilter {
    /// True when nothing is selected (a terminate with it would mean "every source").
    pub fn is_empty(&self) -> bool {
        self.local_stream_name.is_none() && self.uri.is_none()
    }

    fn matches(&self, e: &VodEntry) -> bool {
        self.local_stream_name.as_ref().is_none_or(|n| *n == e.local_stream_name)
            && self.uri.as_ref().is_none_or(|u| *u == e.uri)
    }
}

/// Every running VOD source, for the REST API (`/vod/find`, `/vod/terminate`). Each source
/// writes its own entry (inserted when it registers, removed when it ends); others read through
/// [`VodCatalog::find`] and stop sources through [`VodCatalog::terminate`], which asks the
/// source itself.
#[derive(Default)]
pub struct VodCatalog(DashMap<String, VodEntry>, Option<Arc<VodCache>>);

impl VodCatalog {
    /// A catalog whose files that need re-encoding are converted once into `cache`.
    pub fn with_cache(cache: Arc<VodCache>) -> Self {
        VodCatalog(DashMap::new(), Some(cache))
    }

    /// The conversion cache, if there is one.
    pub fn cache(&self) -> Option<&Arc<VodCache>> {
        self.1.as_ref()
    }

    /// The matching sources, by media session id.
    pub fn find(&self, f: &VodFilter) -> Vec<VodEntry> {
        let mut v: Vec<VodEntry> = self.0.iter().filter(|e| f.matches(e)).map(|e| e.clone()).collect();
        v.sort_by(|a, b| a.local_media_session_id.cmp(&b.local_media_session_id));
        v
    }

    /// Ask every matching source to stop with `reason`; returns how many were asked.
    pub fn terminate(&self, f: &VodFilter, reason: &'static str) -> usize {
        let found = self.find(f);
        for c in found.iter().filter_map(|e| e.control.as_ref()) {
            c.do_send(Stop { reason });
        }
        found.len()
    }

    fn insert(&self, id: String, entry: VodEntry) {
        self.0.insert(id, entry);
    }

    fn remove(&self, id: &str) {
        self.0.remove(id);
    }
}

static NEXT_VOD: AtomicU64 = AtomicU64::new(1);

/// Open a file as a VOD source on `arbiter` and register it. Shared sources are registered
/// under `name` (failing if taken); private ones only as a media session.
pub struct OpenVod {
    pub uri: VodUri,
    pub path: PathBuf,
    pub name: String,
    pub looping: bool,
    /// Start playing now rather than at the first viewer (REST `/vod/startup`).
    pub start_now: bool,
}

pub fn open(
    req: OpenVod,
    arbiter: &ArbiterHandle,
    registry: Arc<Registry>,
    catalog: Arc<VodCatalog>,
) -> oneshot::Receiver<Result<Published, VodError>> {
    let (tx, rx) = oneshot::channel();
    arbiter.spawn(async move {
        let res = match mp4_reader::open(&req.path) {
            Err(e) => {
                info!(path = %req.path.display(), error = %e, "VOD file refused");
                Err(VodError::from(e))
            }
            Ok((index, file)) => match cached_copy(&req, &index, &catalog) {
                // Converted before: the copy plays as it is.
                Some((index, file)) => register(req, index, file, registry, catalog, true),
                None => register(req, index, file, registry, catalog, false),
            },
        };
        let _ = tx.send(res);
    });
    rx
}

/// For a file that needs re-encoding (B-frames, rotation): its converted copy if the cache has
/// one ready (a conversion is started otherwise, and this play re-encodes live).
fn cached_copy(req: &OpenVod, index: &Mp4Index, catalog: &VodCatalog) -> Option<(Mp4Index, File)> {
    let cache = catalog.cache()?;
    let (reorders, rotation) = needs_reencoding(index);
    if !reorders && rotation == Rotation::None {
        return None;
    }
    let copy = cache.get_or_convert(&req.path, &req.uri.path)?;
    match mp4_reader::open(&copy) {
        Ok(opened) => Some(opened),
        Err(e) => {
            warn!(copy = %copy.display(), error = %e, "converted VOD copy unreadable: re-encoding live");
            None
        }
    }
}

/// Whether a file's video needs re-encoding for WebRTC viewers: B-frames (its index tells
/// before the first frame: presentation times that go back), or a rotation matrix (H.264 only:
/// openh264 cannot decode VP8).
fn needs_reencoding(index: &Mp4Index) -> (bool, Rotation) {
    let h264 = matches!(index.video, Some(VideoSetup::H264 { .. }));
    let video_pts = index.samples.iter().filter(|s| s.track == TrackKind::Video).map(|s| s.pts_us);
    let reorders = h264 && vt::presentation_reorders(video_pts, REORDER_CHECK_SAMPLES);
    let rotation = match Rotation::from_degrees(index.rotation as i32) {
        Some(r) if h264 => r,
        _ => Rotation::None,
    };
    (reorders, rotation)
}

fn register(
    req: OpenVod,
    index: Mp4Index,
    file: File,
    registry: Arc<Registry>,
    catalog: Arc<VodCatalog>,
    converted: bool,
) -> Result<Published, VodError> {
    let transcoder = match &index.audio {
        Some(AudioSetup::Aac { asc, .. }) => match AacToOpus::new(asc) {
            Ok(t) => Some(t),
            Err(e) => return Err(VodError::Unsupported(format!("AAC audio: {e}"))),
        },
        _ => None,
    };
    let id = format!("vod-{}", NEXT_VOD.fetch_add(1, Ordering::Relaxed));
    let video = match index.video {
        Some(VideoSetup::H264 { .. }) => Some(Codec::H264),
        Some(VideoSetup::Vp8) => Some(Codec::Vp8),
        None => None,
    };
    let has_audio = index.audio.is_some();
    // H.264 with B-frames plays as a slideshow in browsers, and a phone's portrait file carries
    // landscape pictures and a rotation matrix, which WebRTC does not: both are re-encoded from
    // the start (upright).
    let (reorders, rotation) = needs_reencoding(&index);
    let note = match (reorders, rotation) {
        (true, _) => Some(vt::NOTE_B_FRAMES),
        (false, Rotation::None) => None,
        (false, _) => Some(vt::NOTE_ROTATED),
    };
    let (width, height) =
        if rotation.swaps() { (index.height, index.width) } else { (index.width, index.height) };
    let mut info = StreamInfo::of_source(SourceDescription {
        media_session_id: &id,
        name: &req.name,
        provider: "VOD",
        video_codec: video.map(|v| v.wcs_name()).unwrap_or_default(),
        has_audio,
        width,
        height,
        transport: "",
        session_id: "",
    });
    if reorders {
        info!(uri = %req.uri.as_name(), id = %id, note = vt::NOTE_B_FRAMES, fps = video_fps(&index),
            rotation = rotation.degrees(),
            "VOD video has B-frames, which WebRTC viewers play as a slideshow: re-encoding it");
    } else if rotation != Rotation::None {
        info!(uri = %req.uri.as_name(), id = %id, note = vt::NOTE_ROTATED, rotation = rotation.degrees(),
            "VOD video is rotated (a phone's portrait recording): re-encoding it upright");
    }
    info.transcoding = note.map(str::to_string);
    if converted {
        info.transcoding = Some(NOTE_CONVERTED.to_string());
    }

    // The actor's address before it runs, so that it starts holding its registration.
    let ctx = Context::<VodSource>::new();
    let addr = ctx.address();
    let published =
        Published { media_session_id: id.clone(), source: StreamSource::of(&addr), video, has_audio };
    let claim = req.uri.shared.then(|| published.clone());
    let registration =
        registry.register_source(info, addr.clone().recipient(), claim).map_err(|_| VodError::NameInUse)?;
    let settings = TranscodeSettings { fps: video_fps(&index), rotation, ..Default::default() };
    let mut video_path = VideoPath::new(&req.uri.as_name(), settings, addr.clone().recipient());
    if let Some(note) = note {
        video_path.start(note);
    }
    let src = VodSource {
        id: id.clone(),
        uri: req.uri.as_name(),
        shared: req.uri.shared,
        looping: req.looping,
        index,
        file,
        transcoder,
        video_path,
        fanout: FanOut::default(),
        registration: Some(registration),
        catalog: catalog.clone(),
        state: State::Ready,
        next: 0,
        t0: Instant::now(),
        loop_base_us: 0,
        timer: None,
        start_now: req.start_now,
    };
    ctx.run(src);
    catalog.insert(
        id.clone(),
        VodEntry {
            local_media_session_id: id,
            local_stream_name: req.name,
            uri: req.uri.as_name(),
            status: "PROCESSED_LOCAL",
            has_audio,
            has_video: video.is_some(),
            record: false,
            looping: req.looping,
            control: Some(addr.recipient()),
        },
    );
    Ok(published)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Indexed, waiting for its first viewer to connect.
    Ready,
    Playing,
    Ended,
}

pub struct VodSource {
    id: String,
    uri: String,
    shared: bool,
    looping: bool,
    index: Mp4Index,
    file: File,
    transcoder: Option<AacToOpus>,
    /// H.264 on its way to the fan-out: as it is, or re-encoded when it has B-frames.
    video_path: VideoPath,
    fanout: FanOut,
    /// The stream's place in the registry (a `vod://` viewer's private source claims no name);
    /// dropped when the source ends.
    registration: Option<Registration>,
    catalog: Arc<VodCatalog>,
    state: State,
    /// Next sample to send.
    next: usize,
    /// When decode time 0 of the current pass is due.
    t0: Instant,
    /// Timeline offset of the current loop pass.
    loop_base_us: u64,
    timer: Option<SpawnHandle>,
    start_now: bool,
}

impl VodSource {
    fn start_playing(&mut self, ctx: &mut Context<Self>) {
        if self.state != State::Ready {
            return;
        }
        info!(uri = %self.uri, id = %self.id, samples = self.index.samples.len(), "VOD playback starts");
        self.state = State::Playing;
        self.t0 = Instant::now();
        self.tick(ctx);
    }

    /// Send every sample that is due, then sleep until the next one.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        while self.state == State::Playing {
            let Some(s) = self.index.samples.get(self.next).copied() else {
                if self.looping {
                    // Next pass continues the timeline one frame after the last sample.
                    let pass = self.index.duration_us + 33_333;
                    self.loop_base_us += pass;
                    self.t0 += Duration::from_micros(pass);
                    self.next = 0;
                    continue;
                }
                self.end(END_OF_FILE, ctx);
                return;
            };
            let due = self.t0 + Duration::from_micros(s.dts_us);
            let now = Instant::now();
            if due > now + TICK_SLACK {
                self.timer = Some(ctx.run_later(due - now, |act, ctx| act.tick(ctx)));
                return;
            }
            self.next += 1;
            if let Err(e) = self.emit(&s, due) {
                warn!(uri = %self.uri, error = %e, "VOD read failed, ending");
                self.end(END_OF_FILE, ctx);
                return;
            }
        }
    }

    fn emit(&mut self, s: &Sample, due: Instant) -> Result<(), Mp4Error> {
        let data = mp4_reader::read_sample(&mut self.file, s)?;
        let pts_us = self.loop_base_us + s.pts_us;
        match (s.track, &self.index.video, &self.index.audio) {
            (TrackKind::Video, Some(VideoSetup::H264 { sps, pps, length_size }), _) => {
                let au = crate::h264::avcc_to_annexb(&data, *length_size, s.sync, sps, pps);
                let keyframe = s.sync && crate::media::is_keyframe(&au, true);
                let frame = Frame {
                    codec: Codec::H264,
                    keyframe,
                    rtp_time: pts_us * 9 / 100,
                    captured: due,
                    data: au.into(),
                };
                let mut found = None;
                if let Some(frame) = self.video_path.video(frame, &mut found) {
                    self.send(frame);
                }
                if let Some(why) = found {
                    self.b_frames_found(why);
                }
            }
            (TrackKind::Video, Some(VideoSetup::Vp8), _) => {
                let keyframe = crate::media::is_keyframe(&data, false);
                self.send(Frame {
                    codec: Codec::Vp8,
                    keyframe,
                    rtp_time: pts_us * 9 / 100,
                    captured: due,
                    data: data.into(),
                });
            }
            (TrackKind::Audio, _, Some(AudioSetup::Opus { .. })) => {
                self.send(Frame {
                    codec: Codec::Opus,
                    keyframe: false,
                    rtp_time: pts_us * 48 / 1000,
                    captured: due,
                    data: data.into(),
                });
            }
            (TrackKind::Audio, _, Some(AudioSetup::Aac { sample_rate, .. })) => {
                let rate = (*sample_rate).max(1) as u64;
                let Some(t) = self.transcoder.as_mut() else { return Ok(()) };
                let (frames, res) = t.frames(&data, pts_us * rate / 1_000_000, due);
                if let Err(e) = res {
                    debug!(uri = %self.uri, error = %e, "AAC frame dropped");
                }
                for frame in frames {
                    self.send(frame);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// B-frames found while playing (a file whose index did not show them): said once, in the
    /// log and the stream object.
    fn b_frames_found(&mut self, why: Reorder) {
        info!(uri = %self.uri, id = %self.id, why = why.describe(), note = vt::NOTE_B_FRAMES,
            "VOD video has B-frames, which WebRTC viewers play as a slideshow: re-encoding it");
        if let Some(r) = &self.registration {
            r.registry().update(r.id(), |i| i.transcoding = Some(vt::NOTE_B_FRAMES.to_string()));
        }
    }

    fn send(&mut self, frame: Frame) {
        // A file cannot make a keyframe on request: a sink that lost a frame waits for the next.
        // A re-encoded stream can.
        if self.fanout.forward(frame) {
            self.video_path.request_keyframe();
        }
    }

    fn end(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        info!(uri = %self.uri, id = %self.id, reason, frames = self.fanout.frames(), "VOD source ended");
        self.fanout.end(reason);
        self.registration = None; // releases the name and the record
        self.catalog.remove(&self.id);
        ctx.stop();
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if !self.fanout.is_empty() || self.state == State::Ended {
            return;
        }
        if !self.shared {
            // A private source serves one viewer: it is done when that viewer leaves.
            self.end(info::STOPPED_BY_USER, ctx);
            return;
        }
        ctx.run_later(VOD_LIVE_IDLE, |act, ctx| {
            if act.fanout.is_empty() {
                act.end(info::STOPPED_BY_PUBLISHER, ctx);
            }
        });
    }
}

impl Actor for VodSource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.start_now {
            self.start_playing(ctx);
        }
        let limit = if self.shared { VOD_LIVE_IDLE } else { PRIVATE_START_TIMEOUT };
        ctx.run_later(limit, |act, ctx| act.check_idle(ctx));
    }
}

impl Source for VodSource {
    fn fanout(&mut self) -> &mut FanOut {
        &mut self.fanout
    }

    fn has_video(&self) -> bool {
        self.index.video.is_some()
    }

    fn viewers_changed(&mut self, ctx: &mut Context<Self>) {
        self.check_idle(ctx);
    }

    /// A viewer connected (or its decoder asks): the first one starts playback. A re-encoded
    /// stream makes a keyframe; a file as it is cannot.
    fn keyframe_wanted(&mut self, ctx: &mut Context<Self>) {
        self.start_playing(ctx);
        self.video_path.request_keyframe();
    }

    /// A snapshot of a source nobody watches yet starts it, so there is a picture to take.
    fn gop_wanted(&mut self, ctx: &mut Context<Self>) {
        self.start_playing(ctx);
    }

    fn stop(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        self.end(reason, ctx);
    }
}

crate::source_handlers!(VodSource);

/// Frames back from the transcoding thread: forwarded like the file's own.
impl Handler<Transcoded> for VodSource {
    type Result = ();

    fn handle(&mut self, m: Transcoded, _: &mut Context<Self>) {
        if self.state != State::Playing {
            return;
        }
        for frame in m.0 {
            self.send(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(VodUri::parse("vod://a/b.mp4"), Some(VodUri { shared: false, path: "a/b.mp4".into() }));
        assert_eq!(VodUri::parse("vod-live://x.mp4").map(|u| u.as_name()), Some("vod-live://x.mp4".into()));
        assert_eq!(VodUri::parse("cam1"), None);
    }

    #[test]
    fn paths_stay_inside_the_media_dir() {
        let root = std::env::temp_dir().join(format!("sluice-vod-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/ok.mp4"), b"x").unwrap();
        assert!(resolve(&root, "sub/ok.mp4").is_ok());
        assert!(resolve(&root, "./sub/ok.mp4").is_ok());
        for bad in ["../../etc/passwd", "/etc/passwd", "sub/../../x", "", "nope.mp4", "sub", "a\0b"] {
            assert!(resolve(&root, bad).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            let _ = std::os::unix::fs::symlink("/etc/passwd", root.join("link.mp4"));
            assert!(resolve(&root, "link.mp4").is_err());
        }
    }
}
