//! H.264 that WebRTC viewers cannot play smoothly, found and re-encoded: B-frames.
//!
//! WebRTC receivers do not reorder frames. A stream whose frames arrive in decode order but play
//! in another order (B-frames: High-profile MP4 files from phones and x264, OBS's defaults over
//! RTMP) decodes in Chromium at a picture every second or two. Such video is decoded with
//! openh264 (which outputs pictures in presentation order) and encoded again as constrained
//! baseline (no B-frames) at the source's size and frame rate.
//!
//! - [`ReorderDetector`] looks at a source's video frames in decode order and says, once, when
//!   it finds B-slices or presentation times that go back.
//! - [`VideoTranscoder`] is the sans-IO re-encoder: frames in (decode order), frames out
//!   (presentation order, every one a baseline access unit with its parameter sets before each
//!   IDR). It does no IO and reads no clock; it is CPU heavy (a 720p30 stream costs a good part
//!   of a core), so the caller runs it on a thread of its own, never on an actor's arbiter.
//! - [`Rotation`] turns the pictures of a portrait phone file upright before encoding.
//!
//! Output timestamps are the input's presentation times: each decoded picture takes the
//! smallest presentation time among the frames fed and not yet output (the decoder outputs in
//! presentation order, so the two sequences match).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::{YUVBuffer, YUVSource};
use openh264::{OpenH264API, Timestamp};

use crate::h264::{self, SliceType};
use crate::media::{Codec, Frame};

/// What the stream object says of a source whose video is re-encoded for this reason.
pub const NOTE_B_FRAMES: &str = "B-frames: re-encoded to constrained baseline";
/// ... and of a file re-encoded to turn its portrait pictures upright.
pub const NOTE_ROTATED: &str = "rotated upright: re-encoded to constrained baseline";
/// Bits per pixel per frame of the re-encoded stream (then clamped to [`MIN_BITRATE`],
/// [`MAX_BITRATE`]): about 2.8 Mbit/s at 720p30.
pub const BITS_PER_PIXEL: f64 = 0.1;
pub const MIN_BITRATE: u32 = 200_000;
pub const MAX_BITRATE: u32 = 4_000_000;
/// Seconds between keyframes of the re-encoded stream (and at every keyframe request).
pub const KEYFRAME_INTERVAL_S: f32 = 2.0;
/// A requested keyframe comes at least this long (90 kHz: 0.5 s) after the last keyframe out;
/// a request within it is held until then, never dropped (a viewer that lost a packet just
/// after a keyframe would otherwise wait for the next periodic one). A keyframe is the biggest
/// frame there is: viewers joining or losing packets one after another make at most two a second.
pub const KEYFRAME_REQUEST_GAP: u64 = 45_000;
/// Frame rate assumed when neither the source nor its timestamps say.
pub const DEFAULT_FPS: f32 = 30.0;
/// Presentation times waiting for their picture; past this, the oldest is given up (a frame the
/// decoder dropped would otherwise shift every later timestamp).
const MAX_PENDING: usize = 32;

/// Why a source's video is re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reorder {
    /// A slice header says B.
    BSlices,
    /// A frame plays before one sent ahead of it (composition offsets, FLV composition time).
    PresentationOrder,
}

impl Reorder {
    pub fn describe(self) -> &'static str {
        match self {
            Reorder::BSlices => "B-slices in the H.264 stream",
            Reorder::PresentationOrder => "frames presented in another order than sent (B-frames)",
        }
    }
}

/// Finds, in a source's video frames in decode order, what WebRTC viewers cannot play smoothly.
#[derive(Debug, Default, Clone)]
pub struct ReorderDetector {
    max_pts: Option<u64>,
    found: Option<Reorder>,
    frames: u64,
    /// The stream's last SPS parsed and allows B-slices (not baseline): only then is a slice
    /// header that reads B trusted. In a baseline stream, or one whose SPS does not parse (a
    /// damaged or foreign payload, which no decoder could re-encode anyway), it is not one.
    b_possible: bool,
}

