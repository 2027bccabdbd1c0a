//! Fragmented MP4 writer for recordings: pure code (no actix, no IO), fed [`Frame`]s, yielding
//! the bytes to append to the file.
//!
//! ## The file
//! `ftyp` + `moov` (one track per medium, empty sample tables, `mvex`/`trex`) first, then one
//! `moof` + `mdat` pair per fragment. Tracks:
//! - H.264: `avc1` with an `avcC` built from the SPS/PPS found in-band in the first keyframe
//!   (Chromium repeats them before every IDR). Samples are the access units converted from
//!   Annex-B to 4-byte length prefixes; in-band SPS/PPS stay in the samples, so a resolution
//!   change mid-stream still decodes. Timescale 90 kHz, the RTP clock.
//! - VP8: `vp08` + `vpcC` (the VP codec ISO-BMFF binding) rather than WebM, so one writer and
//!   one reader (VOD) cover every recording. Timescale 90 kHz.
//! - Opus: `Opus` + `dOps` (Opus in ISO-BMFF), 48 kHz timescale, 2 output channels, pre-skip 0
//!   (WebRTC packets carry no encoder delay to trim).
//!
//! ## Crash safety
//! A fragment is written once complete (at each video keyframe, or at most every
//! [`MAX_FRAGMENT`], 1 s), in one append, with its `moof` box typed `free`; a 4-byte patch then
//! turns `free` into `moof` ([`Output::Patch`]). A reader (ffmpeg, Chromium) that opens the
//! file at any moment therefore sees whole fragments followed at most by a `free` box, never a
//! truncated `moof` (which ffmpeg refuses with "error reading header"). Header durations stay
//! 0, as in any live fragmented MP4: readers add up the fragments.
//!
//! ## Timestamps
//! Each track's decode times follow its RTP timestamps; a sample's duration is the distance to
//! the next frame's timestamp (so lost frames and muted gaps lengthen the previous sample, and
//! the two tracks cannot drift apart). A jump backwards or of more than [`MAX_GAP`] (a source
//! reset, a 32-bit wrap seen by a source that does not extend timestamps) is bridged with the
//! arrival-time difference instead. The tracks are aligned once, at their first frames, by
//! arrival time: the first frame written starts at 0, the other track at its arrival offset.
//! Recording starts at the first video keyframe (the decoder needs it); audio before it is
//! dropped, unless [`Fmp4Writer::start_without_video`] is called (no keyframe came).
//!
//! ## Live mode (HLS)
//! [`Fmp4Writer::new_live`] makes the same boxes for a live packager (CMAF segments and LL-HLS
//! parts, [`crate::hls`]): the init segment and each fragment come out separately as
//! [`LiveOutput`]s from [`Fmp4Writer::drain_live`], fragments typed `moof` at once (no file to
//! keep crash-safe), cut at each video keyframe and whenever the media duration of the
//! fragment reaches the part duration asked for (media time, not arrival time, so a bursty
//! source still gets short parts).
//!
//! [`Fmp4Writer::new_live_aac`] makes the audio track AAC-LC (`mp4a` + `esds` with the
//! encoder's AudioSpecificConfig, 48 kHz) for players without Opus (Safari's native HLS): its
//! audio frames then carry raw AAC access units, stamped in 48 kHz units (their `codec` field
//! still says Opus, the one audio codec [`Codec`] names; the caller transcodes,
//! [`crate::hls`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mp4_atom::{
    Audio, Avc1, Avcc, AvccExt, Codec as SampleEntry, Dinf, Dops, Dref, Encode, Ftyp, Hdlr, Matrix, Mdhd,
    Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak,
    Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd, Vp08, VpcC,
};

use crate::h264;
use crate::media::{Codec, Frame, FrameKind};

/// Longest fragment: a crash loses at most this much media (plus one frame per track). The
/// fragment overhead (a ~100-byte `moof` per track) is negligible at this rate.
pub const MAX_FRAGMENT: Duration = Duration::from_secs(1);
/// An RTP jump larger than this, or backwards, is a discontinuity, bridged by arrival time.
pub const MAX_GAP: Duration = Duration::from_secs(10);
/// Timescale of the movie header (durations there are 0 anyway).
const MOVIE_TIMESCALE: u32 = 1000;
/// Sample flags: a sync sample (depends on no other).
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// Sample flags: depends on others, not a sync sample.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// Why the writer could not produce a box. Encoding only fails on values out of range, so this
/// is a bug or absurd input (a sample over 4 GB), never ordinary network damage.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("cannot encode {what}: {source}")]
    Encode { what: &'static str, source: mp4_atom::Error },
    #[error("sample of {0} bytes is too large")]
    SampleTooLarge(usize),
}

/// What to do to the file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Append these bytes at the end.
    Append(Vec<u8>),
    /// Overwrite bytes at an absolute offset (already written).
    Patch { at: u64, bytes: [u8; 4] },
}

/// What happened to a frame given to [`Fmp4Writer::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the file.
    Written,
    /// Dropped: waiting for the first video keyframe (with SPS/PPS for H.264).
    WaitingForKeyframe,
    /// Dropped: a medium the file has no track for.
    NoTrack,
}

