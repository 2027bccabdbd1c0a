//! HLS and Low-Latency HLS packaging: pure code (no actix, no IO, no clock), fed [`Frame`]s,
//! holding the last segments in memory and writing the playlists.
//!
//! ## What it makes
//! - An init segment (`ftyp` + `moov`) and CMAF fragments from [`Fmp4Writer::new_live`]: each
//!   fragment is one LL-HLS *part* (about [`HlsConfig::part`], 200 ms, and a new one at every
//!   video keyframe); a *segment* is the run of parts from one independent part (a keyframe)
//!   to the next once the segment reached 0.7 of [`HlsConfig::segment`] (1 s; the keyframe is
//!   asked for at 0.8, [`Packager::wants_keyframe`], and may come a little early). Without keyframes a
//!   segment is cut anyway at [`HlsConfig::segment_max`] (its first part then is not
//!   independent, which players that play forward accept). A segment's bytes are its parts'
//!   bytes one after the other: `moof`+`mdat` pairs, valid CMAF.
//! - A media playlist ([`Packager::media_playlist`]): `EXT-X-MAP`, the complete segments with
//!   `EXTINF` and `EXT-X-PROGRAM-DATE-TIME`, `EXT-X-PART` for the parts of the last segments and
//!   of the segment being built, `EXT-X-PRELOAD-HINT` for the next part, and
//!   `EXT-X-SERVER-CONTROL` (blocking reload, part hold-back). Clients without LL-HLS ignore the
//!   part tags and play the segments.
//! - A multivariant playlist ([`Packager::multivariant_playlist`]) with one variant, `CODECS`
//!   from the SPS (`avc1.PPCCLL`) and `opus`.
//!
//! ## Names
//! Media sequence numbers start at `first_msn` (the caller passes the Unix time in seconds), so
//! a stream packaged again later never reuses a segment URL a CDN may have cached. URIs are
//! relative: `init{first}.mp4`, `s{msn}.m4s`, `p{msn}.{part}.m4s`; a query (a token) given to
//! the playlist writers is appended to each.
//!
//! ## Memory
//! [`HlsConfig::window`] complete segments are kept (with their parts for the last
//! [`PART_SEGMENTS`]), plus the segment being built: bounded by the segment length (at most
//! `segment_max`) and [`MAX_SEGMENT_BYTES`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fmp4::{Fmp4Writer, LiveOutput, MuxError};
use crate::media::{Codec, Frame};
use crate::transcode::{OpusToAac, TranscodeError};

/// Added to AAC timestamps (48 kHz, negative for the encoder's priming) to keep them positive.
const AAC_TS_OFFSET: i64 = 1 << 40;

/// Complete segments whose parts are still listed (and held) in the playlist: parts are only
/// useful near the live edge.
pub const PART_SEGMENTS: usize = 2;
/// A segment is closed when its bytes reach this, whatever its duration (a runaway bitrate must
/// not grow memory without bound).
pub const MAX_SEGMENT_BYTES: usize = 32 << 20;

/// Segment and part lengths and the window.
#[derive(Debug, Clone, Copy)]
pub struct HlsConfig {
    /// Part length (LL-HLS `PART-TARGET`): a fragment is cut when it reaches this.
    pub part: Duration,
    /// Shortest segment: the next keyframe after this opens a new segment.
    pub segment: Duration,
    /// Longest segment: cut here even without a keyframe.
    pub segment_max: Duration,
    /// Complete segments kept and listed.
    pub window: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            part: Duration::from_millis(200),
            segment: Duration::from_secs(1),
            segment_max: Duration::from_secs(4),
            window: 8,
        }
    }
}

/// One LL-HLS part: one CMAF fragment.
#[derive(Debug, Clone)]
pub struct Part {
    pub bytes: Arc<[u8]>,
    pub duration: f64,
    pub independent: bool,
}

/// A media segment: complete, or the one being built (the last).
#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    /// Seconds since the start of the movie.
    pub start: f64,
    pub duration: f64,
    /// The parts, while they are still listed (dropped once the segment leaves the part window).
    pub parts: Vec<Part>,
    /// The whole segment's bytes, once complete.
    pub bytes: Option<Arc<[u8]>>,
    /// Bytes held in parts while the segment is built.
    size: usize,
}