impl ReorderDetector {
    /// Look at the next video frame (decode order). Returns the finding the first time it is
    /// made, `None` before and after. Non-H.264 frames are ignored.
    pub fn observe(&mut self, frame: &Frame) -> Option<Reorder> {
        if frame.codec != Codec::H264 || self.found.is_some() {
            return None;
        }
        self.frames += 1;
        let backwards = self.max_pts.is_some_and(|m| frame.rtp_time < m);
        self.max_pts = Some(self.max_pts.map_or(frame.rtp_time, |m| m.max(frame.rtp_time)));
        if let Some(sps) = h264::annexb_nals(&frame.data).find(|n| h264::nal_type(n) == Some(h264::NAL_SPS)) {
            self.b_possible =
                h264::sps_dimensions(sps).is_some() && h264::sps_profile_idc(sps).is_some_and(|p| p != 66);
        }
        let b_slice = self.b_possible
            && h264::annexb_nals(&frame.data).any(|n| h264::slice_type(n) == Some(SliceType::B));
        self.found = match (b_slice, backwards) {
            (true, _) => Some(Reorder::BSlices),
            (false, true) => Some(Reorder::PresentationOrder),
            _ => None,
        };
        self.found
    }

    pub fn found(&self) -> Option<Reorder> {
        self.found
    }

    /// Video frames looked at so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// Presentation times (any clock) in decode order go back somewhere among the first `limit`:
/// the file has B-frames (VOD looks at its sample index before playing).
pub fn presentation_reorders(pts_in_decode_order: impl IntoIterator<Item = u64>, limit: usize) -> bool {
    let mut max: Option<u64> = None;
    for p in pts_in_decode_order.into_iter().take(limit) {
        if max.is_some_and(|m| p < m) {
            return true;
        }
        max = Some(max.map_or(p, |m| m.max(p)));
    }
    false
}

/// The bitrate of the re-encoded stream: [`BITS_PER_PIXEL`] per pixel per frame, clamped.
pub fn bitrate_for(width: u32, height: u32, fps: f32) -> u32 {
    let bps = width as f64 * height as f64 * fps.clamp(1.0, 120.0) as f64 * BITS_PER_PIXEL;
    (bps as u32).clamp(MIN_BITRATE, MAX_BITRATE)
}

/// Clockwise rotation to apply to decoded pictures (a phone's portrait file stores landscape
/// pictures and a 90° matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    #[default]
    None,
    Cw90,
    Cw180,
    Cw270,
}

impl Rotation {
    /// From degrees clockwise (any multiple of 90, negative too); other angles give `None`.
    pub fn from_degrees(deg: i32) -> Option<Rotation> {
        match deg.rem_euclid(360) {
            0 => Some(Rotation::None),
            90 => Some(Rotation::Cw90),
            180 => Some(Rotation::Cw180),
            270 => Some(Rotation::Cw270),
            _ => None,
        }
    }

    pub fn degrees(self) -> u32 {
        match self {
            Rotation::None => 0,
            Rotation::Cw90 => 90,
            Rotation::Cw180 => 180,
            Rotation::Cw270 => 270,
        }
    }

    /// Width and height swap at 90° and 270°.
    pub fn swaps(self) -> bool {
        matches!(self, Rotation::Cw90 | Rotation::Cw270)
    }
}

/// How to re-encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TranscodeSettings {
    /// The source's frame rate; `None`: estimated from the first timestamps.
    pub fps: Option<f32>,
    /// Target bitrate; `None`: [`bitrate_for`] the picture size.
    pub bitrate: Option<u32>,
    /// Seconds between keyframes.
    pub keyframe_interval_s: f32,
    pub rotation: Rotation,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        TranscodeSettings {
            fps: None,
            bitrate: None,
            keyframe_interval_s: KEYFRAME_INTERVAL_S,
            rotation: Rotation::None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VideoTranscodeError {
    #[error("H.264 decoder: {0}")]
    Decoder(String),
    #[error("H.264 encoder: {0}")]
    Encoder(String),
}

/// Counters of one transcoder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TranscodeStats {
    pub frames_in: u64,
    pub pictures: u64,
    pub frames_out: u64,
    pub keyframes_out: u64,
    pub decode_errors: u64,
    /// Pictures decoded but not encoded ([`VideoTranscoder::skip_through`], timestamps that
    /// would go back).
    pub skipped: u64,
}

/// Decodes H.264 (any profile openh264 decodes: baseline, main, high, with B-frames) and encodes
/// it again as constrained baseline. See the module docs.
pub struct VideoTranscoder {
    decoder: Decoder,
    /// Presentation times (90 kHz) and capture instants of frames fed and not yet output.
    pending: BinaryHeap<Reverse<(u64, Instant)>>,
    enc: EncodeSide,
}