/// What the live mode ([`Fmp4Writer::new_live`]) produces, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveOutput {
    /// `ftyp` + `moov`, and what a playlist says of the stream.
    Init { bytes: Vec<u8>, codecs: String, width: u16, height: u16 },
    /// One `moof` + `mdat`.
    Fragment { bytes: Vec<u8>, info: FragmentInfo },
}

/// Timing of one live fragment, in the timescale of its reference track (video if any, else
/// audio), converted to seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FragmentInfo {
    /// Decode time of the first sample, seconds since the start of the movie.
    pub start: f64,
    pub duration: f64,
    /// Starts with a video keyframe (or the stream has no video): a player may start here.
    pub independent: bool,
}

struct Live {
    /// Cut a fragment once its reference track holds this many ticks.
    part: Duration,
    out: VecDeque<LiveOutput>,
    /// The audio track is AAC with this AudioSpecificConfig (else Opus).
    aac: Option<Vec<u8>>,
}

/// Totals of a recording so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub fragments: u32,
    pub video_samples: u64,
    pub audio_samples: u64,
    /// Media duration of the longest track, seconds (committed samples only).
    pub duration_secs: f64,
    pub video_secs: f64,
    pub audio_secs: f64,
    /// Timestamp jumps bridged by arrival time.
    pub discontinuities: u64,
    pub bytes: u64,
}

struct Pending {
    rtp: u64,
    captured: Instant,
    dts: u64,
    data: Vec<u8>,
    sync: bool,
}

struct Track {
    id: u32,
    timescale: u32,
    pending: Option<Pending>,
    last_duration: u32,
    /// Samples committed to the fragment being built, and their bytes.
    entries: Vec<TrunEntry>,
    data: Vec<u8>,
    /// Decode time of the fragment's first sample.
    frag_base: u64,
    /// Decode time after the last committed sample.
    end_dts: u64,
    samples: u64,
    discontinuities: u64,
}

impl Track {
    fn new(id: u32, timescale: u32, nominal_duration: u32) -> Self {
        Track {
            id,
            timescale,
            pending: None,
            last_duration: nominal_duration,
            entries: Vec::new(),
            data: Vec::new(),
            frag_base: 0,
            end_dts: 0,
            samples: 0,
            discontinuities: 0,
        }
    }

    /// Commit the pending sample with `duration` into the fragment.
    fn commit(&mut self, duration: u32) -> Result<(), MuxError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let size = u32::try_from(p.data.len()).map_err(|_| MuxError::SampleTooLarge(p.data.len()))?;
        if self.entries.is_empty() {
            self.frag_base = p.dts;
        }
        self.entries.push(TrunEntry {
            duration: Some(duration),
            size: Some(size),
            flags: Some(if p.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
            cts: None,
        });
        self.data.extend_from_slice(&p.data);
        self.end_dts = p.dts + u64::from(duration);
        self.last_duration = duration;
        self.samples += 1;
        Ok(())
    }

    /// The duration of the pending sample, given the next frame of the track.
    fn duration_until(&mut self, rtp: u64, captured: Instant) -> u32 {
        let Some(p) = &self.pending else {
            return self.last_duration;
        };
        let max = ticks(MAX_GAP, self.timescale).max(1);
        let delta = i128::from(rtp) - i128::from(p.rtp);
        if delta > 0 && delta <= i128::from(max) {
            return delta as u32;
        }
        self.discontinuities += 1;
        let wall = ticks(captured.saturating_duration_since(p.captured), self.timescale);
        wall.clamp(1, max) as u32
    }

    fn secs(&self) -> f64 {
        self.end_dts as f64 / f64::from(self.timescale)
    }
}