/// What a pushed frame changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// A part (and maybe a segment) was published: waiting requests may be answered.
    pub new_part: bool,
}

/// What a blocking playlist request waits for (`_HLS_msn`, `_HLS_part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub msn: u64,
    pub part: Option<u64>,
}

/// Whether a blocking request can be answered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Yes,
    /// Not yet: hold the request.
    Wait,
    /// Too far in the future (more than two segments ahead): answer 400 (RFC 8216bis 6.2.5.2).
    TooFar,
}

/// The HLS packager of one stream; see the module docs.
pub struct Packager {
    cfg: HlsConfig,
    writer: Fmp4Writer,
    /// Prefix of every URI: `""`, or `"aac-"` for the AAC rendition.
    prefix: &'static str,
    first_msn: u64,
    /// A moment and its Unix time (ms), to date frames by their capture instants.
    clock: (Instant, u64),
    /// Unix time (ms) of the movie's time 0 (the first frame written), for
    /// `EXT-X-PROGRAM-DATE-TIME`.
    epoch_ms: u64,
    init: Option<Arc<[u8]>>,
    codecs: String,
    width: u16,
    height: u16,
    /// Complete segments, oldest first, then the one being built (if any part yet).
    segments: VecDeque<Segment>,
    /// The last segment is still being built.
    open: bool,
    /// Largest segment duration seen, rounded: `EXT-X-TARGETDURATION` (never decreases).
    target: u64,
}

impl Packager {
    /// A packager for a stream with this video codec (if any) and Opus audio (if `audio`).
    /// `first_msn` is the first media sequence number; `clock` an instant and its Unix time in
    /// ms, which dates frames (their `captured` instants) in the playlist.
    pub fn new(
        video: Option<Codec>,
        audio: bool,
        cfg: HlsConfig,
        first_msn: u64,
        clock: (Instant, u64),
    ) -> Self {
        Packager {
            cfg,
            writer: Fmp4Writer::new_live(video, audio, cfg.part),
            prefix: "",
            first_msn,
            clock,
            epoch_ms: clock.1,
            init: None,
            codecs: String::new(),
            width: 0,
            height: 0,
            segments: VecDeque::new(),
            open: false,
            target: 1,
        }
    }

    /// The AAC rendition of a stream with Opus audio: the same video, AAC-LC audio (`asc` its
    /// AudioSpecificConfig), its URIs prefixed `aac-`. Its audio frames come from
    /// [`AacRendition::convert`].
    pub fn new_aac(
        video: Option<Codec>,
        asc: Vec<u8>,
        cfg: HlsConfig,
        first_msn: u64,
        clock: (Instant, u64),
    ) -> Self {
        let mut p = Self::new(video, true, cfg, first_msn, clock);
        p.writer = Fmp4Writer::new_live_aac(video, asc, cfg.part);
        p.prefix = "aac-";
        p
    }

    /// No video keyframe came: package audio alone (no effect once started).
    pub fn start_without_video(&mut self) {
        self.writer.start_without_video();
    }

    pub fn started(&self) -> bool {
        self.init.is_some()
    }

    /// Feed one frame of the stream.
    pub fn push(&mut self, frame: &Frame) -> Result<Progress, MuxError> {
        let was_started = self.writer.started();
        self.writer.push(frame)?;
        if !was_started && self.writer.started() {
            // The movie starts at this frame's capture.
            let (at, ms) = self.clock;
            let since = frame.captured.saturating_duration_since(at).as_millis() as u64;
            let before = at.saturating_duration_since(frame.captured).as_millis() as u64;
            self.epoch_ms = (ms + since).saturating_sub(before);
        }
        let mut progress = Progress::default();
        let out: Vec<LiveOutput> = self.writer.drain_live().collect();
        for o in out {
            match o {
                LiveOutput::Init { bytes, codecs, width, height } => {
                    self.init = Some(bytes.into());
                    self.codecs = codecs;
                    (self.width, self.height) = (width, height);
                }
                LiveOutput::Fragment { bytes, info } => {
                    progress.new_part = true;
                    self.add_part(
                        Part { bytes: bytes.into(), duration: info.duration, independent: info.independent },
                        info.start,
                    );
                }
            }
        }
        Ok(progress)
    }

