//! FLV tag bodies, as RTMP carries them, to engine-independent [`Frame`]s. Pure code: no actix,
//! no sockets, no clock (the arrival time is passed in), so the RTMP actor stays a thin shell
//! and this part is unit-tested and fuzzable on its own.
//!
//! ## Video (FLV `VIDEODATA`, codec id 7 = AVC)
//! `[frame type:4 | codec id:4] [AVCPacketType] [composition time: si24] [payload]`:
//! - packet type 0, the **sequence header**: an `AVCDecoderConfigurationRecord` (ISO 14496-15
//!   §5.3.3.1), parsed into its SPS and PPS and the NAL length size;
//! - packet type 1, **NAL units** in AVCC form (length-prefixed): converted to Annex-B with the
//!   parameter sets in front of every keyframe (so a viewer can start at any keyframe), stamped
//!   `pts = dts + composition time` in the 90 kHz clock;
//! - packet type 2, end of sequence: ignored.
//!
//! Enhanced RTMP (`IsExHeader` bit, FourCC `avc1`) is read the same way for AVC; other FourCCs
//! (HEVC, AV1, VP9) and legacy codecs are reported as unsupported and their frames dropped.
//!
//! ## Audio (FLV `AUDIODATA`, sound format 10 = AAC)
//! `[format:4 | rate:2 | size:1 | type:1] [AACPacketType] [payload]`: packet type 0 is the
//! AudioSpecificConfig (a transcoder is made for it), type 1 one raw AAC frame, pushed through
//! [`AacToOpus`] at `pts = timestamp * rate / 1000`; every Opus packet it completes becomes a
//! frame stamped in the 48 kHz clock. Audio and video share the RTMP timeline, so they stay in
//! sync as the encoder sent them.
//!
//! ## Timestamps
//! RTMP timestamps are 32-bit milliseconds that wrap after 49.7 days; [`Timeline`] unwraps them
//! to 64 bits so the frames' clocks never jump back.
//!
//! ## The other way: frames to FLV tags ([`FramesToFlv`], RTMP re-publishing)
//! A stream's [`Frame`]s become FLV tag bodies for an RTMP server: from the first H.264
//! keyframe that carries its SPS and PPS on, an AVC sequence header ([`avc_sequence_header`],
//! again whenever the parameter sets change), then each access unit as AVCC NAL units with
//! composition time 0 ([`avc_nalus`]: browsers send no B-frames); Opus is transcoded to AAC-LC
//! ([`crate::transcode::OpusToAac`]) and sent as an AAC sequence header and raw AAC frames
//! ([`aac_sequence_header`], [`aac_frame`]). [`Metadata`] is what `onMetaData` says. Times are
//! milliseconds from the first keyframe, each track on its own RTP clock, the two tracks
//! aligned by the arrival time of their first frames (WebRTC's RTP clocks of audio and video
//! are unrelated).

use std::sync::Arc;
use std::time::Instant;

use crate::h264::{self, AvcConfig};
use crate::media::{Codec, Frame};
use crate::transcode::AacToOpus;

/// FLV video codec id of AVC (H.264).
const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;
/// Enhanced RTMP: the high bit of the first video byte marks an extended header with a FourCC.
const EX_HEADER: u8 = 0x80;

/// An FLV tag an RTMP publisher sent that cannot become a frame. Each concerns that tag alone:
/// the RTMP connection logs it (once per kind) and carries on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error(transparent)]
    BadAvcConfig(#[from] h264::BadAvcConfig),
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    #[error("{0} data before its sequence header")]
    NoConfig(&'static str),
    #[error("unsupported codec: {0}")]
    Unsupported(String),
    #[error("AAC audio: {0}")]
    Audio(String),
}

/// One FLV video tag body, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag<'a> {
    Config(AvcConfig),
    Nalus {
        keyframe: bool,
        cts_ms: i32,
        data: &'a [u8],
    },
    EndOfSequence,
    /// Not AVC: the FLV codec id, or the Enhanced RTMP FourCC.
    Unsupported(String),
}