/// Everything but the decoder, so a decoded picture (which borrows the decoder) can be encoded.
struct EncodeSide {
    settings: TranscodeSettings,
    encoder: Option<(Encoder, (usize, usize))>,
    /// Distinct presentation times seen, for a frame rate estimate (first few only).
    seen_pts: Vec<u64>,
    force_keyframe: bool,
    skip_through: Option<u64>,
    /// Encode every other picture only (the caller is behind).
    thin: bool,
    thinned: bool,
    last_out: Option<u64>,
    /// Presentation time of the last keyframe out.
    last_key: Option<u64>,
    stats: TranscodeStats,
    /// Reused buffers: the encoded access unit, the rotated picture.
    bits: Vec<u8>,
    rotated: Vec<u8>,
}

impl VideoTranscoder {
    pub fn new(settings: TranscodeSettings) -> Result<Self, VideoTranscodeError> {
        // No flushing after each decode: openh264 would hand out a held picture before the
        // B-frames that play ahead of it, out of presentation order.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| VideoTranscodeError::Decoder(e.to_string()))?;
        Ok(VideoTranscoder {
            decoder,
            pending: BinaryHeap::new(),
            enc: EncodeSide {
                settings,
                encoder: None,
                seen_pts: Vec::new(),
                force_keyframe: false,
                skip_through: None,
                thin: false,
                thinned: false,
                last_out: None,
                last_key: None,
                stats: TranscodeStats::default(),
                bits: Vec::new(),
                rotated: Vec::new(),
            },
        })
    }

    /// The next picture encoded is an IDR (a viewer joined or lost a frame), or, within
    /// [`KEYFRAME_REQUEST_GAP`] of the last keyframe out, the first picture after that gap.
    pub fn request_keyframe(&mut self) {
        self.enc.force_keyframe = true;
    }

    /// Pictures presented at or before `pts` (90 kHz) are decoded but not encoded, and the first
    /// picture encoded after them is an IDR: for a source that forwarded its first frames as
    /// they were before it found B-frames, then replays its GOP through the transcoder.
    pub fn skip_through(&mut self, pts: u64) {
        self.enc.skip_through = Some(pts);
        self.enc.force_keyframe = true;
    }

    /// While set, every other picture is decoded but not encoded: half the encoding work, half
    /// the frame rate, and no picture breaks (for a caller that falls behind real time).
    pub fn set_thin(&mut self, thin: bool) {
        self.enc.thin = thin;
    }

    pub fn stats(&self) -> TranscodeStats {
        self.enc.stats
    }

    /// Picture size of the output (after rotation), once the first picture is decoded.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        self.enc.encoder.as_ref().map(|(_, (w, h))| (*w as u32, *h as u32))
    }

    /// Feed one H.264 access unit (Annex-B, decode order); the frames it completes are appended
    /// to `out`. A frame that does not decode is an error for that frame alone: feeding goes on.
    pub fn push(&mut self, frame: &Frame, out: &mut Vec<Frame>) -> Result<(), VideoTranscodeError> {
        if frame.codec != Codec::H264 {
            return Ok(());
        }
        self.enc.stats.frames_in += 1;
        if self.enc.seen_pts.len() < 64 {
            self.enc.seen_pts.push(frame.rtp_time);
        }
        self.pending.push(Reverse((frame.rtp_time, frame.captured)));
        while self.pending.len() > MAX_PENDING {
            self.pending.pop();
        }
        match self.decoder.decode(&frame.data) {
            Ok(Some(yuv)) => {
                let Some(Reverse((pts, captured))) = self.pending.pop() else { return Ok(()) };
                self.enc.picture(&yuv, pts, captured, out)
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.enc.stats.decode_errors += 1;
                Err(VideoTranscodeError::Decoder(e.to_string()))
            }
        }
    }

    /// The source ended: output the pictures the decoder still holds.
    pub fn flush(&mut self, out: &mut Vec<Frame>) -> Result<(), VideoTranscodeError> {
        let pictures =
            self.decoder.flush_remaining().map_err(|e| VideoTranscodeError::Decoder(e.to_string()))?;
        for yuv in pictures {
            let Some(Reverse((pts, captured))) = self.pending.pop() else { break };
            self.enc.picture(&yuv, pts, captured, out)?;
        }
        Ok(())
    }
}