    fn add_part(&mut self, part: Part, start: f64) {
        let cut = match self.segments.back() {
            Some(s) if self.open => {
                // A keyframe asked for at 0.8 of the segment may come a little early.
                let long = s.duration >= self.cfg.segment.as_secs_f64() * 0.7;
                (part.independent && long)
                    || s.duration + part.duration > self.cfg.segment_max.as_secs_f64() + 1e-3
                    || s.size + part.bytes.len() > MAX_SEGMENT_BYTES
            }
            _ => true,
        };
        if cut {
            self.close_open();
            let msn = self.segments.back().map_or(self.first_msn, |s| s.msn + 1);
            self.segments.push_back(Segment {
                msn,
                start,
                duration: 0.0,
                parts: Vec::new(),
                bytes: None,
                size: 0,
            });
            self.open = true;
        }
        if let Some(s) = self.segments.back_mut() {
            s.duration += part.duration;
            s.size += part.bytes.len();
            s.parts.push(part);
        }
    }

    /// Close the segment being built: join its parts, trim the window.
    fn close_open(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        if let Some(s) = self.segments.back_mut() {
            let mut all = Vec::with_capacity(s.size);
            for p in &s.parts {
                all.extend_from_slice(&p.bytes);
            }
            s.bytes = Some(all.into());
            self.target = self.target.max(s.duration.round() as u64).max(1);
        }
        while self.segments.len() > self.cfg.window {
            self.segments.pop_front();
        }
        // Parts are kept for the last PART_SEGMENTS complete segments only.
        let complete = self.segments.len();
        for (i, s) in self.segments.iter_mut().enumerate() {
            if i + PART_SEGMENTS < complete {
                s.parts.clear();
                s.parts.shrink_to_fit();
            }
        }
    }

    /// The duration of the segment being built, seconds (0 when none).
    pub fn open_duration(&self) -> f64 {
        match self.segments.back() {
            Some(s) if self.open => s.duration,
            _ => 0.0,
        }
    }

    /// True when the segment being built is due to end and waits for a keyframe: the caller
    /// should ask the source for one (browsers send none on their own).
    pub fn wants_keyframe(&self) -> bool {
        self.open_duration() >= self.cfg.segment.as_secs_f64() * 0.8
    }

    /// The init segment's name (`init{first_msn}.mp4`).
    pub fn init_name(&self) -> String {
        format!("{}init{}.mp4", self.prefix, self.first_msn)
    }

    pub fn init(&self) -> Option<Arc<[u8]>> {
        self.init.clone()
    }

    /// The first media sequence number (what the init segment is named after).
    pub fn first_msn(&self) -> u64 {
        self.first_msn
    }

    /// Complete segments held.
    pub fn complete_segments(&self) -> usize {
        self.segments.len() - usize::from(self.open)
    }

    /// A complete segment's bytes.
    pub fn segment(&self, msn: u64) -> Option<Arc<[u8]>> {
        self.find(msn).and_then(|s| s.bytes.clone())
    }

    /// A part's bytes.
    pub fn part(&self, msn: u64, part: u64) -> Option<Arc<[u8]>> {
        let p = usize::try_from(part).ok()?;
        self.find(msn).and_then(|s| s.parts.get(p)).map(|p| p.bytes.clone())
    }

    fn find(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let i = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(i)
    }

    /// The (msn, part) the next part will be: what `EXT-X-PRELOAD-HINT` names.
    pub fn next_part(&self) -> (u64, u64) {
        match self.segments.back() {
            Some(s) if self.open => (s.msn, s.parts.len() as u64),
            Some(s) => (s.msn + 1, 0),
            None => (self.first_msn, 0),
        }
    }