/// Duration in ticks of `timescale`, saturating.
fn ticks(d: Duration, timescale: u32) -> u64 {
    let t = d.as_nanos() * u128::from(timescale) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The codec-specific part of the video sample entry, found in the first keyframe.
enum VideoEntry {
    H264 { sps: Vec<u8>, pps: Vec<u8>, width: u16, height: u16 },
    Vp8 { profile: u8, width: u16, height: u16 },
}

/// Fragmented MP4 writer; see the module docs.
pub struct Fmp4Writer {
    /// The video codec the file should carry; `None` once given up or if audio only.
    video_plan: Option<Codec>,
    audio_plan: bool,
    video: Option<Track>,
    audio: Option<Track>,
    started: bool,
    movie_start: Option<Instant>,
    fragment_start: Option<Instant>,
    sequence: u32,
    position: u64,
    fragments: u32,
    out: VecDeque<Output>,
    live: Option<Live>,
}

impl Fmp4Writer {
    /// A writer for a stream with this video codec (if any) and Opus audio (if `audio`).
    pub fn new(video: Option<Codec>, audio: bool) -> Self {
        Fmp4Writer {
            video_plan: video.filter(|c| c.kind() == FrameKind::Video),
            audio_plan: audio,
            video: None,
            audio: None,
            started: false,
            movie_start: None,
            fragment_start: None,
            sequence: 0,
            position: 0,
            fragments: 0,
            out: VecDeque::new(),
            live: None,
        }
    }

    /// A writer for a live packager: output from [`Fmp4Writer::drain_live`] (see the module
    /// docs), fragments of at most about `part` of media, and a new one at each keyframe.
    pub fn new_live(video: Option<Codec>, audio: bool, part: Duration) -> Self {
        let mut w = Self::new(video, audio);
        w.live = Some(Live { part, out: VecDeque::new(), aac: None });
        w
    }

    /// As [`Fmp4Writer::new_live`], with an AAC-LC audio track (48 kHz, `asc` its
    /// AudioSpecificConfig): see the module docs.
    pub fn new_live_aac(video: Option<Codec>, asc: Vec<u8>, part: Duration) -> Self {
        let mut w = Self::new(video, true);
        w.live = Some(Live { part, out: VecDeque::new(), aac: Some(asc) });
        w
    }

    /// Take the live output produced so far (live mode only; empty otherwise).
    pub fn drain_live(&mut self) -> impl Iterator<Item = LiveOutput> + '_ {
        self.live.iter_mut().flat_map(|l| l.out.drain(..))
    }

    /// The track fragment timing follows: video if present, else audio.
    fn reference(&self) -> Option<&Track> {
        self.video.as_ref().or(self.audio.as_ref())
    }

    /// True once the header is written (the first keyframe, or audio alone, arrived).
    pub fn started(&self) -> bool {
        self.started
    }

    /// No usable video keyframe came: record audio alone from now on. No effect once started.
    pub fn start_without_video(&mut self) {
        if !self.started {
            self.video_plan = None;
        }
    }

    /// Feed one frame. Output, if any, is ready in [`Fmp4Writer::drain`].
    pub fn push(&mut self, frame: &Frame) -> Result<Pushed, MuxError> {
        let video = frame.kind() == FrameKind::Video;
        if !self.started {
            if video {
                if self.video_plan != Some(frame.codec) {
                    return Ok(Pushed::NoTrack);
                }
                if !frame.keyframe {
                    return Ok(Pushed::WaitingForKeyframe);
                }
                let Some(entry) = video_entry(frame) else {
                    return Ok(Pushed::WaitingForKeyframe);
                };
                self.start(Some(entry), frame.captured)?;
            } else {
                if !self.audio_plan || frame.codec != Codec::Opus {
                    return Ok(Pushed::NoTrack);
                }
                if self.video_plan.is_some() {
                    return Ok(Pushed::WaitingForKeyframe);
                }
                self.start(None, frame.captured)?;
            }
        }
        let movie_start = self.movie_start.unwrap_or(frame.captured);
        let track = match (video, self.video.as_mut(), self.audio.as_mut()) {
            (true, Some(t), _) if self.video_plan == Some(frame.codec) => t,
            (false, _, Some(t)) if frame.codec == Codec::Opus => t,
            _ => return Ok(Pushed::NoTrack),
        };
        let data = match frame.codec {
            Codec::H264 => h264::annexb_to_avcc(&frame.data),
            Codec::Vp8 | Codec::Opus => frame.data.to_vec(),
        };
        if data.is_empty() {
            return Ok(Pushed::NoTrack);
        }
        let dts = match track.pending.as_ref().map(|p| p.dts) {
            Some(prev) => {
                let d = track.duration_until(frame.rtp_time, frame.captured);
                track.commit(d)?;
                prev + u64::from(d)
            }
            None => ticks(frame.captured.saturating_duration_since(movie_start), track.timescale),
        };
        track.pending = Some(Pending {
            rtp: frame.rtp_time,
            captured: frame.captured,
            dts,
            data,
            sync: !video || frame.keyframe,
        });
        let committed = self.has_samples();
        if committed && self.fragment_start.is_none() {
            self.fragment_start = Some(frame.captured);
        }
        // A fragment ends before each video keyframe (the keyframe is pending, so it opens the
        // next one) or once it spans MAX_FRAGMENT.
        let mut due =
            self.fragment_start.is_some_and(|s| frame.captured.saturating_duration_since(s) >= MAX_FRAGMENT);
        if let Some(live) = &self.live {
            let part = live.part;
            due |= self.reference().is_some_and(|t| {
                !t.entries.is_empty() && t.end_dts.saturating_sub(t.frag_base) >= ticks(part, t.timescale)
            });
        }
        if committed && ((video && frame.keyframe) || due) {
            self.flush()?;
        }
        Ok(Pushed::Written)
    }

    /// End the recording: the last sample of each track gets the duration of the one before,
    /// and the last fragment is queued.
    pub fn finish(&mut self) -> Result<(), MuxError> {
        for t in [self.video.as_mut(), self.audio.as_mut()].into_iter().flatten() {
            let d = t.last_duration;
            t.commit(d)?;
        }
        self.flush()
    }

    /// Take the output produced so far, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Output> + '_ {
        self.out.drain(..)
    }

    pub fn stats(&self) -> Stats {
        let v = self.video.as_ref();
        let a = self.audio.as_ref();
        let video_secs = v.map_or(0.0, Track::secs);
        let audio_secs = a.map_or(0.0, Track::secs);
        Stats {
            fragments: self.fragments,
            video_samples: v.map_or(0, |t| t.samples),
            audio_samples: a.map_or(0, |t| t.samples),
            duration_secs: video_secs.max(audio_secs),
            video_secs,
            audio_secs,
            discontinuities: v.map_or(0, |t| t.discontinuities) + a.map_or(0, |t| t.discontinuities),
            bytes: self.position,
        }
    }

    fn has_samples(&self) -> bool {
        [&self.video, &self.audio].into_iter().flatten().any(|t| !t.entries.is_empty())
    }

    fn emit(&mut self, bytes: Vec<u8>) {
        self.position += bytes.len() as u64;
        self.out.push_back(Output::Append(bytes));
    }

    fn start(&mut self, video: Option<VideoEntry>, at: Instant) -> Result<(), MuxError> {
        let mut traks = Vec::new();
        let mut next_id = 1;
        if let Some(entry) = &video {
            traks.push(video_trak(next_id, entry));
            self.video = Some(Track::new(next_id, 90_000, 3_000));
            next_id += 1;
        } else {
            self.video_plan = None;
        }
        let aac = self.live.as_ref().and_then(|l| l.aac.clone());
        if self.audio_plan {
            match &aac {
                Some(asc) => {
                    traks.push(aac_trak(next_id, asc));
                    self.audio = Some(Track::new(next_id, 48_000, 1024));
                }
                None => {
                    traks.push(audio_trak(next_id));
                    self.audio = Some(Track::new(next_id, 48_000, 960));
                }
            }
            next_id += 1;
        }
        let ftyp = Ftyp {
            major_brand: b"iso6".into(),
            minor_version: 0,
            compatible_brands: vec![b"iso6".into(), b"iso5".into(), b"isom".into(), b"mp41".into()],
        };
        let moov = Moov {
            mvhd: Mvhd {
                timescale: MOVIE_TIMESCALE,
                rate: 1.into(),
                volume: 1.into(),
                matrix: identity(),
                next_track_id: next_id,
                ..Default::default()
            },
            mvex: Some(Mvex {
                mehd: None,
                trex: traks
                    .iter()
                    .map(|t| Trex {
                        track_id: t.tkhd.track_id,
                        default_sample_description_index: 1,
                        ..Default::default()
                    })
                    .collect(),
            }),
            trak: traks,
            ..Default::default()
        };
        let mut buf = Vec::with_capacity(1024);
        ftyp.encode(&mut buf).map_err(|source| MuxError::Encode { what: "ftyp", source })?;
        moov.encode(&mut buf).map_err(|source| MuxError::Encode { what: "moov", source })?;
        if let Some(live) = &mut self.live {
            let audio = self.audio_plan.then_some(if aac.is_some() { "mp4a.40.2" } else { "opus" });
            let (codecs, width, height) = codecs_of(video.as_ref(), audio);
            live.out.push_back(LiveOutput::Init { bytes: buf, codecs, width, height });
        } else {
            self.emit(buf);
        }
        self.started = true;
        self.movie_start = Some(at);
        Ok(())
    }

    /// Write the fragment built so far (nothing if empty).
    fn flush(&mut self) -> Result<(), MuxError> {
        self.fragment_start = None;
        if !self.has_samples() {
            return Ok(());
        }
        self.sequence += 1;
        let video_id = self.video.as_ref().map(|t| t.id);
        let live = self.live.is_some();
        let tracks: Vec<&mut Track> = [self.video.as_mut(), self.audio.as_mut()]
            .into_iter()
            .flatten()
            .filter(|t| !t.entries.is_empty())
            .collect();
        let mdat_len: usize = tracks.iter().map(|t| t.data.len()).sum();
        // Live mode: the timing of the fragment, from its reference track.
        let info = live.then_some(()).and_then(|_| {
            let r = tracks.iter().find(|t| Some(t.id) == video_id).or(tracks.first())?;
            let scale = f64::from(r.timescale);
            let independent = match video_id {
                Some(id) => tracks
                    .iter()
                    .find(|t| t.id == id)
                    .is_some_and(|t| t.entries.first().and_then(|e| e.flags) == Some(SYNC_SAMPLE)),
                None => true,
            };
            Some(FragmentInfo {
                start: r.frag_base as f64 / scale,
                duration: r.end_dts.saturating_sub(r.frag_base) as f64 / scale,
                independent,
            })
        });
        let large = mdat_len as u64 + 8 > u64::from(u32::MAX);
        let mdat_header = if large { 16 } else { 8 };
        let moof_of = |offsets: &[i32], tracks: &[&mut Track], sequence: u32| Moof {
            mfhd: Mfhd { sequence_number: sequence },
            traf: tracks
                .iter()
                .zip(offsets)
                .map(|(t, off)| Traf {
                    tfhd: Tfhd { track_id: t.id, default_base_is_moof: true, ..Default::default() },
                    tfdt: Some(Tfdt { base_media_decode_time: t.frag_base }),
                    trun: vec![Trun {
                        data_offset: Some(*off),
                        samples: TrunSamples::Explicit(t.entries.clone()),
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        // Encode once to learn the moof size, then again with the real data offsets.
        let mut probe = Vec::new();
        moof_of(&vec![0; tracks.len()], &tracks, self.sequence)
            .encode(&mut probe)
            .map_err(|source| MuxError::Encode { what: "moof", source })?;
        let mut offsets = Vec::with_capacity(tracks.len());
        let mut at = probe.len() + mdat_header;
        for t in &tracks {
            offsets.push(i32::try_from(at).map_err(|_| MuxError::SampleTooLarge(at))?);
            at += t.data.len();
        }
        let mut buf = Vec::with_capacity(probe.len() + mdat_header + mdat_len);
        moof_of(&offsets, &tracks, self.sequence)
            .encode(&mut buf)
            .map_err(|source| MuxError::Encode { what: "moof", source })?;
        debug_assert_eq!(buf.len(), probe.len(), "moof size does not depend on the offsets");
        let moof_len = buf.len();
        // Hidden as `free` until the whole fragment is on disk (a file only).
        if !live {
            buf[4..8].copy_from_slice(b"free");
        }
        if large {
            buf.extend_from_slice(&1u32.to_be_bytes());
            buf.extend_from_slice(b"mdat");
            buf.extend_from_slice(&(mdat_len as u64 + 16).to_be_bytes());
        } else {
            buf.extend_from_slice(&(mdat_len as u32 + 8).to_be_bytes());
            buf.extend_from_slice(b"mdat");
        }
        for t in tracks {
            buf.extend_from_slice(&t.data);
            t.data.clear();
            t.entries.clear();
        }
        debug_assert_eq!(buf.len(), moof_len + mdat_header + mdat_len);
        self.fragments += 1;
        if let Some(live) = &mut self.live {
            self.position += buf.len() as u64;
            let info = info.unwrap_or(FragmentInfo { start: 0.0, duration: 0.0, independent: false });
            live.out.push_back(LiveOutput::Fragment { bytes: buf, info });
            return Ok(());
        }
        let moof_at = self.position;
        self.emit(buf);
        self.out.push_back(Output::Patch { at: moof_at + 4, bytes: *b"moof" });
        Ok(())
    }
}

/// The RFC 6381 codec string (`avc1.PPCCLL`, `vp08...`, `opus`) and picture size of a live
/// stream's tracks.
fn codecs_of(video: Option<&VideoEntry>, audio: Option<&str>) -> (String, u16, u16) {
    let mut codecs = Vec::new();
    let (mut w, mut h) = (0, 0);
    match video {
        Some(VideoEntry::H264 { sps, width, height, .. }) => {
            let b = |i: usize| sps.get(i).copied().unwrap_or(0);
            codecs.push(format!("avc1.{:02x}{:02x}{:02x}", b(1), b(2), b(3)));
            (w, h) = (*width, *height);
        }
        Some(VideoEntry::Vp8 { profile, width, height }) => {
            codecs.push(format!("vp08.{profile:02}.10.08"));
            (w, h) = (*width, *height);
        }
        None => {}
    }
    if let Some(a) = audio {
        codecs.push(a.into());
    }
    (codecs.join(","), w, h)
}

fn identity() -> Matrix {
    Matrix { a: 0x0001_0000, b: 0, u: 0, c: 0, d: 0x0001_0000, v: 0, x: 0, y: 0, w: 0x4000_0000 }
}

fn trak(id: u32, handler: &[u8; 4], timescale: u32, width: u16, height: u16, entry: SampleEntry) -> Trak {
    let video = handler == b"vide";
    Trak {
        tkhd: Tkhd {
            track_id: id,
            enabled: true,
            in_movie: true,
            alternate_group: 0,
            volume: if video { 0.into() } else { 1.into() },
            matrix: identity(),
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale, language: "und".into(), ..Default::default() },
            hdlr: Hdlr {
                handler: handler.into(),
                name: if video { "VideoHandler" } else { "SoundHandler" }.into(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                stbl: Stbl {
                    stsd: Stsd { codecs: vec![entry] },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

fn visual(width: u16, height: u16) -> Visual {
    Visual { data_reference_index: 1, width, height, ..Default::default() }
}

fn video_trak(id: u32, entry: &VideoEntry) -> Trak {
    match entry {
        VideoEntry::H264 { sps, pps, width, height } => {
            let mut avcc = Avcc {
                configuration_version: 1,
                avc_profile_indication: sps.get(1).copied().unwrap_or(66),
                profile_compatibility: sps.get(2).copied().unwrap_or(0),
                avc_level_indication: sps.get(3).copied().unwrap_or(31),
                length_size: 4,
                sequence_parameter_sets: vec![sps.clone()],
                picture_parameter_sets: vec![pps.clone()],
                ext: None,
            };
            // High profiles carry chroma format and bit depths in avcC.
            if matches!(avcc.avc_profile_indication, 100 | 110 | 122 | 144) {
                avcc.ext = Some(AvccExt::default());
            }
            let avc1 = Avc1 {
                visual: visual(*width, *height),
                avcc,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: None,
            };
            trak(id, b"vide", 90_000, *width, *height, avc1.into())
        }
        VideoEntry::Vp8 { profile, width, height } => {
            let vp08 = Vp08 {
                visual: visual(*width, *height),
                vpcc: VpcC {
                    profile: *profile,
                    level: 10,
                    bit_depth: 8,
                    chroma_subsampling: 1, // 4:2:0, chroma co-located with luma
                    video_full_range_flag: false,
                    color_primaries: 2, // unspecified
                    transfer_characteristics: 2,
                    matrix_coefficients: 2,
                    codec_initialization_data: Vec::new(),
                },
                ..Default::default()
            };
            trak(id, b"vide", 90_000, *width, *height, vp08.into())
        }
    }
}

fn audio_trak(id: u32) -> Trak {
    let opus = Opus {
        audio: Audio {
            data_reference_index: 1,
            channel_count: 2,
            sample_size: 16,
            sample_rate: 48_000.into(),
        },
        dops: Dops {
            output_channel_count: 2,
            pre_skip: 0,
            input_sample_rate: 48_000,
            output_gain: 0,
            channel_mapping: None,
        },
        btrt: None,
    };
    trak(id, b"soun", 48_000, 0, 0, opus.into())
}

/// An AAC-LC track (48 kHz stereo) with this AudioSpecificConfig.
fn aac_trak(id: u32, asc: &[u8]) -> Trak {
    let mp4a = mp4_atom::Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: 2,
            sample_size: 16,
            sample_rate: 48_000.into(),
        },
        esds: mp4_atom::Esds {
            es_desc: mp4_atom::esds::EsDescriptor {
                es_id: 1,
                dec_config: mp4_atom::esds::DecoderConfig {
                    object_type_indication: 0x40, // MPEG-4 Audio
                    stream_type: 0x05,            // audio
                    up_stream: 0,
                    max_bitrate: 160_000,
                    avg_bitrate: 128_000,
                    dec_specific: Some(mp4_atom::esds::DecoderSpecific {
                        profile: 2,    // AAC-LC
                        freq_index: 3, // 48 kHz
                        chan_conf: 2,
                        raw: asc.to_vec(),
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    };
    trak(id, b"soun", 48_000, 0, 0, mp4a.into())
}

/// The sample entry for a video keyframe, or `None` if it lacks what the entry needs.
fn video_entry(frame: &Frame) -> Option<VideoEntry> {
    match frame.codec {
        Codec::H264 => {
            let mut sps = None;
            let mut pps = None;
            for nal in h264::annexb_nals(&frame.data) {
                match h264::nal_type(nal) {
                    Some(h264::NAL_SPS) if sps.is_none() && nal.len() >= 4 => sps = Some(nal.to_vec()),
                    Some(h264::NAL_PPS) if pps.is_none() && nal.len() >= 2 => pps = Some(nal.to_vec()),
                    _ => {}
                }
            }
            let (sps, pps) = (sps?, pps?);
            let (width, height) = h264::sps_dimensions(&sps)
                .and_then(|(w, h)| Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?)))
                .unwrap_or((0, 0));
            Some(VideoEntry::H264 { sps, pps, width, height })
        }
        Codec::Vp8 => {
            let d = &frame.data;
            // Key frame: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
            if d.len() < 10 || d[0] & 1 != 0 || d[3..6] != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let width = u16::from_le_bytes([d[6], d[7]]) & 0x3fff;
            let height = u16::from_le_bytes([d[8], d[9]]) & 0x3fff;
            Some(VideoEntry::Vp8 { profile: (d[0] >> 1) & 0x07, width, height })
        }
        Codec::Opus => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::tests::{PPS, SPS_640X360};
    use std::sync::Arc;

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    fn frame(codec: Codec, key: bool, rtp: u64, at: Instant, data: Vec<u8>) -> Frame {
        Frame { codec, keyframe: key, rtp_time: rtp, captured: at, data: Arc::from(data) }
    }

    fn h264(n: u32, key: bool) -> Vec<u8> {
        if key {
            annexb(&[SPS_640X360, PPS, &[0x65, 0x88, 0x80, n as u8 | 1]])
        } else {
            annexb(&[&[0x41, 0x9a, n as u8 | 1]])
        }
    }

    /// Apply the writer's output to an in-memory file.
    fn apply(file: &mut Vec<u8>, w: &mut Fmp4Writer) {
        for o in w.drain() {
            match o {
                Output::Append(b) => file.extend_from_slice(&b),
                Output::Patch { at, bytes } => file[at as usize..at as usize + 4].copy_from_slice(&bytes),
            }
        }
    }

    /// Feed `secs` of 30 fps video (keyframe every `gop` frames, 0 = first only) and 50 fps
    /// Opus, in arrival order, with both clocks starting at arbitrary values.
    fn record(codec: Option<Codec>, secs: u32, gop: u32) -> (Vec<u8>, Fmp4Writer) {
        let mut w = Fmp4Writer::new(codec, true);
        let mut file = Vec::new();
        let t0 = Instant::now();
        let (vbase, abase) = (1_000_000u64, 777_777u64);
        let mut events: Vec<(Duration, bool, u32)> = Vec::new();
        for i in 0..secs * 30 {
            events.push((Duration::from_micros(u64::from(i) * 33_333), true, i));
        }
        for i in 0..secs * 50 {
            events.push((Duration::from_millis(u64::from(i) * 20 + 5), false, i));
        }
        events.sort_by_key(|e| e.0);
        for (t, video, i) in events {
            let f = if video {
                let Some(c) = codec else { continue };
                let key = i == 0 || (gop > 0 && i % gop == 0);
                let data = match c {
                    Codec::Vp8 => vp8(key),
                    _ => h264(i, key),
                };
                frame(c, key, vbase + u64::from(i) * 3000, t0 + t, data)
            } else {
                frame(Codec::Opus, false, abase + u64::from(i) * 960, t0 + t, vec![0xfc, 0xff, 0xfe])
            };
            w.push(&f).expect("push");
            apply(&mut file, &mut w);
        }
        w.finish().expect("finish");
        apply(&mut file, &mut w);
        (file, w)
    }

    fn vp8(key: bool) -> Vec<u8> {
        if key {
            vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0x11, 0x22]
        } else {
            vec![0x11, 0x02, 0x00, 0x33]
        }
    }

    /// Top-level boxes: (type, offset, size).
    fn boxes(file: &[u8]) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= file.len() {
            let size = u32::from_be_bytes(file[i..i + 4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&file[i + 4..i + 8]).into_owned(), i, size));
            if size < 8 {
                break;
            }
            i += size;
        }
        out
    }

    #[test]
    fn layout_and_durations() {
        let (file, w) = record(Some(Codec::H264), 5, 60);
        let b = boxes(&file);
        let kinds: Vec<&str> = b.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(&kinds[..3], &["ftyp", "moov", "moof"]);
        assert_eq!(b.iter().map(|x| x.2).sum::<usize>(), file.len(), "boxes tile the file");
        assert!(!kinds.contains(&"free"), "every fragment patched to moof");
        let s = w.stats();
        assert!((s.video_secs - 5.0).abs() < 0.05, "{s:?}");
        assert!((s.audio_secs - 5.0).abs() < 0.05, "{s:?}");
        assert_eq!(s.video_samples, 150);
        assert_eq!(s.discontinuities, 0);
        // Keyframes at 0, 2 s, 4 s start fragments; none spans more than MAX_FRAGMENT.
        assert!(s.fragments >= 3, "{s:?}");
        // Decodes back with mp4-atom.
        use mp4_atom::Decode;
        let mut cur = std::io::Cursor::new(&file);
        let _ = Ftyp::decode(&mut cur).unwrap();
        let moov = Moov::decode(&mut cur).unwrap();
        assert_eq!(moov.trak.len(), 2);
        let moof = Moof::decode(&mut cur).unwrap();
        assert_eq!(moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time, 0);
        let first = moof.traf[0].trun[0].samples.get(0).unwrap();
        assert_eq!(first.flags, Some(SYNC_SAMPLE));
        assert_eq!(first.duration, Some(3000));
    }

    #[test]
    fn audio_before_keyframe_is_dropped_then_aligned() {
        let mut w = Fmp4Writer::new(Some(Codec::H264), true);
        let t0 = Instant::now();
        let opus = |i: u64, ms: u64| {
            frame(Codec::Opus, false, 5000 + i * 960, t0 + Duration::from_millis(ms), vec![1])
        };
        assert_eq!(w.push(&opus(0, 0)).unwrap(), Pushed::WaitingForKeyframe);
        let delta = frame(Codec::H264, false, 9000, t0 + Duration::from_millis(10), h264(0, false));
        assert_eq!(w.push(&delta).unwrap(), Pushed::WaitingForKeyframe);
        let key = frame(Codec::H264, true, 12000, t0 + Duration::from_millis(30), h264(1, true));
        assert_eq!(w.push(&key).unwrap(), Pushed::Written);
        // Audio arriving 10 ms after the keyframe starts 10 ms into the movie.
        assert_eq!(w.push(&opus(2, 40)).unwrap(), Pushed::Written);
        assert_eq!(w.audio.as_ref().unwrap().pending.as_ref().unwrap().dts, 480);
        assert_eq!(w.video.as_ref().unwrap().pending.as_ref().unwrap().dts, 0);
    }

    #[test]
    fn audio_only_and_give_up_on_video() {
        let mut w = Fmp4Writer::new(Some(Codec::H264), true);
        let t0 = Instant::now();
        let f = frame(Codec::Opus, false, 0, t0, vec![1, 2]);
        assert_eq!(w.push(&f).unwrap(), Pushed::WaitingForKeyframe);
        w.start_without_video();
        assert_eq!(w.push(&f).unwrap(), Pushed::Written);
        let key = frame(Codec::H264, true, 0, t0, h264(0, true));
        assert_eq!(w.push(&key).unwrap(), Pushed::NoTrack);
        let mut file = Vec::new();
        w.finish().unwrap();
        apply(&mut file, &mut w);
        use mp4_atom::Decode;
        let mut cur = std::io::Cursor::new(&file);
        let _ = Ftyp::decode(&mut cur).unwrap();
        assert_eq!(Moov::decode(&mut cur).unwrap().trak.len(), 1);
    }

    #[test]
    fn gaps_and_resets() {
        let mut w = Fmp4Writer::new(None, true);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        w.push(&frame(Codec::Opus, false, 100, at(0), vec![1])).unwrap();
        // 200 ms of lost packets: the first sample lasts 220 ms.
        w.push(&frame(Codec::Opus, false, 100 + 960 * 11, at(220), vec![1])).unwrap();
        assert_eq!(w.audio.as_ref().unwrap().entries[0].duration, Some(960 * 11));
        // A reset backwards: bridged by arrival time (20 ms).
        w.push(&frame(Codec::Opus, false, 50, at(240), vec![1])).unwrap();
        assert_eq!(w.audio.as_ref().unwrap().entries[1].duration, Some(960));
        // A 32-bit wrap seen unextended: a jump of ~2^32, bridged too.
        w.push(&frame(Codec::Opus, false, 50 + (1 << 32), at(260), vec![1])).unwrap();
        assert_eq!(w.audio.as_ref().unwrap().entries[2].duration, Some(960));
        assert_eq!(w.stats().discontinuities, 2);
        // Same timestamp twice (a duplicate): at least one tick, never zero.
        w.push(&frame(Codec::Opus, false, 50 + (1 << 32), at(260), vec![1])).unwrap();
        assert_eq!(w.audio.as_ref().unwrap().entries[3].duration, Some(1));
    }

    #[test]
    fn no_drift_over_a_minute() {
        let (_, w) = record(Some(Codec::H264), 60, 0);
        let s = w.stats();
        assert!((s.video_secs - s.audio_secs).abs() < 0.1, "{s:?}");
        assert!((s.video_secs - 60.0).abs() < 0.1, "{s:?}");
        // No keyframe after the first: fragments every MAX_FRAGMENT by time.
        assert!((59..=61).contains(&s.fragments), "{s:?}");
    }

    #[test]
    fn every_prefix_is_readable() {
        // Any prefix of the output sequence (a crash at any point) is whole boxes, maybe plus
        // a trailing `free` or a partial last box; never a partial moof.
        let mut w = Fmp4Writer::new(Some(Codec::H264), true);
        let t0 = Instant::now();
        let mut file = Vec::new();
        for i in 0..120u32 {
            let f = frame(
                Codec::H264,
                i % 45 == 0,
                u64::from(i) * 3000,
                t0 + Duration::from_millis(u64::from(i) * 33),
                h264(i, i % 45 == 0),
            );
            w.push(&f).unwrap();
            for o in w.drain() {
                match o {
                    Output::Append(b) => {
                        // Crash in the middle of this append.
                        let mut cut = file.clone();
                        cut.extend_from_slice(&b[..b.len() / 2]);
                        for (kind, off, size) in boxes(&cut) {
                            if off + size > cut.len() {
                                assert_ne!(kind, "moof", "partial moof visible");
                            }
                        }
                        file.extend_from_slice(&b);
                    }
                    Output::Patch { at, bytes } => file[at as usize..at as usize + 4].copy_from_slice(&bytes),
                }
            }
        }
        assert!(boxes(&file).iter().filter(|b| b.0 == "moof").count() >= 2);
    }

    /// ffprobe (Debian package ffmpeg) reads what we write: codecs and duration. Skipped when
    /// ffprobe is not installed.
    #[test]
    fn ffprobe_reads_h264_opus_and_vp8() {
        if std::process::Command::new("ffprobe").arg("-version").output().is_err() {
            eprintln!("ffprobe not installed: skipped");
            return;
        }
        for (codec, name) in [(Codec::H264, "h264"), (Codec::Vp8, "vp8")] {
            let (file, _) = record(Some(codec), 4, 30);
            let path = std::env::temp_dir().join(format!("sluice-fmp4-{}-{name}.mp4", std::process::id()));
            std::fs::write(&path, &file).unwrap();
            let out = std::process::Command::new("ffprobe")
                .args([
                    "-v",
                    "error",
                    "-show_entries",
                    "stream=codec_name,duration:format=duration",
                    "-of",
                    "json",
                ])
                .arg(&path)
                .output()
                .unwrap();
            let _ = std::fs::remove_file(&path);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let codecs: Vec<&str> =
                v["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
            assert_eq!(codecs, vec![name, "opus"], "{text}");
            let d: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
            assert!((d - 4.0).abs() < 0.1, "duration {d}: {text}");
        }
    }
}