impl EncodeSide {
    fn fps(&self) -> f32 {
        if let Some(f) = self.settings.fps.filter(|f| f.is_finite() && *f > 0.0) {
            return f.clamp(1.0, 120.0);
        }
        // The smallest positive step between sorted presentation times is one frame (given
        // enough of them: the first few may skip the B-frames between).
        if self.seen_pts.len() < 8 {
            return DEFAULT_FPS;
        }
        let mut p = self.seen_pts.clone();
        p.sort_unstable();
        p.dedup();
        let step = p.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).min();
        match step {
            Some(d) => (90_000.0 / d as f32).clamp(1.0, 120.0),
            None => DEFAULT_FPS,
        }
    }

    fn encoder_for(&mut self, w: usize, h: usize) -> Result<&mut Encoder, VideoTranscodeError> {
        if self.encoder.as_ref().is_none_or(|(_, size)| *size != (w, h)) {
            let fps = self.fps();
            let bitrate = self.settings.bitrate.unwrap_or_else(|| bitrate_for(w as u32, h as u32, fps));
            let config = EncoderConfig::new()
                .profile(Profile::Baseline)
                .usage_type(UsageType::CameraVideoRealTime)
                .rate_control_mode(RateControlMode::Bitrate)
                .bitrate(BitRate::from_bps(bitrate))
                .max_frame_rate(FrameRate::from_hz(fps))
                // Every frame in gives a frame out: a skipped frame would be a gap in the timeline.
                .skip_frames(false)
                // Keyframes are forced by presentation time (`picture`), not counted in frames.
                .intra_frame_period(IntraFramePeriod::from_num_frames(0))
                .sps_pps_strategy(SpsPpsStrategy::ConstantId)
                .complexity(Complexity::Low)
                .scene_change_detect(false)
                .num_threads(1);
            let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| VideoTranscodeError::Encoder(e.to_string()))?;
            self.encoder = Some((encoder, (w, h)));
            self.force_keyframe = false; // a new encoder starts with an IDR anyway
        }
        match self.encoder.as_mut() {
            Some((e, _)) => Ok(e),
            None => Err(VideoTranscodeError::Encoder("no encoder".into())),
        }
    }

    /// Encode one decoded picture presented at `pts`.
    fn picture(
        &mut self,
        yuv: &impl YUVSource,
        pts: u64,
        captured: Instant,
        out: &mut Vec<Frame>,
    ) -> Result<(), VideoTranscodeError> {
        self.stats.pictures += 1;
        if self.skip_through.is_some_and(|s| pts <= s) || self.last_out.is_some_and(|l| pts <= l) {
            self.stats.skipped += 1;
            return Ok(());
        }
        self.skip_through = None;
        let forced = self.force_keyframe
            && self.last_key.is_none_or(|k| pts >= k.saturating_add(KEYFRAME_REQUEST_GAP));
        if self.thin && !forced {
            self.thinned = !self.thinned;
            if self.thinned {
                self.stats.skipped += 1;
                return Ok(());
            }
        }
        let (w, h) = yuv.dimensions();
        if w < 2 || h < 2 {
            return Err(VideoTranscodeError::Decoder(format!("picture of {w}x{h}")));
        }
        // openh264 encodes even sizes: an odd column or row is cropped.
        let (w, h) = (w & !1, h & !1);
        let rotation = self.settings.rotation;
        let rotated = if rotation != Rotation::None {
            let mut buf = std::mem::take(&mut self.rotated);
            rotate_i420(yuv, w, h, rotation, &mut buf);
            Some(buf)
        } else {
            None
        };
        let (ow, oh) = if rotation.swaps() { (h, w) } else { (w, h) };
        let interval = (self.settings.keyframe_interval_s.max(0.1) * 90_000.0) as u64;
        let due = self.last_key.is_none_or(|k| pts >= k.saturating_add(interval));
        let force = forced || due;
        if force {
            self.force_keyframe = false;
        }
        let mut bits = std::mem::take(&mut self.bits);
        bits.clear();
        let encoder = self.encoder_for(ow, oh)?;
        if force {
            encoder.force_intra_frame();
        }
        let ts = Timestamp::from_millis(pts / 90);
        let res = match &rotated {
            Some(buf) => {
                let src = YUVBuffer::from_vec(buf.clone(), ow, oh);
                encoder.encode_at(&src, ts).map(|b| (b.frame_type(), b.write_vec(&mut bits)))
            }
            None if (w, h) == yuv.dimensions() => {
                encoder.encode_at(yuv, ts).map(|b| (b.frame_type(), b.write_vec(&mut bits)))
            }
            None => {
                let cropped = Cropped { inner: yuv, w, h };
                encoder.encode_at(&cropped, ts).map(|b| (b.frame_type(), b.write_vec(&mut bits)))
            }
        };
        if let Some(buf) = rotated {
            self.rotated = buf;
        }
        let frame_type = match res {
            Ok((t, ())) => t,
            Err(e) => {
                self.bits = bits;
                return Err(VideoTranscodeError::Encoder(e.to_string()));
            }
        };
        if bits.is_empty() || matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            self.bits = bits;
            return Ok(());
        }
        let keyframe = crate::media::is_keyframe(&bits, true);
        self.stats.frames_out += 1;
        self.stats.keyframes_out += keyframe as u64;
        if keyframe {
            self.last_key = Some(pts);
        }
        self.last_out = Some(pts);
        out.push(Frame { codec: Codec::H264, keyframe, rtp_time: pts, captured, data: Arc::from(&bits[..]) });
        self.bits = bits;
        Ok(())
    }
}