    /// Whether a playlist asked for with `_HLS_msn` / `_HLS_part` can be answered now.
    pub fn ready(&self, w: Wanted) -> Ready {
        let (next_msn, next_part) = self.next_part();
        // Segment `msn` is complete when a later one exists; part `p` of it exists when the
        // segment being built has more than `p` parts.
        let ok = match w.part {
            None => w.msn < self.complete_through(),
            Some(p) => w.msn < next_msn || (w.msn == next_msn && p < next_part),
        };
        if ok {
            Ready::Yes
        } else if w.msn > next_msn + 2 {
            Ready::TooFar
        } else {
            Ready::Wait
        }
    }

    /// One past the last complete segment's number.
    fn complete_through(&self) -> u64 {
        let n = self.complete_segments();
        self.segments.get(n.wrapping_sub(1)).map_or(self.first_msn, |s| s.msn + 1)
    }

    /// `EXT-X-TARGETDURATION`: the longest segment, rounded (at least 1).
    pub fn target_duration(&self) -> u64 {
        self.target
    }

    /// The multivariant playlist: one variant, `media` its URI (relative); with `aac_media`, a
    /// second variant with AAC audio (`mp4a.40.2` for `opus`) at that URI.
    pub fn multivariant_playlist(&self, media: &str, aac_media: Option<&str>, query: &str) -> String {
        // BANDWIDTH: the peak segment bitrate held (a guess before the first segment).
        let bw = self
            .segments
            .iter()
            .filter(|s| s.bytes.is_some())
            .map(|s| (s.size as f64 * 8.0 / s.duration.max(0.1)) as u64)
            .max()
            .unwrap_or(0);
        let bandwidth = if bw == 0 { 2_000_000 } else { bw };
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        let mut variant = |codecs: &str, uri: &str| {
            let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{codecs}\"");
            if self.width > 0 && self.height > 0 {
                let _ = write!(out, ",RESOLUTION={}x{}", self.width, self.height);
            }
            let _ = write!(out, "\n{uri}{}\n", q(query));
        };
        variant(&self.codecs, media);
        if let Some(aac) = aac_media.filter(|_| self.codecs.contains("opus")) {
            variant(&self.codecs.replace("opus", "mp4a.40.2"), aac);
        }
        out
    }

    /// The media playlist (LL-HLS tags included; `query`, e.g. `token=...`, appended to URIs).
    pub fn media_playlist(&self, query: &str) -> String {
        let part_target = self.cfg.part.as_secs_f64();
        // Parts may run one frame past the target: declare the longest listed.
        let part_max =
            self.segments.iter().flat_map(|s| s.parts.iter()).map(|p| p.duration).fold(part_target, f64::max);
        let part_target = (part_max * 1000.0).ceil() / 1000.0;
        let target = self.target;
        let first = self.segments.front().map_or(self.first_msn, |s| s.msn);
        let mut out = String::with_capacity(2048);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.3}",
            part_target * 3.0,
            target as f64 * 3.0
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}{}\"", self.init_name(), q(query));
        for s in &self.segments {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                iso8601(self.epoch_ms + (s.start * 1000.0) as u64)
            );
            for (i, p) in s.parts.iter().enumerate() {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}p{}.{i}.m4s{}\"",
                    p.duration,
                    self.prefix,
                    s.msn,
                    q(query)
                );
                out.push_str(if p.independent { ",INDEPENDENT=YES\n" } else { "\n" });
            }
            if s.bytes.is_some() {
                let _ =
                    write!(out, "#EXTINF:{:.5},\n{}s{}.m4s{}\n", s.duration, self.prefix, s.msn, q(query));
            }
        }
        let (m, p) = self.next_part();
        let _ =
            writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}p{m}.{p}.m4s{}\"", self.prefix, q(query));
        out
    }
}

/// The audio of the AAC rendition: Opus frames in, AAC-LC access units out (as frames for
/// [`Packager::push`] of a [`Packager::new_aac`]); video frames pass through. Kept apart from
/// the packager because the codec state may not be shared between threads (the packager is
/// read by many).
pub struct AacRendition {
    t: OpusToAac,
    /// Opus packets that did not decode or encode.
    pub errors: u64,
}