pub fn parse_video(b: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let first = *b.first().ok_or(FlvError::Truncated("video tag"))?;
    if first & EX_HEADER != 0 {
        return parse_video_ex(b);
    }
    let codec = first & 0x0f;
    if codec != CODEC_AVC {
        return Ok(VideoTag::Unsupported(format!("FLV video codec id {codec}")));
    }
    let frame_type = first >> 4;
    if frame_type == 5 {
        // Video info/command frame: no picture.
        return Ok(VideoTag::EndOfSequence);
    }
    let h = b.get(1..5).ok_or(FlvError::Truncated("AVC packet header"))?;
    let cts = i24(h[1], h[2], h[3]);
    match h[0] {
        0 => Ok(VideoTag::Config(AvcConfig::parse(&b[5..])?)),
        1 => Ok(VideoTag::Nalus { keyframe: frame_type == 1, cts_ms: cts, data: &b[5..] }),
        2 => Ok(VideoTag::EndOfSequence),
        t => Err(FlvError::UnknownPacketType(t)),
    }
}

/// Enhanced RTMP video: `[1 | frame type:3 | packet type:4] [FourCC] ...`.
fn parse_video_ex(b: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let fourcc = b.get(1..5).ok_or(FlvError::Truncated("Enhanced RTMP FourCC"))?;
    if fourcc != b"avc1" {
        return Ok(VideoTag::Unsupported(format!("FourCC {}", String::from_utf8_lossy(fourcc))));
    }
    let frame_type = (b[0] >> 4) & 0x07;
    let body = &b[5..];
    match b[0] & 0x0f {
        // SequenceStart
        0 => Ok(VideoTag::Config(AvcConfig::parse(body)?)),
        // CodedFrames: with a composition time offset.
        1 => {
            let c = body.get(0..3).ok_or(FlvError::Truncated("composition time"))?;
            Ok(VideoTag::Nalus { keyframe: frame_type == 1, cts_ms: i24(c[0], c[1], c[2]), data: &body[3..] })
        }
        // SequenceEnd
        2 => Ok(VideoTag::EndOfSequence),
        // CodedFramesX: composition time 0.
        3 => Ok(VideoTag::Nalus { keyframe: frame_type == 1, cts_ms: 0, data: body }),
        // Metadata, MPEG-2 TS sequence start, multitrack: nothing we play.
        _ => Ok(VideoTag::EndOfSequence),
    }
}

/// One FLV audio tag body, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// The AudioSpecificConfig.
    AacConfig(&'a [u8]),
    /// One raw AAC access unit.
    AacFrame(&'a [u8]),
    /// Not AAC: the FLV sound format.
    Unsupported(u8),
}

pub fn parse_audio(b: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let first = *b.first().ok_or(FlvError::Truncated("audio tag"))?;
    let format = first >> 4;
    if format != SOUND_AAC {
        return Ok(AudioTag::Unsupported(format));
    }
    match b.get(1) {
        Some(0) => Ok(AudioTag::AacConfig(&b[2..])),
        Some(1) => Ok(AudioTag::AacFrame(&b[2..])),
        Some(t) => Err(FlvError::UnknownPacketType(*t)),
        None => Err(FlvError::Truncated("AAC packet type")),
    }
}

fn i24(a: u8, b: u8, c: u8) -> i32 {
    // Sign-extend a big-endian 24-bit value.
    (i32::from_be_bytes([a, b, c, 0])) >> 8
}

/// Unwraps 32-bit millisecond timestamps into a 64-bit timeline.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timeline {
    last: Option<u32>,
    epoch: u64,
}

impl Timeline {
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last {
            // Backwards by more than half the range: the counter wrapped.
            if ts < last && last - ts > u32::MAX / 2 {
                self.epoch += 1 << 32;
            }
        }
        self.last = Some(ts);
        self.epoch + ts as u64
    }
}

/// What an RTMP publisher's stream holds so far, for the stream object and the logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tracks {
    pub width: u32,
    pub height: u32,
    pub video: bool,
    pub audio: bool,
}

/// The FLV-to-frames state of one published stream: the current AVC configuration, the
/// AAC→Opus transcoder and the unwrapped timelines of each track.
#[derive(Default)]
pub struct FlvToFrames {
    avc: Option<AvcConfig>,
    aac: Option<(Vec<u8>, AacToOpus)>,
    video_time: Timeline,
    audio_time: Timeline,
    tracks: Tracks,
}

impl FlvToFrames {
    pub fn tracks(&self) -> &Tracks {
        &self.tracks
    }