/// A picture seen through a smaller (even) window at its top left.
struct Cropped<'a, T: YUVSource> {
    inner: &'a T,
    w: usize,
    h: usize,
}

impl<T: YUVSource> YUVSource for Cropped<'_, T> {
    fn dimensions(&self) -> (usize, usize) {
        (self.w, self.h)
    }
    fn strides(&self) -> (usize, usize, usize) {
        self.inner.strides()
    }
    fn y(&self) -> &[u8] {
        self.inner.y()
    }
    fn u(&self) -> &[u8] {
        self.inner.u()
    }
    fn v(&self) -> &[u8] {
        self.inner.v()
    }
}

/// Rotate the top-left `w` x `h` (even) of an I420 picture clockwise into `out` (packed I420 of
/// the rotated size). Samples past the planes' ends read as black.
pub fn rotate_i420(src: &impl YUVSource, w: usize, h: usize, rotation: Rotation, out: &mut Vec<u8>) {
    let (ys, us, vs) = src.strides();
    let (cw, ch) = (w / 2, h / 2);
    out.clear();
    out.resize(w * h + 2 * cw * ch, 128);
    let (y_out, uv_out) = out.split_at_mut(w * h);
    let (u_out, v_out) = uv_out.split_at_mut(cw * ch);
    rotate_plane(src.y(), ys, w, h, rotation, y_out, 16);
    rotate_plane(src.u(), us, cw, ch, rotation, u_out, 128);
    rotate_plane(src.v(), vs, cw, ch, rotation, v_out, 128);
}

fn rotate_plane(src: &[u8], stride: usize, w: usize, h: usize, rotation: Rotation, out: &mut [u8], fill: u8) {
    // Output size: (ow, oh); each output (x, y) takes the source sample it maps from.
    let (ow, oh) = if rotation.swaps() { (h, w) } else { (w, h) };
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = match rotation {
                Rotation::None => (x, y),
                Rotation::Cw90 => (y, h - 1 - x),
                Rotation::Cw180 => (w - 1 - x, h - 1 - y),
                Rotation::Cw270 => (w - 1 - y, x),
            };
            if let Some(o) = out.get_mut(y * ow + x) {
                *o = src.get(sy * stride + sx).copied().unwrap_or(fill);
            }
        }
    }
}