impl AacRendition {
    pub fn new() -> Result<Self, TranscodeError> {
        Ok(AacRendition { t: OpusToAac::new()?, errors: 0 })
    }

    /// The AudioSpecificConfig for [`Packager::new_aac`].
    pub fn audio_specific_config(&self) -> Vec<u8> {
        self.t.audio_specific_config().to_vec()
    }

    /// What to push to the AAC packager for this frame of the stream.
    pub fn convert(&mut self, frame: &Frame) -> Vec<Frame> {
        if frame.codec != Codec::Opus {
            return vec![frame.clone()];
        }
        if self.t.push(&frame.data, frame.rtp_time).is_err() {
            self.errors += 1;
        }
        let mut out = Vec::new();
        while let Some(a) = self.t.pop() {
            out.push(Frame {
                codec: Codec::Opus, // the audio track, AAC in this writer (see fmp4's live mode)
                keyframe: false,
                rtp_time: u64::try_from(a.ts48k.saturating_add(AAC_TS_OFFSET)).unwrap_or(0),
                captured: frame.captured,
                data: a.data.into(),
            });
        }
        out
    }
}

/// `?query` (or nothing) to append to a URI.
fn q(query: &str) -> String {
    if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::tests::{PPS, SPS_640X360};

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    /// `secs` of 30 fps H.264 (keyframe every `gop` frames) and 50 fps Opus.
    fn feed(p: &mut Packager, secs: u32, gop: u32) -> usize {
        let t0 = Instant::now();
        let mut ev: Vec<(Duration, bool, u32)> = Vec::new();
        for i in 0..secs * 30 {
            ev.push((Duration::from_micros(u64::from(i) * 33_333), true, i));
        }
        for i in 0..secs * 50 {
            ev.push((Duration::from_millis(u64::from(i) * 20 + 3), false, i));
        }
        ev.sort_by_key(|e| e.0);
        let mut parts = 0;
        for (t, video, i) in ev {
            let f = if video {
                let key = i % gop == 0;
                let data = if key {
                    annexb(&[SPS_640X360, PPS, &[0x65, 0x88, 0x80, 1]])
                } else {
                    annexb(&[&[0x41, 0x9a, 1]])
                };
                Frame {
                    codec: Codec::H264,
                    keyframe: key,
                    rtp_time: u64::from(i) * 3000,
                    captured: t0 + t,
                    data: data.into(),
                }
            } else {
                Frame {
                    codec: Codec::Opus,
                    keyframe: false,
                    rtp_time: u64::from(i) * 960,
                    captured: t0 + t,
                    data: vec![0xfc, 0xff, 0xfe].into(),
                }
            };
            if p.push(&f).unwrap().new_part {
                parts += 1;
            }
        }
        parts
    }

    #[test]
    fn segments_at_keyframes_and_parts() {
        let mut p = Packager::new(
            Some(Codec::H264),
            true,
            HlsConfig::default(),
            1000,
            (Instant::now(), 1_700_000_000_000),
        );
        let parts = feed(&mut p, 10, 30);
        assert!(parts >= 40, "{parts} parts in 10 s");
        assert!(p.started());
        assert_eq!(p.target_duration(), 1);
        let list = p.media_playlist("");
        assert!(list.contains("#EXT-X-MAP:URI=\"init1000.mp4\""), "{list}");
        assert!(list.contains("CAN-BLOCK-RELOAD=YES"));
        assert!(list.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"));
        assert!(list.contains(",INDEPENDENT=YES"));
        // Dated from the first frame's capture (the clock's instant, to the millisecond).
        assert!(list.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:2"), "{list}");
        // Every segment about 1 s, every part at most about 200 ms + a frame.
        for s in p.segments.iter().filter(|s| s.bytes.is_some()) {
            assert!((s.duration - 1.0).abs() < 0.05, "segment {} {}", s.msn, s.duration);
            assert!(s.parts.is_empty() || s.parts[0].independent);
            for part in &s.parts {
                assert!(part.duration <= 0.234, "part {}", part.duration);
            }
        }
        assert_eq!(p.complete_segments(), 8, "window");
        let last = p.segments.iter().rev().find(|s| s.bytes.is_some()).unwrap().msn;
        assert!(p.segment(last).is_some());
        assert!(p.part(last, 0).is_some());
        assert!(p.segment(999).is_none());
        let mv = p.multivariant_playlist("media.m3u8", Some("aac-media.m3u8"), "token=x");
        assert!(mv.contains(",mp4a.40.2\""), "{mv}");
        assert!(mv.contains("aac-media.m3u8?token=x"), "{mv}");
        assert!(mv.contains("CODECS=\"avc1.42c01e,opus\"") || mv.contains("CODECS=\"avc1."), "{mv}");
        assert!(mv.contains("RESOLUTION=640x360"), "{mv}");
        assert!(mv.contains("media.m3u8?token=x"), "{mv}");
    }

    #[test]
    fn blocking_reload_readiness() {
        let mut p = Packager::new(Some(Codec::H264), true, HlsConfig::default(), 0, (Instant::now(), 0));
        feed(&mut p, 3, 30);
        let (m, n) = p.next_part();
        assert_eq!(p.ready(Wanted { msn: m, part: Some(n) }), Ready::Wait);
        assert_eq!(
            p.ready(Wanted { msn: m, part: Some(n.saturating_sub(1)) }),
            if n > 0 { Ready::Yes } else { Ready::Wait }
        );
        assert_eq!(p.ready(Wanted { msn: m, part: None }), Ready::Wait);
        assert_eq!(p.ready(Wanted { msn: m - 1, part: None }), Ready::Yes);
        assert_eq!(p.ready(Wanted { msn: m + 3, part: None }), Ready::TooFar);
    }

    #[test]
    fn no_keyframes_still_cut_at_segment_max() {
        let mut p = Packager::new(Some(Codec::H264), true, HlsConfig::default(), 0, (Instant::now(), 0));
        feed(&mut p, 13, 10_000);
        assert!(p.complete_segments() >= 2);
        assert_eq!(p.target_duration(), 4);
        assert!(p.wants_keyframe() || p.open_duration() < 0.8);
    }

    #[test]
    fn aac_rendition() {
        let mut r = AacRendition::new().unwrap();
        let asc = r.audio_specific_config();
        let mut p = Packager::new_aac(Some(Codec::H264), asc, HlsConfig::default(), 7, (Instant::now(), 0));
        // The frames feed() would push, converted: Opus packets of digital silence become AAC.
        let t0 = Instant::now();
        let mut aac_frames = 0;
        for i in 0..150u32 {
            let t = t0 + Duration::from_millis(u64::from(i) * 20);
            let opus = Frame {
                codec: Codec::Opus,
                keyframe: false,
                rtp_time: u64::from(i) * 960,
                captured: t,
                data: vec![0xfc, 0xff, 0xfe].into(),
            };
            for f in r.convert(&opus) {
                aac_frames += 1;
                p.push(&f).unwrap();
            }
            if i % 3 == 0 {
                let n = i / 3 * 2;
                let key = n % 30 == 0;
                let data = if key {
                    annexb(&[SPS_640X360, PPS, &[0x65, 0x88, 0x80, 1]])
                } else {
                    annexb(&[&[0x41, 0x9a, 1]])
                };
                let v = Frame {
                    codec: Codec::H264,
                    keyframe: key,
                    rtp_time: u64::from(i) * 1800,
                    captured: t,
                    data: data.into(),
                };
                for f in r.convert(&v) {
                    p.push(&f).unwrap();
                }
            }
        }
        assert!(aac_frames > 100, "{aac_frames} AAC frames from 3 s of Opus");
        assert_eq!(r.errors, 0);
        assert!(p.started());
        let list = p.media_playlist("");
        assert!(list.contains("#EXT-X-MAP:URI=\"aac-init7.mp4\""), "{list}");
        assert!(list.contains("\naac-s7.m4s\n"), "{list}");
        let init = p.init().unwrap();
        assert!(init.windows(4).any(|w| w == b"mp4a") && init.windows(4).any(|w| w == b"esds"));
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