    /// A video tag at `ts_ms` (the RTMP message timestamp, decode time). Returns the frame to
    /// send, if the tag holds one. A tag that changes the configuration changes `tracks()`.
    pub fn video(&mut self, ts_ms: u32, body: &[u8], now: Instant) -> Result<Option<Frame>, FlvError> {
        let dts = self.video_time.unwrap(ts_ms);
        match parse_video(body)? {
            VideoTag::Config(c) => {
                let (width, height) = c.dimensions();
                self.tracks = Tracks { width, height, video: true, ..self.tracks.clone() };
                self.avc = Some(c);
                Ok(None)
            }
            VideoTag::Nalus { keyframe, cts_ms, data } => {
                let avc = self.avc.as_ref().ok_or(FlvError::NoConfig("AVC"))?;
                let au = h264::avcc_to_annexb(data, avc.length_size, keyframe, &avc.sps, &avc.pps);
                if au.is_empty() {
                    return Ok(None);
                }
                let keyframe = keyframe && crate::media::is_keyframe(&au, true);
                let pts_ms = (dts as i64 + cts_ms as i64).max(0) as u64;
                Ok(Some(Frame {
                    codec: Codec::H264,
                    keyframe,
                    rtp_time: pts_ms * 90,
                    captured: now,
                    data: Arc::from(au),
                }))
            }
            VideoTag::EndOfSequence => Ok(None),
            VideoTag::Unsupported(what) => Err(FlvError::Unsupported(what)),
        }
    }

    /// An audio tag at `ts_ms`; every Opus packet it completes is appended to `out`.
    pub fn audio(
        &mut self,
        ts_ms: u32,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Frame>,
    ) -> Result<(), FlvError> {
        let t = self.audio_time.unwrap(ts_ms);
        match parse_audio(body)? {
            AudioTag::AacConfig(asc) => {
                if self.aac.as_ref().is_some_and(|(a, _)| a == asc) {
                    return Ok(());
                }
                let tc = AacToOpus::new(asc).map_err(|e| FlvError::Audio(e.to_string()))?;
                self.aac = Some((asc.to_vec(), tc));
                self.tracks.audio = true;
                Ok(())
            }
            AudioTag::AacFrame(au) => {
                let (_, tc) = self.aac.as_mut().ok_or(FlvError::NoConfig("AAC"))?;
                let rate = tc.sample_rate() as u64;
                let (frames, res) = tc.frames(au, t * rate / 1000, now);
                out.extend(frames);
                res.map_err(|e| FlvError::Audio(e.to_string()))
            }
            AudioTag::Unsupported(f) => Err(FlvError::Unsupported(format!("FLV sound format {f}"))),
        }
    }
}

// ---- Muxing: frames to FLV tag bodies -------------------------------------------------------

/// An `AVCDecoderConfigurationRecord` (ISO 14496-15 §5.3.3.1) of one SPS and one PPS (NAL
/// units with their header byte), 4-byte NAL lengths. `None` for an SPS too short to carry
/// the profile and level.
pub fn avc_decoder_config(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let profile = sps.get(1..4)?;
    let sps_len = u16::try_from(sps.len()).ok()?;
    let pps_len = u16::try_from(pps.len()).ok()?;
    let mut r = Vec::with_capacity(11 + sps.len() + pps.len());
    r.extend_from_slice(&[1, profile[0], profile[1], profile[2], 0xfc | 3, 0xe0 | 1]);
    r.extend_from_slice(&sps_len.to_be_bytes());
    r.extend_from_slice(sps);
    r.push(1);
    r.extend_from_slice(&pps_len.to_be_bytes());
    r.extend_from_slice(pps);
    Some(r)
}

/// The FLV video tag body of an AVC sequence header (keyframe, packet type 0).
pub fn avc_sequence_header(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let mut b = vec![0x10 | CODEC_AVC, 0, 0, 0, 0];
    b.extend(avc_decoder_config(sps, pps)?);
    Some(b)
}

/// The FLV video tag body of one Annex-B access unit: AVCC NAL units (4-byte lengths, access
/// unit delimiters dropped), packet type 1, composition time 0.
pub fn avc_nalus(annexb: &[u8], keyframe: bool) -> Vec<u8> {
    let frame_type = if keyframe { 0x10 } else { 0x20 };
    let mut b = vec![frame_type | CODEC_AVC, 1, 0, 0, 0];
    b.extend(h264::annexb_to_avcc(annexb));
    b
}

/// First byte of an AAC audio tag: sound format 10, "44 kHz" (FLV's code for any AAC rate),
/// 16-bit, stereo (FLV readers take the real values from the AudioSpecificConfig).
const AAC_TAG_BYTE: u8 = (SOUND_AAC << 4) | 0x0f;