/// PSNR of the luma of two pictures of the same size, in dB (`f64::INFINITY` when identical).
/// For the benchmark and tests: quality of the re-encoded stream against the source's own decode.
pub fn psnr_y(a: &impl YUVSource, b: &impl YUVSource) -> f64 {
    let (w, h) = a.dimensions();
    let (w2, h2) = b.dimensions();
    let (w, h) = (w.min(w2), h.min(h2));
    let (sa, sb) = (a.strides().0, b.strides().0);
    let (ya, yb) = (a.y(), b.y());
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in 0..h {
        for x in 0..w {
            let (Some(p), Some(q)) = (ya.get(y * sa + x), yb.get(y * sb + x)) else { continue };
            let d = *p as i64 - *q as i64;
            sum += (d * d) as u64;
            n += 1;
        }
    }
    if sum == 0 || n == 0 {
        return f64::INFINITY;
    }
    let mse = sum as f64 / n as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file made by ffmpeg (installed by tests/run-all.sh): `testsrc2` at `size`, 30 fps.
    fn ffmpeg(name: &str, size: &str, seconds: &str, args: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-vt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(name);
        let ok = std::process::Command::new("ffmpeg")
            .args(["-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-t", seconds])
            .args(args)
            .arg(&out)
            .status()
            .expect("ffmpeg")
            .success();
        assert!(ok, "ffmpeg {args:?}");
        out
    }

    const HIGH_BF3: &[&str] =
        &["-c:v", "libx264", "-profile:v", "high", "-bf", "3", "-g", "60", "-pix_fmt", "yuv420p", "-an"];

    /// The video frames of an MP4 file in decode order, as the VOD source makes them.
    fn frames_of(path: &std::path::Path) -> Vec<Frame> {
        let (idx, mut f) = crate::mp4_reader::open(path).unwrap();
        let Some(crate::mp4_reader::VideoSetup::H264 { sps, pps, length_size }) = &idx.video else {
            panic!("no H.264")
        };
        let t0 = Instant::now();
        idx.samples
            .iter()
            .filter(|s| s.track == crate::mp4_reader::TrackKind::Video)
            .map(|s| {
                let data = crate::mp4_reader::read_sample(&mut f, s).unwrap();
                let au = h264::avcc_to_annexb(&data, *length_size, s.sync, sps, pps);
                Frame {
                    codec: Codec::H264,
                    keyframe: s.sync,
                    rtp_time: s.pts_us * 9 / 100,
                    captured: t0,
                    data: au.into(),
                }
            })
            .collect()
    }

    /// Raw I420 pictures of a file, decoded by ffmpeg, in presentation order.
    fn ffmpeg_pictures(path: &std::path::Path, w: usize, h: usize) -> Vec<Vec<u8>> {
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
            .output()
            .unwrap();
        out.stdout.chunks_exact(w * h * 3 / 2).map(|c| c.to_vec()).collect()
    }

    fn transcode_all(frames: &[Frame], settings: TranscodeSettings) -> (Vec<Frame>, TranscodeStats) {
        let mut t = VideoTranscoder::new(settings).unwrap();
        let mut out = Vec::new();
        for f in frames {
            t.push(f, &mut out).unwrap();
        }
        t.flush(&mut out).unwrap();
        (out, t.stats())
    }

    #[test]
    fn detector_finds_b_frames_and_passes_baseline() {
        let bf = frames_of(&ffmpeg("bf.mp4", "320x240", "1", HIGH_BF3));
        let mut d = ReorderDetector::default();
        let found: Vec<_> = bf.iter().filter_map(|f| d.observe(f)).collect();
        assert_eq!(found, vec![Reorder::BSlices], "said once");
        assert!(d.frames() <= 4, "found at the first frames, after {}", d.frames());
        assert!(presentation_reorders(bf.iter().map(|f| f.rtp_time), 100));

        let args = ["-c:v", "libx264", "-profile:v", "high", "-bf", "0", "-pix_fmt", "yuv420p", "-an"];
        let plain = frames_of(&ffmpeg("nobf.mp4", "320x240", "1", &args));
        let mut d = ReorderDetector::default();
        assert!(plain.iter().all(|f| d.observe(f).is_none()));
        assert!(!presentation_reorders(plain.iter().map(|f| f.rtp_time), 100));
    }

    /// openh264 decodes x264 High profile with B-frames in decode order and outputs the pictures
    /// in presentation order: each one matches ffmpeg's own decode of the same file.
    #[test]
    fn openh264_decodes_high_profile_b_frames_in_presentation_order() {
        let path = ffmpeg("order.mp4", "320x240", "2", HIGH_BF3);
        let reference = ffmpeg_pictures(&path, 320, 240);
        assert_eq!(reference.len(), 60);
        let mut dec = Decoder::with_api_config(
            OpenH264API::from_source(),
            DecoderConfig::new().flush_after_decode(Flush::NoFlush),
        )
        .unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut take = |yuv: &openh264::decoder::DecodedYUV<'_>| {
            let (w, h) = yuv.dimensions();
            let (ys, us, vs) = yuv.strides();
            let mut v = Vec::with_capacity(w * h * 3 / 2);
            for r in 0..h {
                v.extend_from_slice(&yuv.y()[r * ys..r * ys + w]);
            }
            for r in 0..h / 2 {
                v.extend_from_slice(&yuv.u()[r * us..r * us + w / 2]);
            }
            for r in 0..h / 2 {
                v.extend_from_slice(&yuv.v()[r * vs..r * vs + w / 2]);
            }
            got.push(v);
        };
        for f in frames_of(&path) {
            if let Some(yuv) = dec.decode(&f.data).unwrap() {
                take(&yuv);
            }
        }
        for yuv in dec.flush_remaining().unwrap() {
            take(&yuv);
        }
        let order: Vec<Option<usize>> = got.iter().map(|g| reference.iter().position(|r| r == g)).collect();
        assert_eq!(got.len(), reference.len(), "{order:?}");
        let psnr: Vec<f64> = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| {
                psnr_y(&YUVBuffer::from_vec(a.clone(), 320, 240), &YUVBuffer::from_vec(b.clone(), 320, 240))
            })
            .collect();
        // Bit-exact but for rare rounding in a few B-pictures (over 75 dB where not identical).
        for (i, p) in psnr.iter().enumerate() {
            assert!(*p > 60.0, "picture {i} is not ffmpeg's picture {i}: {order:?} {psnr:?}");
        }
        assert!(order.iter().filter(|o| o.is_some()).count() > 30, "{order:?}");
    }

    #[test]
    fn transcodes_to_constrained_baseline_frame_for_frame() {
        let path = ffmpeg("tc.mp4", "640x360", "3", HIGH_BF3);
        let frames = frames_of(&path);
        assert_eq!(frames.len(), 90);
        let (out, stats) = transcode_all(&frames, TranscodeSettings::default());
        assert_eq!(out.len(), 90, "{stats:?}");
        assert_eq!(stats.decode_errors, 0);
        // Presentation order, every timestamp of the source once.
        let mut want: Vec<u64> = frames.iter().map(|f| f.rtp_time).collect();
        want.sort_unstable();
        assert_eq!(out.iter().map(|f| f.rtp_time).collect::<Vec<_>>(), want);
        // Keyframes: the first, then every 2 s (60 frames at 30 fps).
        let keys: Vec<usize> = out.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
        assert_eq!(keys, vec![0, 60], "keyframes at {keys:?}");
        assert_eq!(out[0].dimensions(), Some((640, 360)));
        // Constrained baseline: profile_idc 66, constraint_set1; no B-slices anywhere.
        let sps = h264::annexb_nals(&out[0].data).find(|n| h264::nal_type(n) == Some(h264::NAL_SPS)).unwrap();
        assert_eq!(sps[1], 66, "profile_idc");
        assert_ne!(sps[2] & 0x40, 0, "constraint_set1_flag");
        let mut d = ReorderDetector::default();
        assert!(out.iter().all(|f| d.observe(f).is_none()));
        assert!(out
            .iter()
            .flat_map(|f| h264::annexb_nals(&f.data))
            .all(|n| h264::slice_type(n) != Some(SliceType::B)));
        // Decodable, and close to the source's own pictures.
        let reference = ffmpeg_pictures(&path, 640, 360);
        let mut dec = Decoder::new().unwrap();
        let mut psnr = Vec::new();
        for (i, f) in out.iter().enumerate() {
            let yuv = dec.decode(&f.data).unwrap().expect("baseline decodes with no delay");
            let r = YUVBuffer::from_vec(reference[i].clone(), 640, 360);
            psnr.push(psnr_y(&yuv, &r));
        }
        let mean = psnr.iter().sum::<f64>() / psnr.len() as f64;
        assert!(mean > 30.0, "PSNR {mean:.1} dB");
    }

    #[test]
    fn keyframe_on_request_and_skip_through() {
        let frames = frames_of(&ffmpeg("kf.mp4", "320x240", "2", HIGH_BF3));
        let mut t = VideoTranscoder::new(TranscodeSettings::default()).unwrap();
        let mut out = Vec::new();
        t.skip_through(frames[5].rtp_time.max(frames[3].rtp_time));
        let mut first = None;
        let mut asked = None;
        for (i, f) in frames.iter().enumerate() {
            if i == 40 || i == 44 {
                first = first.or(out.first().map(|f: &Frame| f.keyframe));
                out.clear();
                t.request_keyframe();
            }
            t.push(f, &mut out).unwrap();
            if i == 40 {
                assert!(!out.is_empty() && out.iter().all(|f| f.keyframe), "the next picture out is an IDR");
                asked = out.first().map(|f| f.rtp_time);
            }
            if i == 44 {
                assert!(out.iter().all(|f| !f.keyframe), "within the gap after a keyframe: held");
            }
        }
        t.flush(&mut out).unwrap();
        assert!(t.stats().skipped >= 4, "{:?}", t.stats());
        assert_eq!(first, Some(true), "the first picture out is an IDR");
        // The request within the gap is served at its end, not dropped.
        let held: Vec<u64> = out.iter().filter(|f| f.keyframe).map(|f| f.rtp_time).collect();
        assert_eq!(held.len(), 1, "{held:?}");
        let gap = held[0] - asked.unwrap();
        assert!((KEYFRAME_REQUEST_GAP..KEYFRAME_REQUEST_GAP + 6_000).contains(&gap), "{gap}");
        // Thinned: every other picture encoded, the rest still decodes.
        let mut t = VideoTranscoder::new(TranscodeSettings::default()).unwrap();
        let mut out = Vec::new();
        t.set_thin(true);
        for f in &frames {
            t.push(f, &mut out).unwrap();
        }
        t.flush(&mut out).unwrap();
        assert!((29..=31).contains(&out.len()), "{} of 60", out.len());
        let mut dec = Decoder::new().unwrap();
        assert!(out.iter().all(|f| dec.decode(&f.data).is_ok_and(|p| p.is_some())));
    }

    #[test]
    fn rotates_portrait() {
        let frames = frames_of(&ffmpeg("rot.mp4", "320x240", "1", HIGH_BF3));
        let settings = TranscodeSettings { rotation: Rotation::Cw90, ..Default::default() };
        let (out, _) = transcode_all(&frames, settings);
        assert_eq!(out.len(), 30);
        assert_eq!(out[0].dimensions(), Some((240, 320)));
        // A 4x2 plane turned 90° clockwise: the bottom-left sample goes to the top left.
        let src = YUVBuffer::from_vec((0..12).collect(), 4, 2);
        let mut buf = Vec::new();
        rotate_i420(&src, 4, 2, Rotation::Cw90, &mut buf);
        assert_eq!(&buf[..8], &[4, 0, 5, 1, 6, 2, 7, 3]);
        assert_eq!(Rotation::from_degrees(-90), Some(Rotation::Cw270));
    }

    /// A file with a rotation matrix comes out upright: as ffmpeg shows it (ffmpeg applies the
    /// matrix when decoding), within the re-encoding's loss.
    #[test]
    fn rotation_from_the_file_matches_ffmpegs_display() {
        let plain = ffmpeg("land.mp4", "320x240", "1", HIGH_BF3);
        let rotated = plain.with_file_name("portrait.mp4");
        let ok = std::process::Command::new("ffmpeg")
            .args(["-y", "-hide_banner", "-loglevel", "error", "-i"])
            .arg(&plain)
            .args(["-c", "copy", "-metadata:s:v:0", "rotate=90"])
            .arg(&rotated)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let (idx, _) = crate::mp4_reader::open(&rotated).unwrap();
        let rotation = Rotation::from_degrees(idx.rotation as i32).unwrap();
        assert!(rotation.swaps());
        let (out, _) =
            transcode_all(&frames_of(&rotated), TranscodeSettings { rotation, ..Default::default() });
        let reference = ffmpeg_pictures(&rotated, 240, 320);
        assert_eq!((out.len(), reference.len()), (30, 30));
        let mut dec = Decoder::new().unwrap();
        for (i, f) in out.iter().enumerate() {
            let yuv = dec.decode(&f.data).unwrap().unwrap();
            let p = psnr_y(&yuv, &YUVBuffer::from_vec(reference[i].clone(), 240, 320));
            assert!(p > 30.0, "picture {i}: {p:.1} dB against ffmpeg's upright picture");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut t = VideoTranscoder::new(TranscodeSettings::default()).unwrap();
        let mut out = Vec::new();
        for data in
            [vec![], vec![0, 0, 0, 1, 0x65], vec![0xff; 300], vec![0, 0, 1, 0x67, 0x64, 0, 0x1f, 0xff]]
        {
            let f = Frame {
                codec: Codec::H264,
                keyframe: true,
                rtp_time: 0,
                captured: Instant::now(),
                data: data.into(),
            };
            let _ = t.push(&f, &mut out);
        }
        let _ = t.flush(&mut out);
        assert!(out.is_empty());
        assert_eq!(bitrate_for(1280, 720, 30.0), 2_764_800);
        assert_eq!(bitrate_for(16, 16, 30.0), MIN_BITRATE);
        assert_eq!(bitrate_for(3840, 2160, 60.0), MAX_BITRATE);
    }
}
