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
}