/// The FLV audio tag body of an AAC sequence header: the AudioSpecificConfig.
pub fn aac_sequence_header(asc: &[u8]) -> Vec<u8> {
    let mut b = vec![AAC_TAG_BYTE, 0];
    b.extend_from_slice(asc);
    b
}

/// The FLV audio tag body of one raw AAC access unit.
pub fn aac_frame(raw: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(raw.len() + 2);
    b.extend_from_slice(&[AAC_TAG_BYTE, 1]);
    b.extend_from_slice(raw);
    b
}

/// What `onMetaData` tells an RTMP server and its players.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// Picture size (0: no video).
    pub width: u32,
    pub height: u32,
    pub video: bool,
    pub audio: bool,
    pub audio_rate: u32,
    pub stereo: bool,
}

impl Metadata {
    /// The FLV script tag body: AMF0 `"onMetaData"` and an ECMA array of the known fields
    /// (`videocodecid` 7 for AVC, `audiocodecid` 10 for AAC).
    pub fn to_amf0(&self) -> Vec<u8> {
        fn key(b: &mut Vec<u8>, k: &str) {
            b.extend_from_slice(&(k.len() as u16).to_be_bytes());
            b.extend_from_slice(k.as_bytes());
        }
        let mut fields: Vec<(&str, Option<f64>, Option<bool>)> = Vec::new();
        if self.video {
            fields.push(("width", Some(self.width as f64), None));
            fields.push(("height", Some(self.height as f64), None));
            fields.push(("videocodecid", Some(CODEC_AVC as f64), None));
        }
        if self.audio {
            fields.push(("audiocodecid", Some(SOUND_AAC as f64), None));
            fields.push(("audiosamplerate", Some(self.audio_rate as f64), None));
            fields.push(("audiosamplesize", Some(16.0), None));
            fields.push(("stereo", None, Some(self.stereo)));
        }
        fields.push(("encoder", None, None));
        let mut b = vec![0x02];
        key(&mut b, "onMetaData");
        b.push(0x08);
        b.extend_from_slice(&(fields.len() as u32).to_be_bytes());
        for (k, num, flag) in fields {
            key(&mut b, k);
            match (num, flag) {
                (Some(n), _) => {
                    b.push(0x00);
                    b.extend_from_slice(&n.to_be_bytes());
                }
                (None, Some(f)) => b.extend_from_slice(&[0x01, f as u8]),
                (None, None) => {
                    let v = concat!("sluice ", env!("CARGO_PKG_VERSION"));
                    b.push(0x02);
                    key(&mut b, v);
                }
            }
        }
        b.extend_from_slice(&[0, 0, 9]);
        b
    }
}

/// FLV tag types (FLV file format §E.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    Audio = 8,
    Video = 9,
    Script = 18,
}

/// The 9-byte FLV file header and the first PreviousTagSize (for writing `.flv` files).
pub fn file_header(video: bool, audio: bool) -> Vec<u8> {
    let flags = (u8::from(audio) << 2) | u8::from(video);
    vec![b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One FLV file tag: header, `body`, PreviousTagSize. `ts_ms` wraps as FLV's 32-bit time does.
pub fn file_tag(kind: TagType, ts_ms: u32, body: &[u8]) -> Vec<u8> {
    let len = body.len().min(0xff_ffff) as u32;
    let mut t = Vec::with_capacity(body.len() + 15);
    t.push(kind as u8);
    t.extend_from_slice(&len.to_be_bytes()[1..]);
    t.extend_from_slice(&ts_ms.to_be_bytes()[1..]);
    t.push((ts_ms >> 24) as u8);
    t.extend_from_slice(&[0, 0, 0]);
    t.extend_from_slice(&body[..len as usize]);
    t.extend_from_slice(&(len + 11).to_be_bytes());
    t
}

/// Which frames go out when the way to the RTMP server is slow: the sender has a queue of
/// `capacity` messages, `free` of them free. Video stops when the queue is three-quarters full
/// and resumes at the first keyframe that finds it at least half empty (a decoder needs the
/// whole GOP); audio goes on while a few slots are left.
#[derive(Debug, Default, Clone)]
pub struct FlowControl {
    skipping_video: bool,
    /// Frames not sent, for the log.
    pub skipped: u64,
}

impl FlowControl {
    /// Audio frames need this many free slots.
    pub const AUDIO_RESERVE: usize = 8;

    pub fn admit(
        &mut self,
        kind: crate::media::FrameKind,
        keyframe: bool,
        free: usize,
        capacity: usize,
    ) -> bool {
        let ok = match kind {
            crate::media::FrameKind::Audio => free >= Self::AUDIO_RESERVE,
            crate::media::FrameKind::Video if self.skipping_video => {
                let resume = keyframe && free >= capacity / 2;
                self.skipping_video = !resume;
                resume
            }
            crate::media::FrameKind::Video => {
                self.skipping_video = free < capacity / 4;
                !self.skipping_video
            }
        };
        if !ok {
            self.skipped += 1;
        }
        ok
    }
}

/// One thing to send to the RTMP server, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum FlvOut {
    /// `@setDataFrame onMetaData` (sent again when the picture size changes).
    Metadata(Metadata),
    /// A video tag body at `ts_ms` (decode time = presentation time).
    Video { ts_ms: u32, body: Vec<u8>, keyframe: bool },
    /// An audio tag body at `ts_ms`.
    Audio { ts_ms: u32, body: Vec<u8> },
}

/// The frames-to-FLV state of one re-published stream (see the module docs). Sans-IO: push
/// frames in, pop what to send out.
pub struct FramesToFlv {
    video: bool,
    audio: bool,
    /// SPS and PPS of the last sequence header sent.
    avc: Option<(Vec<u8>, Vec<u8>)>,
    aac: Option<crate::transcode::OpusToAac>,
    aac_header_sent: bool,
    /// Arrival of the first keyframe (of the first audio frame for a stream without video):
    /// time 0. `None` until then; frames before it are dropped.
    epoch: Option<Instant>,
    /// First RTP time of each track and its offset from the epoch, in ms.
    video_base: Option<(u64, u64)>,
    audio_base: Option<(u64, u64)>,
    metadata: Metadata,
    out: std::collections::VecDeque<FlvOut>,
}

impl FramesToFlv {
    /// For a stream with H.264 video (`video`) and/or Opus audio (`audio`).
    pub fn new(video: bool, audio: bool) -> Self {
        FramesToFlv {
            video,
            audio,
            avc: None,
            aac: None,
            aac_header_sent: false,
            epoch: None,
            video_base: None,
            audio_base: None,
            metadata: Metadata { video, audio, audio_rate: 48_000, stereo: true, ..Default::default() },
            out: Default::default(),
        }
    }

    /// True once the first keyframe (or, audio only, the first audio frame) went out.
    pub fn started(&self) -> bool {
        self.epoch.is_some()
    }

    /// One frame of the stream. A VP8 frame is [`FlvError::Unsupported`] (FLV carries no VP8);
    /// an Opus packet that does not transcode is [`FlvError::Audio`], for that packet alone.
    pub fn push(&mut self, f: &Frame) -> Result<(), FlvError> {
        match f.codec {
            Codec::H264 => {
                self.video_frame(f);
                Ok(())
            }
            Codec::Opus => self.audio_frame(f),
            Codec::Vp8 => Err(FlvError::Unsupported("VP8 video (RTMP carries H.264 only)".into())),
        }
    }

    pub fn pop(&mut self) -> Option<FlvOut> {
        self.out.pop_front()
    }

    fn ms_since_epoch(&self, at: Instant) -> u64 {
        self.epoch.map(|e| at.saturating_duration_since(e).as_millis() as u64).unwrap_or(0)
    }

    fn video_frame(&mut self, f: &Frame) {
        if f.keyframe {
            let mut sps = None;
            let mut pps = None;
            for nal in h264::annexb_nals(&f.data) {
                match h264::nal_type(nal) {
                    Some(h264::NAL_SPS) if sps.is_none() => sps = Some(nal),
                    Some(h264::NAL_PPS) if pps.is_none() => pps = Some(nal),
                    _ => {}
                }
            }
            if let (Some(sps), Some(pps)) = (sps, pps) {
                let changed = self.avc.as_ref().is_none_or(|(s, p)| s != sps || p != pps);
                if changed {
                    if let Some(header) = avc_sequence_header(sps, pps) {
                        if self.epoch.is_none() {
                            self.epoch = Some(f.captured);
                        }
                        let ts = self.video_ts(f);
                        let (w, h) = h264::sps_dimensions(sps).unwrap_or((0, 0));
                        if (w, h) != (self.metadata.width, self.metadata.height) {
                            self.metadata.width = w;
                            self.metadata.height = h;
                            self.out.push_back(FlvOut::Metadata(self.metadata.clone()));
                        }
                        self.out.push_back(FlvOut::Video { ts_ms: ts, body: header, keyframe: true });
                        self.avc = Some((sps.to_vec(), pps.to_vec()));
                    }
                }
            }
        }
        if self.avc.is_none() {
            return; // nothing decodable before the first keyframe with its parameter sets
        }
        let ts = self.video_ts(f);
        self.out.push_back(FlvOut::Video {
            ts_ms: ts,
            body: avc_nalus(&f.data, f.keyframe),
            keyframe: f.keyframe,
        });
    }

    fn video_ts(&mut self, f: &Frame) -> u32 {
        let offset = self.ms_since_epoch(f.captured);
        let (rtp0, off0) = *self.video_base.get_or_insert((f.rtp_time, offset));
        (off0 + f.rtp_time.saturating_sub(rtp0) / 90) as u32
    }

    fn audio_frame(&mut self, f: &Frame) -> Result<(), FlvError> {
        if !self.audio {
            return Ok(());
        }
        if self.epoch.is_none() {
            if self.video {
                return Ok(()); // audio starts with the video's first keyframe
            }
            self.epoch = Some(f.captured);
            self.out.push_back(FlvOut::Metadata(self.metadata.clone()));
        }
        if self.aac.is_none() {
            let tc = crate::transcode::OpusToAac::new().map_err(|e| FlvError::Audio(e.to_string()))?;
            self.aac = Some(tc);
        }
        let offset = self.ms_since_epoch(f.captured);
        let (rtp0, off0) = *self.audio_base.get_or_insert((f.rtp_time, offset));
        let Some(tc) = self.aac.as_mut() else { return Ok(()) };
        if !self.aac_header_sent {
            self.aac_header_sent = true;
            let body = aac_sequence_header(tc.audio_specific_config());
            self.out.push_back(FlvOut::Audio { ts_ms: off0 as u32, body });
        }
        let res = tc.push(&f.data, f.rtp_time).map_err(|e| FlvError::Audio(e.to_string()));
        while let Some(au) = tc.pop() {
            let rel = au.ts48k - rtp0 as i64;
            let ts = (off0 as i64 + rel / 48).max(0) as u32;
            self.out.push_back(FlvOut::Audio { ts_ms: ts, body: aac_frame(&au.data) });
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::tests::avc_record as record;

    #[test]
    fn nalus_become_annexb_with_parameter_sets_and_pts() {
        let mut f = FlvToFrames::default();
        let now = Instant::now();
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend(record());
        assert!(f.video(0, &seq, now).unwrap().is_none());
        assert_eq!(f.tracks().width, 640);
        // Keyframe with composition time 40 ms: IDR slice of 3 bytes.
        let key = [0x17, 1, 0, 0, 40, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        let fr = f.video(1000, &key, now).unwrap().unwrap();
        assert!(fr.keyframe);
        assert_eq!(fr.rtp_time, 1040 * 90);
        let types: Vec<u8> = h264::annexb_nal_types(&fr.data).collect();
        assert_eq!(types, vec![7, 8, 5]);
        // Inter frame, negative composition offset (-1 ms, 0xffffff).
        let inter = [0x27, 1, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0x41, 0x9a];
        let fr = f.video(1033, &inter, now).unwrap().unwrap();
        assert!(!fr.keyframe);
        assert_eq!(fr.rtp_time, 1032 * 90);
        assert_eq!(&fr.data[..], &[0, 0, 0, 1, 0x41, 0x9a]);
    }

    #[test]
    fn bad_video_is_an_error_not_a_panic() {
        let mut f = FlvToFrames::default();
        let now = Instant::now();
        assert!(f.video(0, &[], now).is_err());
        assert!(f.video(0, &[0x17], now).is_err());
        assert!(matches!(f.video(0, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65], now), Err(FlvError::NoConfig(_))));
        assert!(matches!(f.video(0, &[0x12, 0], now), Err(FlvError::Unsupported(_))));
        assert!(matches!(f.video(0, &[0x17, 9, 0, 0, 0], now), Err(FlvError::UnknownPacketType(9))));
        // Enhanced RTMP HEVC is reported, not played.
        assert!(matches!(f.video(0, b"\x90hvc1", now), Err(FlvError::Unsupported(_))));
    }

    #[test]
    fn enhanced_rtmp_avc() {
        let mut f = FlvToFrames::default();
        let now = Instant::now();
        let mut seq = vec![0x90];
        seq.extend_from_slice(b"avc1");
        seq.extend(record());
        assert!(f.video(0, &seq, now).unwrap().is_none());
        let mut key = vec![0x93];
        key.extend_from_slice(b"avc1");
        key.extend_from_slice(&[0, 0, 0, 2, 0x65, 0x88]);
        assert!(f.video(40, &key, now).unwrap().unwrap().keyframe);
    }

    #[test]
    fn aac_becomes_opus() {
        let mut f = FlvToFrames::default();
        let now = Instant::now();
        let mut out = Vec::new();
        // AAC-LC, 48 kHz, stereo.
        f.audio(0, &[0xaf, 0, 0x11, 0x90], now, &mut out).unwrap();
        assert!(f.tracks().audio);
        // Raw AAC before a config, garbage AAC: errors, never panics.
        assert!(FlvToFrames::default().audio(0, &[0xaf, 1, 1, 2], now, &mut out).is_err());
        let _ = f.audio(0, &[0xaf, 1, 0xde, 0xad, 0xbe, 0xef], now, &mut out);
        assert!(matches!(f.audio(0, &[0x2f, 1], now, &mut out), Err(FlvError::Unsupported(_))));
        assert!(f.audio(0, &[0xaf], now, &mut out).is_err());
    }

    /// Random tag bodies (a poor man's fuzzer, deterministic): errors, never panics.
    #[test]
    fn random_tags_never_panic() {
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut f = FlvToFrames::default();
        let now = Instant::now();
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend(record());
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            let len = (next() % 64) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Keep most tags on the interesting paths: AVC / AAC headers with a random rest.
            match i % 4 {
                0 if len > 1 => body[0] = 0x17,
                1 if len > 1 => body[0] = 0xaf,
                _ => {}
            }
            if i % 1000 == 0 {
                let _ = f.video(i, &seq, now);
                let _ = f.audio(i, &[0xaf, 0, 0x12, 0x10], now, &mut out);
            }
            let _ = f.video(i, &body, now);
            let _ = f.audio(i, &body, now, &mut out);
            let _ = h264::sps_dimensions(&body);
            out.clear();
        }
    }

    #[test]
    fn timestamps_unwrap() {
        let mut t = Timeline::default();
        assert_eq!(t.unwrap(u32::MAX - 10), (u32::MAX - 10) as u64);
        assert_eq!(t.unwrap(5), (1u64 << 32) + 5);
        // A small step back (B-frame order, jitter) is not a wrap.
        assert_eq!(t.unwrap(3), (1u64 << 32) + 3);
    }

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    /// What the muxer writes, the demuxer above reads back: same parameter sets, same access
    /// units, same AAC configuration.
    #[test]
    fn muxed_tags_demux_back() {
        use crate::h264::tests::{PPS, SPS_640X360};
        let t0 = Instant::now();
        let key = au(&[SPS_640X360, PPS, &[0x65, 0x88, 0x84, 0x21]]);
        let inter = au(&[&[0x09, 0xf0], &[0x41, 0x9a, 0x02]]);
        let mut mux = FramesToFlv::new(true, true);
        let frame = |codec, keyframe, rtp_time, ms: u64, data: &[u8]| Frame {
            codec,
            keyframe,
            rtp_time,
            captured: t0 + std::time::Duration::from_millis(ms),
            data: Arc::from(data),
        };
        // Audio and an inter frame before the first keyframe are dropped.
        let mut enc = crate::opus::Encoder::new(48_000, crate::opus::Channels::Stereo).unwrap();
        let mut pkt = vec![0u8; 1500];
        let n = enc.encode_float(&[0.0; 1920], &mut pkt).unwrap();
        mux.push(&frame(Codec::Opus, false, 5_000, 0, &pkt[..n])).unwrap();
        mux.push(&frame(Codec::H264, false, 900_000, 0, &inter)).unwrap();
        assert!(mux.pop().is_none() && !mux.started());
        mux.push(&frame(Codec::H264, true, 900_000 + 3000, 10, &key)).unwrap();
        mux.push(&frame(Codec::H264, false, 900_000 + 6000, 43, &inter)).unwrap();
        for i in 0..60u64 {
            mux.push(&frame(Codec::Opus, false, 10_000 + i * 960, 30 + i * 20, &pkt[..n])).unwrap();
        }
        assert!(mux.push(&frame(Codec::Vp8, true, 0, 0, &[0x10, 2, 0, 0x9d, 1, 0x2a])).is_err());

        let mut demux = FlvToFrames::default();
        let mut got_video = Vec::new();
        let mut audio_ts = Vec::new();
        let mut asc = None;
        let mut aac_frames = 0;
        while let Some(o) = mux.pop() {
            match o {
                FlvOut::Metadata(m) => {
                    assert_eq!((m.width, m.height), (640, 360));
                    let amf = m.to_amf0();
                    assert_eq!(&amf[..13], b"\x02\x00\x0aonMetaData");
                    assert_eq!(&amf[amf.len() - 3..], &[0, 0, 9]);
                }
                FlvOut::Video { ts_ms, body, .. } => {
                    if let Some(fr) = demux.video(ts_ms, &body, t0).unwrap() {
                        got_video.push((ts_ms, fr));
                    }
                }
                FlvOut::Audio { ts_ms, body } => match parse_audio(&body).unwrap() {
                    AudioTag::AacConfig(c) => asc = Some(c.to_vec()),
                    AudioTag::AacFrame(f) => {
                        assert!(!f.is_empty());
                        aac_frames += 1;
                        audio_ts.push(ts_ms);
                    }
                    AudioTag::Unsupported(f) => panic!("format {f}"),
                },
            }
        }
        assert_eq!(demux.tracks().width, 640);
        assert_eq!(got_video.len(), 2);
        assert_eq!(got_video[0].0, 0);
        assert_eq!(got_video[1].0, 33); // 3000 ticks of 90 kHz later
        assert!(got_video[0].1.keyframe);
        assert_eq!(&got_video[0].1.data[..], &key[..]);
        // The delimiter is dropped; the rest comes back as it was.
        assert_eq!(&got_video[1].1.data[..], &au(&[&[0x41, 0x9a, 0x02]])[..]);
        assert_eq!(asc.as_deref(), Some(&[0x11, 0x90][..]));
        // 60 * 960 samples: 56 AUs minus the encoder's look-ahead; audio starts 20 ms after
        // the keyframe (arrival 30 vs 10 ms), AUs 1024/48 ms apart.
        assert!(aac_frames >= 50, "{aac_frames}");
        assert!(audio_ts.windows(2).all(|w| w[1] >= w[0]));
        assert!(audio_ts.last().unwrap().abs_diff(20 + 55 * 1024 / 48) < 60, "{audio_ts:?}");
        // The demuxer's transcoder takes the muxer's AAC configuration.
        let mut out = Vec::new();
        demux.audio(0, &aac_sequence_header(&[0x11, 0x90]), t0, &mut out).unwrap();
        assert!(demux.tracks().audio);
    }

    #[test]
    fn file_tags_and_records() {
        assert_eq!(&file_header(true, true)[..5], b"FLV\x01\x05");
        let t = file_tag(TagType::Video, 0x0123_4567, &[1, 2, 3]);
        assert_eq!(t.len(), 11 + 3 + 4);
        assert_eq!(&t[..11], &[9, 0, 0, 3, 0x23, 0x45, 0x67, 0x01, 0, 0, 0]);
        assert_eq!(&t[14..], &14u32.to_be_bytes());
        use crate::h264::tests::{PPS, SPS_640X360};
        let rec = avc_decoder_config(SPS_640X360, PPS).unwrap();
        let parsed = crate::h264::AvcConfig::parse(&rec).unwrap();
        assert_eq!(parsed.sps, vec![SPS_640X360.to_vec()]);
        assert_eq!(parsed.pps, vec![PPS.to_vec()]);
        assert_eq!(parsed.length_size, 4);
        assert!(avc_decoder_config(&[0x67], PPS).is_none());
    }

    #[test]
    fn flow_control_skips_video_to_the_next_keyframe() {
        use crate::media::FrameKind::{Audio, Video};
        let mut f = FlowControl::default();
        assert!(f.admit(Video, false, 100, 100));
        assert!(!f.admit(Video, false, 20, 100), "three-quarters full: video stops");
        assert!(f.admit(Audio, false, 20, 100), "audio goes on");
        assert!(!f.admit(Video, false, 90, 100), "not before a keyframe");
        assert!(!f.admit(Video, true, 40, 100), "a keyframe, but the queue is still over half full");
        assert!(f.admit(Video, true, 60, 100));
        assert!(f.admit(Video, false, 60, 100));
        assert!(!f.admit(Audio, false, 3, 100));
        assert_eq!(f.skipped, 4);
    }
}
