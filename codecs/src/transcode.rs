//! AAC → Opus audio transcoding: pure code (no actix, no IO, no clock), for VOD (AAC in MP4 files)
//! and RTMP ingest, whose audio a browser cannot take as it is: WebRTC carries Opus.
//!
//! ## The pipeline
//! [`AacToOpus`] is sans-IO: [`AacToOpus::push`] one raw AAC access unit (AU) with its
//! timestamp, then [`AacToOpus::pop`] every Opus packet it completed. Inside:
//! 1. **Decode** with symphonia's pure-Rust AAC-LC decoder (the AudioSpecificConfig is its extra
//!    data): 1024 samples per AU at the AAC's own rate, mono or stereo, planar `f32`.
//! 2. **Resample** to 48 kHz with rubato's synchronous FFT resampler (exact rational ratio, e.g.
//!    147:160 for 44.1 kHz; band-limited, so no aliasing). Skipped for 48 kHz sources. Its start-up
//!    delay is trimmed and its tail drained at a discontinuity, so the 48 kHz samples land exactly
//!    where the AAC timestamps say.
//! 3. **Encode** with libopus (`Application::Audio`, 48 kHz, 20 ms frames of 960 samples,
//!    [`BITRATE_STEREO`] / [`BITRATE_MONO`]), same channel count as the AAC.
//!
//! ## Timestamps
//! Output timestamps are the input's, converted: the AAC sample at `pts` (AAC rate units) goes
//! out at `round(pts * 48000 / rate)`, to within one 48 kHz sample, for the whole stream. So
//! audio stays in sync with video however long the file. Packets follow each other in steps of
//! 960 while the input is continuous; see [`AacToOpus::push`] for what a gap or an overlap does.
//!
//! The Opus encoder adds its look-ahead ([`AacToOpus::pre_skip`], 312 samples = 6.5 ms):
//! decoded audio comes out that much after its packet timestamp says. WebRTC receivers do not
//! compensate it (far below lip-sync thresholds); a container writer puts it in `pre_skip`.
//!
//! ## Errors
//! A bad or unsupported AudioSpecificConfig fails [`AacToOpus::new`]. A corrupt AU fails only its
//! own [`AacToOpus::push`]: the decoder is reset and the next AU decodes (its timestamp then
//! shows the hole, handled like any gap). The decoder runs behind `catch_unwind`: a panic in it on
//! hostile input is that AU's decode error, not a dead actor.
//!
//! ## Limits
//! AAC-LC only (what symphonia decodes): explicit HE-AAC (SBR/PS in the config) is refused as
//! [`TranscodeError::Unsupported`]; HE-AAC signalled only in-band decodes as its AAC-LC core
//! (right timing and pitch, half the bandwidth). 1 or 2 channels, 1024-sample frames, 8-96 kHz.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::io::{BitReaderLtr, ReadBitsLtr};
use symphonia::core::packet::PacketRef;
use symphonia::core::units::{Duration, Timestamp};
use symphonia::default::codecs::AacDecoder;

/// Opus's clock rate, and the rate of every output timestamp.
pub const OPUS_RATE: u32 = 48_000;
/// Samples (per channel) in one Opus packet: 20 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Opus bitrate for stereo sources (bits/s).
pub const BITRATE_STEREO: i32 = 64_000;
/// Opus bitrate for mono sources (bits/s).
pub const BITRATE_MONO: i32 = 32_000;
/// Samples per AAC-LC access unit (the 960-sample variant is refused at configuration).
pub const AAC_FRAME_SAMPLES: u64 = 1024;
/// How far (in milliseconds) an AU's pts may stray from where the previous AU ended and still
/// count as continuous. Within it the sample count rules and the pts is ignored, so timestamp
/// rounding (RTMP's whole milliseconds) causes no clicks; beyond it the pts wins (a gap, an
/// overlap). Drift between pts and sample count is therefore bounded by this.
pub const PTS_TOLERANCE_MS: u64 = 10;
/// Output buffer for one Opus packet: libopus's recommended maximum.
const MAX_OPUS_PACKET: usize = 4000;
/// Input chunk of the resampler: one AAC frame, so one AU is one resampler call.
const RESAMPLER_CHUNK: usize = AAC_FRAME_SAMPLES as usize;

/// Failures of the transcoder. Only `new` failures are final; a `push` error concerns that AU
/// alone and the transcoder takes the next one.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The AudioSpecificConfig is malformed (too short, reserved values, impossible rate).
    #[error("bad AAC AudioSpecificConfig {asc:02x?}: {reason}")]
    BadConfig { asc: Vec<u8>, reason: String },
    /// A well-formed configuration this transcoder cannot decode (HE-AAC, Main, >2 channels…).
    #[error("unsupported AAC stream: {0}")]
    Unsupported(String),
    /// One access unit did not decode (corrupt, truncated, or using a feature the decoder lacks).
    #[error("AAC access unit at pts {pts} ({len} bytes) does not decode: {reason}")]
    Decode { pts: u64, len: usize, reason: String },
    /// The access unit lies wholly before audio already sent: its time is taken.
    #[error("AAC access unit at pts {pts} is late: output already reached pts {reached}")]
    Late { pts: u64, reached: u64 },
    /// libopus refused to create or configure its encoder.
    #[error("opus encoder setup: {0}")]
    EncoderSetup(#[source] crate::opus::Error),
    /// libopus failed on one packet (it is dropped; the timeline carries on).
    #[error("opus encoding of the packet at ts48k {ts48k} failed: {source}")]
    Encode { ts48k: u64, source: crate::opus::Error },
    /// The resampler failed (setup for this rate, or a chunk).
    #[error("resampling {rate} Hz to 48 kHz: {reason}")]
    Resample { rate: u32, reason: String },
}

/// One Opus packet (20 ms) and its timestamp in 48 kHz units (the RTP clock of Opus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    pub data: Vec<u8>,
    pub ts48k: u64,
}

/// Decodes AAC (LC; any sample rate 8-96 kHz; mono or stereo) and re-encodes it as 48 kHz Opus
/// in 20 ms packets. Sans-IO: push AAC access units in, pull Opus packets out.
pub struct AacToOpus {
    asc: Vec<u8>,
    config: AscInfo,
    decoder: AacDecoder,
    /// `None` for 48 kHz sources.
    resampler: Option<To48k>,
    encoder: OpusFramer,
    /// The run of continuous input being transcoded; `None` before the first AU, after
    /// [`AacToOpus::finish`], and while the last AU was refused.
    segment: Option<Segment>,
    /// Decoded planar samples of the current AU (reused).
    pcm: Vec<Vec<f32>>,
}

/// A run of AUs with continuous timestamps.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Where (AAC rate units) the next AU starts if the input stays continuous.
    next_pts: u64,
    /// AAC samples fed into this segment.
    in_frames: u64,
}

impl AacToOpus {
    /// `asc`: the AudioSpecificConfig (from MP4 esds / FLV AAC sequence header).
    ///
    /// Fails with [`TranscodeError::BadConfig`] for a malformed config,
    /// [`TranscodeError::Unsupported`] for anything but AAC-LC with 1 or 2 channels and
    /// 1024-sample frames.
    pub fn new(asc: &[u8]) -> Result<Self, TranscodeError> {
        let config = AscInfo::parse(asc)?;
        let decoder = new_decoder(asc)?;
        let channels = usize::from(config.channels);
        let resampler =
            if config.rate == OPUS_RATE { None } else { Some(To48k::new(config.rate, channels)?) };
        Ok(AacToOpus {
            asc: asc.to_vec(),
            config,
            decoder,
            resampler,
            encoder: OpusFramer::new(config.channels)?,
            segment: None,
            pcm: vec![Vec::with_capacity(RESAMPLER_CHUNK); channels],
        })
    }

    /// One access unit at `pts` (in the AAC sample rate) in, and every Opus [`Frame`] it
    /// completes out, stamped `captured`: the one place AAC sources (RTMP, RTSP, VOD) turn AAC
    /// into frames. The frames completed before a refused AU are returned with its error.
    pub fn frames(
        &mut self,
        aac: &[u8],
        pts: u64,
        captured: std::time::Instant,
    ) -> (Vec<crate::media::Frame>, Result<(), TranscodeError>) {
        let res = self.push(aac, pts);
        let frames = std::iter::from_fn(|| self.pop())
            .map(|p| crate::media::Frame {
                codec: crate::media::Codec::Opus,
                keyframe: false,
                rtp_time: p.ts48k,
                captured,
                data: p.data.into(),
            })
            .collect();
        (frames, res)
    }

    /// Push one raw AAC access unit (no ADTS header) whose first sample is at `pts`.
    ///
    /// ## Timestamp contract
    /// - `pts` is the presentation time of the AU's first decoded sample, in units of the AAC
    ///   sample rate ([`AacToOpus::sample_rate`]): `1/rate` seconds. An MP4 audio track whose
    ///   timescale is the sample rate (the usual case) gives its sample times as they are;
    ///   another timescale, or FLV's milliseconds, is rescaled by the caller:
    ///   `pts = t * rate / timescale`. The same origin as the video's timestamps keeps them in
    ///   sync; edit-list shifts are the caller's, as for video.
    /// - The AU's samples go out at `round(pts * 48000 / rate)` onwards (to one 48 kHz sample).
    /// - An AU is continuous with the previous one when its `pts` is within
    ///   [`PTS_TOLERANCE_MS`] of where that one ended (`pts + 1024`); the exact sample count is
    ///   then used and the `pts` jitter ignored.
    /// - Further ahead is a **gap** (missing AUs, a corrupt AU, a pause): the audio before it is
    ///   drained, silence completes the 20 ms packet in progress, and the next packet starts at
    ///   the new position: `ts48k` jumps by more than 960. A gap shorter than what the packet in
    ///   progress lacks is simply filled with silence.
    /// - Further back is an **overlap**: the part of the AU that falls before audio already
    ///   encoded is dropped. An AU wholly before it is refused with [`TranscodeError::Late`],
    ///   leaving the transcoder as it was. (A source that resets its clock needs a new
    ///   transcoder.)
    ///
    /// Errors concern this AU only: [`TranscodeError::Decode`] (nothing of it is used; the next
    /// AU's pts shows the hole), `Late`, and, rarely, `Encode`/`Resample` for a packet lost on
    /// the way out. In every case the next push carries on.
    pub fn push(&mut self, aac: &[u8], pts: u64) -> Result<(), TranscodeError> {
        let continuous = self.segment.is_some_and(|seg| pts.abs_diff(seg.next_pts) <= self.tolerance());
        if !continuous {
            // Refuse an AU that lands wholly in the past before it touches the decoder state.
            if let Some(reached) = self.encoder.cursor() {
                if self.to48(pts.saturating_add(AAC_FRAME_SAMPLES)) <= reached {
                    return Err(TranscodeError::Late { pts, reached: self.from48(reached) });
                }
            }
        }
        let frames = self.decode(aac, pts)?;
        let mut result = Ok(());
        if continuous {
            if let Some(seg) = self.segment.as_mut() {
                seg.next_pts = seg.next_pts.saturating_add(frames as u64);
                seg.in_frames += frames as u64;
            }
        } else {
            result = self.end_segment();
            self.encoder.seek(self.to48(pts));
            self.segment =
                Some(Segment { next_pts: pts.saturating_add(frames as u64), in_frames: frames as u64 });
        }
        let fed = match self.resampler.as_mut() {
            Some(resampler) => resampler.push(&self.pcm, frames, &mut self.encoder),
            None => {
                self.encoder.write(&self.pcm, frames);
                Ok(())
            }
        };
        let encoded = self.encoder.take_error();
        result.and(fed).and(encoded)
    }

    /// Next encoded Opus packet with its timestamp in 48 kHz units: 960 apart while the input is
    /// continuous, jumping at a gap (see [`AacToOpus::push`]); always increasing.
    pub fn pop(&mut self) -> Option<OpusPacket> {
        self.encoder.packets.pop_front()
    }

    /// Channels of the Opus output (1 or 2): those of the AAC.
    pub fn channels(&self) -> u8 {
        self.config.channels
    }

    /// Sample rate of the AAC, the unit of [`AacToOpus::push`]'s `pts`.
    pub fn sample_rate(&self) -> u32 {
        self.config.rate
    }

    /// The Opus encoder's look-ahead in 48 kHz samples (the `pre_skip` of an Opus header): how
    /// much later than its packet timestamp the decoded audio comes out.
    pub fn pre_skip(&self) -> u16 {
        self.encoder.lookahead
    }

    /// End of stream: drain the resampler and send the last, partial packet padded with silence.
    /// [`AacToOpus::pop`] then yields everything. A later push starts a new run of audio.
    pub fn finish(&mut self) -> Result<(), TranscodeError> {
        let drained = self.end_segment();
        self.encoder.pad_out();
        drained.and(self.encoder.take_error())
    }

    /// Decodes `aac` into `self.pcm`; returns the number of frames.
    fn decode(&mut self, aac: &[u8], pts: u64) -> Result<usize, TranscodeError> {
        let fail = |reason: String| TranscodeError::Decode { pts, len: aac.len(), reason };
        if aac.is_empty() {
            return Err(fail("empty access unit".into()));
        }
        // A raw_data_block opening with ID_END holds no audio; symphonia would hand back its
        // previous output for it.
        if aac[0] >> 5 == ID_END {
            return Err(fail("no audio element in the access unit".into()));
        }
        let channels = usize::from(self.config.channels);
        let packet = PacketRef::new(0, Timestamp::ZERO, Duration::new(AAC_FRAME_SAMPLES), aac);
        let pcm = &mut self.pcm;
        let decoder = &mut self.decoder;
        let outcome = catch_unwind(AssertUnwindSafe(|| match decoder.decode_ref(&packet) {
            Ok(buf) if buf.num_planes() == channels && buf.frames() > 0 => {
                buf.copy_to_vecs_planar::<f32>(pcm);
                Ok(buf.frames())
            }
            Ok(buf) => Err(format!("decoded {} channels, {} frames", buf.num_planes(), buf.frames())),
            Err(e) => Err(e.to_string()),
        }));
        match outcome {
            Ok(Ok(frames)) => Ok(frames),
            Ok(Err(reason)) => {
                // Half-parsed state must not leak into the next AU.
                self.decoder.reset();
                Err(fail(reason))
            }
            Err(_) => {
                // The decoder panicked: its state is unknown, start a fresh one.
                self.decoder = new_decoder(&self.asc)?;
                Err(fail("decoder panicked".into()))
            }
        }
    }

    /// Closes the current run of continuous input: drains the resampler's tail into packets.
    fn end_segment(&mut self) -> Result<(), TranscodeError> {
        let Some(seg) = self.segment.take() else { return Ok(()) };
        let Some(resampler) = self.resampler.as_mut() else { return Ok(()) };
        // The resampled length of the whole run, so segments follow the pts exactly.
        let want = div_round(u128::from(seg.in_frames) * u128::from(OPUS_RATE), u128::from(self.config.rate));
        let drained = resampler.drain(want, &mut self.encoder);
        resampler.reset();
        drained
    }

    fn tolerance(&self) -> u64 {
        u64::from(self.config.rate) * PTS_TOLERANCE_MS / 1000
    }

    /// AAC rate units → 48 kHz units, rounded.
    fn to48(&self, pts: u64) -> u64 {
        div_round(u128::from(pts) * u128::from(OPUS_RATE), u128::from(self.config.rate))
    }

    /// 48 kHz units → AAC rate units, rounded (for messages).
    fn from48(&self, ts: u64) -> u64 {
        div_round(u128::from(ts) * u128::from(self.config.rate), u128::from(OPUS_RATE))
    }
}

/// `round(n / d)`, saturating at `u64::MAX`.
fn div_round(n: u128, d: u128) -> u64 {
    u64::try_from((n + d / 2) / d).unwrap_or(u64::MAX)
}

fn new_decoder(asc: &[u8]) -> Result<AacDecoder, TranscodeError> {
    let mut params = AudioCodecParameters::new();
    params.for_codec(CODEC_ID_AAC).with_extra_data(asc.into());
    AacDecoder::try_new(&params, &AudioDecoderOptions::default()).map_err(|e| match e {
        SymphoniaError::Unsupported(what) => TranscodeError::Unsupported(what.to_string()),
        other => TranscodeError::BadConfig { asc: asc.to_vec(), reason: other.to_string() },
    })
}

/// Syntax element id of the end of a raw_data_block (ISO 14496-3 table 4.85).
const ID_END: u8 = 7;

/// What the transcoder needs from an AudioSpecificConfig (ISO 14496-3 1.6.2.1). Parsed here, not
/// only by the decoder, to tell a broken config from an unsupported one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AscInfo {
    rate: u32,
    channels: u8,
}

/// Sampling frequencies by `samplingFrequencyIndex`; 13 and 14 are reserved, 15 means explicit.
const AAC_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
const AOT_AAC_LC: u32 = 2;
const AOT_SBR: u32 = 5;
const AOT_PS: u32 = 29;

impl AscInfo {
    fn parse(asc: &[u8]) -> Result<AscInfo, TranscodeError> {
        let bad = |reason: &str| TranscodeError::BadConfig { asc: asc.to_vec(), reason: reason.to_string() };
        let mut bits = BitReaderLtr::new(asc);
        let mut read = |n| bits.read_bits_leq32(n).ok();
        let short = || bad("truncated");
        let mut aot = read(5).ok_or_else(short)?;
        if aot == 31 {
            aot = 32 + read(6).ok_or_else(short)?;
        }
        let index = read(4).ok_or_else(short)? as usize;
        let rate = match index {
            15 => read(24).ok_or_else(short)?,
            i if i < AAC_RATES.len() => AAC_RATES[i],
            _ => return Err(bad("reserved sampling frequency index")),
        };
        let channel_config = read(4).ok_or_else(short)?;
        match aot {
            0 => return Err(bad("audio object type 0 (null)")),
            AOT_AAC_LC => {}
            AOT_SBR | AOT_PS => {
                return Err(TranscodeError::Unsupported(
                    "HE-AAC (SBR/PS): the decoder handles AAC-LC only".into(),
                ))
            }
            other => {
                return Err(TranscodeError::Unsupported(format!(
                    "audio object type {other} ({}): only AAC-LC (2) is decoded",
                    aot_name(other)
                )))
            }
        }
        if !(8000..=96000).contains(&rate) {
            return Err(bad(&format!("sample rate {rate} Hz outside 8-96 kHz")));
        }
        let channels = match channel_config {
            1 | 2 => channel_config as u8,
            0 => {
                return Err(TranscodeError::Unsupported("channel layout in a program config element".into()))
            }
            3..=7 => {
                return Err(TranscodeError::Unsupported(format!(
                    "channel configuration {channel_config}: mono and stereo only"
                )))
            }
            _ => return Err(bad(&format!("reserved channel configuration {channel_config}"))),
        };
        // GASpecificConfig: frameLengthFlag.
        if read(1).ok_or_else(short)? == 1 {
            return Err(TranscodeError::Unsupported("960-sample AAC frames".into()));
        }
        Ok(AscInfo { rate, channels })
    }
}

fn aot_name(aot: u32) -> &'static str {
    match aot {
        1 => "AAC Main",
        3 => "AAC SSR",
        4 => "AAC LTP",
        17 => "ER AAC-LC",
        23 => "ER AAC-LD",
        39 => "ER AAC-ELD",
        42 => "USAC",
        _ => "not AAC-LC",
    }
}

/// AAC-rate planar samples → 48 kHz, through rubato's FFT resampler, trimming its start-up delay
/// so output sample `k` of a run is input time `k / 48000` s after the run's start.
struct To48k {
    rate: u32,
    fft: Fft<f32>,
    channels: usize,
    /// Input not yet resampled (less than a chunk).
    pending: Vec<Vec<f32>>,
    /// Output of one chunk.
    out: Vec<Vec<f32>>,
    /// Start-up delay (output frames) still to discard in this run.
    delay_left: usize,
    /// Output frames passed on in this run.
    delivered: u64,
}

impl To48k {
    fn new(rate: u32, channels: usize) -> Result<Self, TranscodeError> {
        let fft =
            Fft::<f32>::new(rate as usize, OPUS_RATE as usize, RESAMPLER_CHUNK, channels, FixedSync::Input)
                .map_err(|e| TranscodeError::Resample { rate, reason: e.to_string() })?;
        let out = vec![vec![0.0; fft.output_frames_max()]; channels];
        let delay_left = fft.output_delay();
        Ok(To48k {
            rate,
            fft,
            channels,
            pending: vec![Vec::with_capacity(2 * RESAMPLER_CHUNK); channels],
            out,
            delay_left,
            delivered: 0,
        })
    }

    /// Resamples `frames` of `input` as far as whole chunks allow, into `sink`.
    fn push(
        &mut self,
        input: &[Vec<f32>],
        frames: usize,
        sink: &mut OpusFramer,
    ) -> Result<(), TranscodeError> {
        for (pending, plane) in self.pending.iter_mut().zip(input) {
            pending.extend_from_slice(&plane[..frames]);
        }
        while self.pending[0].len() >= self.fft.input_frames_next() {
            self.run(None, u64::MAX, sink)?;
        }
        Ok(())
    }

    /// Ends a run: resamples what is pending plus silence until the run has produced `want`
    /// output frames in all, and passes exactly those on.
    fn drain(&mut self, want: u64, sink: &mut OpusFramer) -> Result<(), TranscodeError> {
        // Each call yields at least one frame once the delay is through, so this ends; the bound
        // is a guard against a resampler that stops producing.
        let mut guard = 0;
        while self.delivered < want && guard < 64 {
            let partial = self.pending[0].len().min(self.fft.input_frames_next());
            self.run(Some(partial), want, sink)?;
            guard += 1;
        }
        Ok(())
    }

    /// One resampler call on the first chunk of `pending` (`partial`: fewer real frames, the
    /// rest silence); passes on at most `limit` frames in total for this run.
    fn run(
        &mut self,
        partial: Option<usize>,
        limit: u64,
        sink: &mut OpusFramer,
    ) -> Result<(), TranscodeError> {
        let need = self.fft.input_frames_next();
        let real = partial.unwrap_or(need);
        let rate = self.rate;
        let fail = |e: String| TranscodeError::Resample { rate, reason: e };
        let (used, produced) = {
            let input = SequentialSliceOfVecs::new(&self.pending[..], self.channels, real)
                .map_err(|e| fail(e.to_string()))?;
            let out_frames = self.out[0].len();
            let mut output = SequentialSliceOfVecs::new_mut(&mut self.out[..], self.channels, out_frames)
                .map_err(|e| fail(e.to_string()))?;
            let indexing = Indexing { partial_len: partial, ..Indexing::default() };
            self.fft
                .process_into_buffer(&input, &mut output, Some(&indexing))
                .map_err(|e| fail(e.to_string()))?
        };
        let used = used.min(real);
        for pending in &mut self.pending {
            pending.drain(..used);
        }
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let room = usize::try_from(limit.saturating_sub(self.delivered)).unwrap_or(usize::MAX);
        let pass = (produced - skip).min(room);
        sink.write_range(&self.out, skip, skip + pass);
        self.delivered += pass as u64;
        Ok(())
    }

    fn reset(&mut self) {
        self.fft.reset();
        for pending in &mut self.pending {
            pending.clear();
        }
        self.delay_left = self.fft.output_delay();
        self.delivered = 0;
    }
}

/// 48 kHz planar samples → 20 ms Opus packets on a 48 kHz timeline.
struct OpusFramer {
    encoder: crate::opus::Encoder,
    channels: usize,
    lookahead: u16,
    /// Interleaved samples of the packet being filled.
    frame: Vec<f32>,
    /// Timestamp of `frame`'s first sample; `None` before any audio.
    frame_ts: Option<u64>,
    /// Samples still to drop: they would overlap audio already encoded.
    skip: u64,
    packets: VecDeque<OpusPacket>,
    /// First encoding error since it was last taken.
    error: Option<TranscodeError>,
    scratch: Vec<u8>,
}

impl OpusFramer {
    fn new(channels: u8) -> Result<Self, TranscodeError> {
        let (layout, bitrate) = match channels {
            1 => (crate::opus::Channels::Mono, BITRATE_MONO),
            _ => (crate::opus::Channels::Stereo, BITRATE_STEREO),
        };
        let mut encoder =
            crate::opus::Encoder::new(OPUS_RATE, layout).map_err(TranscodeError::EncoderSetup)?;
        encoder.set_bitrate(bitrate).map_err(TranscodeError::EncoderSetup)?;
        let lookahead = encoder.lookahead().map_err(TranscodeError::EncoderSetup)?;
        let channels = usize::from(channels);
        Ok(OpusFramer {
            encoder,
            channels,
            lookahead: u16::try_from(lookahead).unwrap_or(0),
            frame: Vec::with_capacity(FRAME_SAMPLES * channels),
            frame_ts: None,
            skip: 0,
            packets: VecDeque::new(),
            error: None,
            scratch: vec![0; MAX_OPUS_PACKET],
        })
    }

    fn frame_len(&self) -> u64 {
        (self.frame.len() / self.channels) as u64
    }

    /// Timestamp of the next sample to be written; `None` before any audio.
    fn cursor(&self) -> Option<u64> {
        self.frame_ts.map(|ts| ts.saturating_add(self.frame_len()))
    }

    /// Positions the next written sample at `ts`: silence or a jump forward, dropping the
    /// overlap backward.
    fn seek(&mut self, ts: u64) {
        self.skip = 0;
        let Some(cursor) = self.cursor() else {
            self.frame_ts = Some(ts);
            return;
        };
        if ts < cursor {
            self.skip = cursor - ts;
            return;
        }
        if self.frame.is_empty() {
            self.frame_ts = Some(ts);
            return;
        }
        let room = FRAME_SAMPLES as u64 - self.frame_len();
        let gap = ts - cursor;
        self.silence(gap.min(room));
        if gap >= room {
            // The packet in progress went out with silence at its end: jump.
            self.frame_ts = Some(ts);
        }
    }

    fn silence(&mut self, frames: u64) {
        for _ in 0..frames {
            self.frame.extend(std::iter::repeat_n(0.0, self.channels));
            self.flush_full();
        }
    }

    fn write(&mut self, planes: &[Vec<f32>], frames: usize) {
        self.write_range(planes, 0, frames);
    }

    /// Appends frames `start..end` of `planes`, encoding each packet as it fills.
    fn write_range(&mut self, planes: &[Vec<f32>], start: usize, end: usize) {
        let skip = usize::try_from(self.skip).unwrap_or(usize::MAX).min(end - start);
        self.skip -= skip as u64;
        for i in start + skip..end {
            for plane in &planes[..self.channels] {
                let x = plane[i];
                // AAC overshoots a little on loud content; NaN only comes from garbage.
                self.frame.push(if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 });
            }
            self.flush_full();
        }
    }

    fn flush_full(&mut self) {
        if self.frame.len() < FRAME_SAMPLES * self.channels {
            return;
        }
        let ts48k = self.frame_ts.unwrap_or(0);
        match self.encoder.encode_float(&self.frame, &mut self.scratch) {
            Ok(len) => self.packets.push_back(OpusPacket { data: self.scratch[..len].to_vec(), ts48k }),
            Err(source) => {
                self.error.get_or_insert(TranscodeError::Encode { ts48k, source });
            }
        }
        self.frame.clear();
        self.frame_ts = Some(ts48k.saturating_add(FRAME_SAMPLES as u64));
    }

    /// Completes the packet in progress with silence.
    fn pad_out(&mut self) {
        if !self.frame.is_empty() {
            self.silence(FRAME_SAMPLES as u64 - self.frame_len());
        }
    }

    fn take_error(&mut self) -> Result<(), TranscodeError> {
        self.error.take().map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    /// An AAC stream made by ffmpeg: raw AUs (ADTS headers stripped) and the ASC built from the
    /// first ADTS header.
    struct Aac {
        asc: Vec<u8>,
        aus: Vec<Vec<u8>>,
        rate: u32,
    }

    /// Runs ffmpeg with `input` (lavfi arguments) and returns its ADTS output, split.
    fn ffmpeg_aac(input: &[&str], channels: u8) -> Aac {
        let mut args = vec!["-hide_banner", "-loglevel", "error", "-nostdin"];
        args.extend_from_slice(input);
        let ac = channels.to_string();
        args.extend_from_slice(&["-ac", &ac, "-c:a", "aac", "-b:a", "128k", "-f", "adts", "-"]);
        let out =
            Command::new("ffmpeg").args(&args).output().expect("ffmpeg is installed (tests/run-all.sh)");
        assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
        split_adts(&out.stdout)
    }

    fn split_adts(mut data: &[u8]) -> Aac {
        let mut aus = Vec::new();
        let mut asc = Vec::new();
        let mut rate = 0;
        while data.len() >= 7 {
            assert_eq!((data[0], data[1] & 0xf6), (0xff, 0xf0), "ADTS sync");
            let protection_absent = data[1] & 1 == 1;
            let profile = data[2] >> 6; // object type - 1
            let freq_index = (data[2] >> 2) & 0xf;
            let chan = ((data[2] & 1) << 2) | (data[3] >> 6);
            let len =
                (usize::from(data[3] & 3) << 11) | (usize::from(data[4]) << 3) | usize::from(data[5] >> 5);
            assert_eq!(data[6] & 3, 0, "one raw data block per ADTS frame");
            let header = if protection_absent { 7 } else { 9 };
            if asc.is_empty() {
                let aot = profile + 1;
                asc = vec![(aot << 3) | (freq_index >> 1), ((freq_index & 1) << 7) | (chan << 3)];
                rate = AAC_RATES[usize::from(freq_index)];
            }
            aus.push(data[header..len].to_vec());
            data = &data[len..];
        }
        Aac { asc, aus, rate }
    }

    /// `frames` at `rate`, counted at 48 kHz (rounded, as the transcoder does).
    fn resampled_len(frames: u64, rate: u64) -> u64 {
        (frames * 48000 + rate / 2) / rate
    }

    /// An AudioSpecificConfig: object type, frequency index (15: `explicit` rate follows),
    /// channel configuration, frameLengthFlag; an HE-AAC one with `ext` (extension index,
    /// core object type).
    fn asc(aot: u32, index: u32, explicit: Option<u32>, chan: u32, short_frames: bool) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        let mut put = |v: u32, n: u32| bits.extend((0..n).rev().map(|i| (v >> i) & 1 == 1));
        put(aot, 5);
        put(index, 4);
        if let Some(rate) = explicit {
            put(rate, 24);
        }
        put(chan, 4);
        if aot == 5 || aot == 29 {
            put(4, 4); // extension sampling frequency index: 44.1 kHz
            put(2, 5); // core: AAC-LC
        }
        put(u32::from(short_frames), 1);
        put(0, 2); // dependsOnCoreCoder, extensionFlag
        bits.chunks(8)
            .map(|c| c.iter().enumerate().fold(0u8, |b, (i, &v)| b | (u8::from(v) << (7 - i))))
            .collect()
    }

    /// Stereo AAC with a different sine on each channel (left `fl` Hz, right `fr` Hz).
    fn stereo_aac(fl: u32, fr: u32, rate: u32, secs: f32) -> Aac {
        let (l, r) = (sine(fl, rate, secs), sine(fr, rate, secs));
        let merge = "[0:a][1:a]amerge=inputs=2";
        ffmpeg_aac(&["-f", "lavfi", "-i", &l, "-f", "lavfi", "-i", &r, "-filter_complex", merge], 2)
    }

    fn sine(freq: u32, rate: u32, secs: f32) -> String {
        format!("sine=frequency={freq}:sample_rate={rate}:duration={secs}")
    }

    /// Transcodes every AU (pts = index * 1024) and finishes.
    fn transcode(aac: &Aac) -> (AacToOpus, Vec<OpusPacket>) {
        let mut t = AacToOpus::new(&aac.asc).unwrap();
        let mut packets = Vec::new();
        for (i, au) in aac.aus.iter().enumerate() {
            t.push(au, i as u64 * AAC_FRAME_SAMPLES).unwrap();
            packets.extend(std::iter::from_fn(|| t.pop()));
        }
        t.finish().unwrap();
        packets.extend(std::iter::from_fn(|| t.pop()));
        (t, packets)
    }

    /// Decodes packets with libopus onto their timeline: returns planar 48 kHz channels starting
    /// at the first packet's timestamp, with missing time as silence.
    fn decode_opus(packets: &[OpusPacket], channels: u8) -> Vec<Vec<f32>> {
        let layout = if channels == 1 { crate::opus::Channels::Mono } else { crate::opus::Channels::Stereo };
        let mut dec = crate::opus::Decoder::new(48000, layout).unwrap();
        let ch = usize::from(channels);
        let start = packets[0].ts48k;
        let mut planes = vec![Vec::new(); ch];
        let mut buf = vec![0f32; 5760 * ch];
        for p in packets {
            let at = (p.ts48k - start) as usize;
            for plane in &mut planes {
                plane.resize(at, 0.0);
            }
            let n = dec.decode_float(&p.data, &mut buf).unwrap();
            assert_eq!(n, FRAME_SAMPLES);
            for (c, plane) in planes.iter_mut().enumerate() {
                plane.extend((0..n).map(|i| buf[i * ch + c]));
            }
        }
        planes
    }

    /// Goertzel power of `freq` in `x` (48 kHz), normalised by length.
    fn tone_power(x: &[f32], freq: f32) -> f32 {
        let w = 2.0 * std::f32::consts::PI * freq / 48000.0;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0f32, 0f32);
        for &v in x {
            let s = v + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len() as f32 * x.len() as f32)
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    /// Asserts `x` is a tone at `freq` (nearly all its energy, 20 dB over `other`) at a real
    /// level. A sine of amplitude `a` has `tone_power` `a²/4` and mean square `a²/2`.
    fn assert_tone(x: &[f32], freq: f32, other: f32) {
        let (p, q) = (tone_power(x, freq), tone_power(x, other));
        let level = rms(x);
        assert!(level > 0.05, "level {level}");
        assert!(
            2.0 * p > 0.9 * level * level,
            "{freq} Hz holds {:.2} of the energy",
            2.0 * p / (level * level)
        );
        assert!(p > 100.0 * q, "{freq} Hz power {p} vs {other} Hz {q}");
    }

    fn assert_continuous(packets: &[OpusPacket]) {
        for pair in packets.windows(2) {
            assert_eq!(
                pair[1].ts48k - pair[0].ts48k,
                FRAME_SAMPLES as u64,
                "{} -> {}",
                pair[0].ts48k,
                pair[1].ts48k
            );
        }
    }

    #[test]
    fn stereo_48k_keeps_both_channels_and_the_timing() {
        // Left 440 Hz, right 1000 Hz: proves the channels are neither swapped nor mixed.
        let aac = stereo_aac(440, 1000, 48000, 2.0);
        assert_eq!(aac.rate, 48000);
        let (t, packets) = transcode(&aac);
        assert_eq!(t.channels(), 2);
        // 2 s of audio plus the AAC encoder's 1024-sample priming frame and its tail padding.
        let decoded = aac.aus.len() * 1024;
        assert!((96000..100800).contains(&decoded), "{decoded}");
        assert_eq!(packets.len(), decoded.div_ceil(960), "{} AUs", aac.aus.len());
        assert_eq!(packets[0].ts48k, 0);
        assert_continuous(&packets);
        let pcm = decode_opus(&packets, 2);
        let (a, b) = (48000 / 5, 48000 * 9 / 5); // steady part, 0.2-1.8 s
        assert_tone(&pcm[0][a..b], 440.0, 1000.0);
        assert_tone(&pcm[1][a..b], 1000.0, 440.0);
    }

    #[test]
    fn mono_44k1_is_resampled_in_sync() {
        // 0.5 s of silence, then a 440 Hz tone: its onset must come out where the pts say.
        let src = "aevalsrc=if(gte(t\\,0.5)\\,0.5*sin(2*PI*440*(t-0.5))\\,0):s=44100:d=2";
        let aac = ffmpeg_aac(&["-f", "lavfi", "-i", src], 1);
        assert_eq!((aac.rate, aac.asc.clone()), (44100, vec![0x12, 0x08]));
        let (t, packets) = transcode(&aac);
        assert_eq!(t.channels(), 1);
        let decoded = aac.aus.len() as u64 * 1024;
        assert_eq!(packets.len() as u64, resampled_len(decoded, 44100).div_ceil(960));
        assert!((100..=104).contains(&packets.len()), "{}", packets.len());
        assert_eq!(packets[0].ts48k, 0);
        assert_continuous(&packets);
        let pcm = decode_opus(&packets, 1);
        assert_tone(&pcm[0][48000 * 6 / 10..48000 * 19 / 10], 440.0, 1000.0);
        assert!(rms(&pcm[0][..48000 * 4 / 10]) < 0.005, "silence before the tone");
        // ffmpeg's AAC encoder delays by 1024 samples; libopus by its look-ahead.
        let expected = (0.5 * 48000.0 + 1024.0 * 48000.0 / 44100.0) as i64 + i64::from(t.pre_skip());
        let onset = pcm[0].iter().position(|v| v.abs() > 0.1).unwrap() as i64;
        assert!((onset - expected).abs() <= 48, "onset at {onset}, expected {expected} (±1 ms)");
    }

    #[test]
    fn pts_gap_is_a_timestamp_gap_in_step_with_the_input() {
        let src = sine(440, 44100, 2.0);
        let aac = ffmpeg_aac(&["-f", "lavfi", "-i", &src], 1);
        let mut t = AacToOpus::new(&aac.asc).unwrap();
        let mut packets = Vec::new();
        // The first 40 AUs at 0.., the rest shifted 10 s later (a pause in the source).
        let shift = 10 * 44100;
        let resume = 40 * 1024 + shift;
        for (i, au) in aac.aus.iter().enumerate() {
            let pts = i as u64 * 1024 + if i >= 40 { shift } else { 0 };
            t.push(au, pts).unwrap();
            packets.extend(std::iter::from_fn(|| t.pop()));
        }
        t.finish().unwrap();
        packets.extend(std::iter::from_fn(|| t.pop()));
        let jumps: Vec<_> = packets.windows(2).filter(|p| p[1].ts48k - p[0].ts48k != 960).collect();
        assert_eq!(jumps.len(), 1, "exactly one timestamp gap");
        let resume48 = resampled_len(resume, 44100);
        assert_eq!(jumps[0][1].ts48k, resume48, "the next packet starts at the resumed pts");
        // No drift: the packet count is what each run's length says, plus the two padded ends.
        let before = resampled_len(40 * 1024, 44100).div_ceil(960);
        assert_eq!(packets.iter().filter(|p| p.ts48k < resume48).count() as u64, before);
        // The audio after the gap is the tone again.
        let after: Vec<_> = packets.iter().filter(|p| p.ts48k >= resume48).cloned().collect();
        assert_tone(&decode_opus(&after, 1)[0][4800..40000], 440.0, 1000.0);
    }

    #[test]
    fn small_pts_jitter_is_ignored() {
        // RTMP-like millisecond timestamps, rounded: no gaps, no drift.
        let src = sine(440, 44100, 1.0);
        let aac = ffmpeg_aac(&["-f", "lavfi", "-i", &src], 1);
        let mut t = AacToOpus::new(&aac.asc).unwrap();
        for (i, au) in aac.aus.iter().enumerate() {
            let ms = (i as u64 * 1024 * 1000).div_ceil(44100);
            t.push(au, ms * 44100 / 1000).unwrap();
        }
        t.finish().unwrap();
        let packets: Vec<_> = std::iter::from_fn(|| t.pop()).collect();
        assert_continuous(&packets);
        assert_eq!(packets.len() as u64, resampled_len(aac.aus.len() as u64 * 1024, 44100).div_ceil(960));
    }

    #[test]
    fn corrupt_access_units_fail_alone() {
        let src = sine(440, 48000, 2.0);
        let aac = ffmpeg_aac(&["-f", "lavfi", "-i", &src], 1);
        let mut t = AacToOpus::new(&aac.asc).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut errors = 0;
        for (i, au) in aac.aus.iter().enumerate() {
            let pts = i as u64 * 1024;
            let bad: Option<Vec<u8>> = match i {
                20 => Some(vec![]),
                21 => Some(vec![0xff; 40]),
                22 => Some(au[..au.len() / 4].to_vec()),
                23 => Some(vec![0x40; 200]), // a coupling channel element
                24..=40 => Some((0..1 + next() % 400).map(|_| next() as u8).collect()),
                _ => None,
            };
            match bad {
                // Random bytes may decode as (noisy) audio, but never panic or poison.
                Some(bytes) if i >= 24 => errors += usize::from(t.push(&bytes, pts).is_err()),
                Some(bytes) => {
                    let err = t.push(&bytes, pts).unwrap_err();
                    assert!(matches!(err, TranscodeError::Decode { pts: p, .. } if p == pts), "{err}");
                    errors += 1;
                }
                None => t.push(au, pts).unwrap(),
            }
        }
        assert!(errors >= 4);
        t.finish().unwrap();
        let packets: Vec<_> = std::iter::from_fn(|| t.pop()).collect();
        for pair in packets.windows(2) {
            assert!(pair[1].ts48k >= pair[0].ts48k + 960);
        }
        // After the corruption, the tone is back.
        let tail: Vec<_> = packets.iter().filter(|p| p.ts48k >= 48000).cloned().collect();
        assert_tone(&decode_opus(&tail, 1)[0][4800..38400], 440.0, 1000.0);
        // Absurd timestamps (hostile input) are no panic either.
        let mut t = AacToOpus::new(&aac.asc).unwrap();
        for (i, pts) in [u64::MAX - 5000, u64::MAX - 10, u64::MAX, 0].into_iter().enumerate() {
            let _ = t.push(&aac.aus[50 + i], pts);
        }
        t.finish().unwrap();
    }

    #[test]
    fn late_and_overlapping_access_units() {
        let src = sine(440, 48000, 1.0);
        let aac = ffmpeg_aac(&["-f", "lavfi", "-i", &src], 1);
        let mut t = AacToOpus::new(&aac.asc).unwrap();
        for (i, au) in aac.aus[..30].iter().enumerate() {
            t.push(au, i as u64 * 1024).unwrap();
        }
        // A replayed AU wholly in the past is refused.
        let err = t.push(&aac.aus[3], 3 * 1024).unwrap_err();
        assert!(matches!(err, TranscodeError::Late { pts: 3072, .. }), "{err}");
        // One overlapping by half an AU: the overlap is dropped, time stays monotonic.
        t.push(&aac.aus[30], 30 * 1024 - 512).unwrap();
        t.push(&aac.aus[31], 31 * 1024 - 512).unwrap();
        t.finish().unwrap();
        let packets: Vec<_> = std::iter::from_fn(|| t.pop()).collect();
        assert_continuous(&packets);
        assert_eq!(packets.len(), (32 * 1024 - 512usize).div_ceil(960));
    }

    #[test]
    fn bad_and_unsupported_configs_are_refused() {
        let bad = |asc: &[u8]| matches!(AacToOpus::new(asc), Err(TranscodeError::BadConfig { .. }));
        let unsupported = |asc: &[u8]| matches!(AacToOpus::new(asc), Err(TranscodeError::Unsupported(_)));
        assert_eq!(asc(2, 4, None, 1, false), [0x12, 0x08]);
        assert!(bad(&[]));
        assert!(bad(&[0x12]));
        assert!(bad(&asc(0, 4, None, 1, false))); // object type 0
        assert!(bad(&asc(2, 13, None, 1, false))); // sampling frequency index 13: reserved
        assert!(bad(&asc(2, 15, Some(500), 1, false))); // explicit 500 Hz
        assert!(bad(&asc(2, 15, Some(500), 1, false)[..3])); // explicit rate, truncated
        assert!(bad(&asc(2, 4, None, 8, false))); // reserved channel configuration
        assert!(unsupported(&asc(5, 7, None, 2, false))); // HE-AAC: SBR on a 22.05 kHz core
        assert!(unsupported(&asc(29, 7, None, 1, false))); // HE-AACv2: PS
        assert!(unsupported(&asc(1, 4, None, 2, false))); // AAC Main
        assert!(unsupported(&asc(2, 3, None, 6, false))); // 5.1
        assert!(unsupported(&asc(2, 3, None, 0, false))); // program config element
        assert!(unsupported(&asc(2, 3, None, 2, true))); // 960-sample frames
        let ok = |asc: &[u8]| AacToOpus::new(asc).map(|t| (t.sample_rate(), t.channels())).unwrap();
        assert_eq!(ok(&asc(2, 3, None, 2, false)), (48000, 2));
        assert_eq!(ok(&asc(2, 11, None, 1, false)), (8000, 1));
        assert_eq!(ok(&asc(2, 0, None, 2, false)), (96000, 2));
        assert_eq!(ok(&asc(2, 15, Some(32000), 1, false)), (32000, 1));
    }

    /// Micro-benchmark: 10 s of 44.1 kHz stereo AAC. Run in release for a meaningful figure:
    /// `cargo test --release -p sluice-actors transcode -- --nocapture`.
    #[test]
    fn transcode_speed_10s_44k1_stereo() {
        let aac = stereo_aac(440, 660, 44100, 10.0);
        let started = Instant::now();
        let (_, packets) = transcode(&aac);
        let took = started.elapsed();
        assert!((500..=505).contains(&packets.len()), "{}", packets.len());
        let bytes: usize = packets.iter().map(|p| p.data.len()).sum();
        eprintln!(
            "transcode bench: 10 s of 44.1 kHz stereo AAC -> {} Opus packets ({} kb/s) in {:.1} ms ({:.0}x real time)",
            packets.len(),
            bytes * 8 / 10_000,
            took.as_secs_f64() * 1000.0,
            10.0 / took.as_secs_f64()
        );
    }
}

// ---- Opus → AAC (RTMP re-publishing) -------------------------------------------------------

/// AAC bitrate of re-published audio (bits/s, stereo): what YouTube and Twitch recommend.
pub const AAC_BITRATE: u32 = 128_000;
/// A hole in the Opus timeline up to this long (48 kHz units: 1 s) is filled with silence, so
/// the AAC stays continuous (DTX, lost packets); a longer one shifts the output timestamps
/// instead of encoding seconds of silence at once.
pub const MAX_SILENCE_FILL: u64 = OPUS_RATE as u64;
/// Longest Opus packet (120 ms at 48 kHz), per channel.
const MAX_OPUS_FRAME: usize = 5760;

/// One raw AAC access unit (1024 samples per channel) and the time of its first decoded sample
/// in 48 kHz units, on the Opus input's clock. It is negative for the first access units: they
/// start with the encoder's priming samples ([`OpusToAac::delay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    pub data: Vec<u8>,
    pub ts48k: i64,
}

/// Decodes Opus (48 kHz, what WebRTC carries) and re-encodes it as 48 kHz stereo AAC-LC. 48 kHz
/// is an AAC rate, so nothing is resampled. Sans-IO: push Opus packets with their RTP
/// timestamps in, pull AAC access units out. Each push costs one Opus decode and at most one
/// AAC encode of 20 ms of audio.
///
/// ## Timestamps
/// Samples are counted: the AAC access unit `k` starts `k * 1024 - delay` samples after the
/// first packet's timestamp. A packet ahead of where the audio reached by up to
/// [`MAX_SILENCE_FILL`] has the hole filled with silence (browsers' DTX, lost packets); a longer
/// hole shifts the timestamps of what follows. A packet behind (jitter, a repeat) is taken as
/// continuous: the sample count rules.
pub struct OpusToAac {
    decoder: crate::opus::Decoder,
    encoder: crate::aac::Encoder,
    /// Decoded samples, interleaved stereo, not yet encoded.
    pending: Vec<i16>,
    /// Decode buffer (interleaved f32).
    pcm: Vec<f32>,
    /// Timestamp (48 kHz) of sample 0 of the encoder's input; `None` before the first packet.
    origin: Option<i64>,
    /// Samples per channel handed to the encoder or `pending` so far.
    samples_in: u64,
    /// Access units produced so far.
    produced: u64,
    out: std::collections::VecDeque<AacFrame>,
}

impl OpusToAac {
    pub fn new() -> Result<Self, TranscodeError> {
        let decoder = crate::opus::Decoder::new(OPUS_RATE, crate::opus::Channels::Stereo)
            .map_err(|e| TranscodeError::Unsupported(format!("opus decoder: {e}")))?;
        let encoder = crate::aac::Encoder::new(OPUS_RATE, 2, AAC_BITRATE)
            .map_err(|e| TranscodeError::Unsupported(e.to_string()))?;
        Ok(OpusToAac {
            decoder,
            encoder,
            pending: Vec::with_capacity(crate::aac::FRAME_SAMPLES * 4),
            pcm: vec![0.0; MAX_OPUS_FRAME * 2],
            origin: None,
            samples_in: 0,
            produced: 0,
            out: Default::default(),
        })
    }

    /// The AudioSpecificConfig of the output (AAC-LC, 48 kHz, stereo: `11 90`).
    pub fn audio_specific_config(&self) -> &[u8] {
        self.encoder.audio_specific_config()
    }

    /// Samples (48 kHz) the encoder delays its input by.
    pub fn delay(&self) -> u32 {
        self.encoder.delay()
    }

    /// One Opus packet whose first sample is at `ts48k` (its RTP timestamp). An error concerns
    /// this packet alone (it does not decode, or the encoder failed on a frame): the next push
    /// carries on, the hole filled as any gap.
    pub fn push(&mut self, opus: &[u8], ts48k: u64) -> Result<(), TranscodeError> {
        let ts = i64::try_from(ts48k).unwrap_or(i64::MAX);
        let origin = *self.origin.get_or_insert(ts);
        let reached = origin.saturating_add(self.samples_in as i64);
        let ahead = ts.saturating_sub(reached);
        if ahead > 0 && ahead as u64 > MAX_SILENCE_FILL {
            // A long pause: what follows is stamped where it belongs, no silence encoded.
            self.origin = Some(origin.saturating_add(ahead));
        } else if ahead > (OPUS_RATE as i64) * PTS_TOLERANCE_MS as i64 / 1000 {
            let fill = ahead as usize * 2;
            self.pending.resize(self.pending.len() + fill, 0);
            self.samples_in += ahead as u64;
            self.encode_pending()?;
        }
        let n = self.decoder.decode_float(opus, &mut self.pcm).map_err(|e| TranscodeError::Decode {
            pts: ts48k,
            len: opus.len(),
            reason: e.to_string(),
        })?;
        self.pending.extend(self.pcm[..n * 2].iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16));
        self.samples_in += n as u64;
        self.encode_pending()
    }

    /// Next AAC access unit, in order.
    pub fn pop(&mut self) -> Option<AacFrame> {
        self.out.pop_front()
    }

    fn encode_pending(&mut self) -> Result<(), TranscodeError> {
        let frame = crate::aac::FRAME_SAMPLES * 2;
        let mut at = 0;
        let mut result = Ok(());
        while self.pending.len() - at >= frame {
            let chunk = &self.pending[at..at + frame];
            at += frame;
            match self.encoder.encode(chunk) {
                Ok(Some(data)) => {
                    let origin = self.origin.unwrap_or(0);
                    let start = (self.produced * crate::aac::FRAME_SAMPLES as u64) as i64;
                    let ts48k = origin.saturating_add(start) - i64::from(self.encoder.delay());
                    self.produced += 1;
                    self.out.push_back(AacFrame { data, ts48k });
                }
                Ok(None) => {}
                Err(e) => {
                    result = Err(TranscodeError::Unsupported(e.to_string()));
                }
            }
        }
        self.pending.drain(..at);
        result
    }
}

#[cfg(test)]
mod opus_to_aac_tests {
    use super::*;

    /// A tone through Opus, then [`OpusToAac`]; the AAC decodes (symphonia) to the same tone.
    #[test]
    fn a_tone_comes_out_as_aac_of_the_same_frequency() {
        let freq = 1000.0f32;
        let mut enc = crate::opus::Encoder::new(48_000, crate::opus::Channels::Stereo).unwrap();
        enc.set_bitrate(64_000).unwrap();
        let mut tc = OpusToAac::new().unwrap();
        assert_eq!(tc.audio_specific_config(), &[0x11, 0x90]);
        let mut buf = vec![0u8; 4000];
        let mut aus = Vec::new();
        let base = 123_456u64;
        for f in 0..150u64 {
            let pcm: Vec<f32> = (0..960 * 2)
                .map(|i| {
                    let t = (f as usize * 960 + i / 2) as f32 / 48_000.0;
                    (t * 2.0 * std::f32::consts::PI * freq).sin() * 0.5
                })
                .collect();
            let n = enc.encode_float(&pcm, &mut buf).unwrap();
            tc.push(&buf[..n], base + f * 960).unwrap();
            aus.extend(std::iter::from_fn(|| tc.pop()));
        }
        // 150 * 960 samples = 140.6 AUs, less the encoder's look-ahead.
        assert!(aus.len() >= 135, "{} access units", aus.len());
        let delay = i64::from(tc.delay());
        for (k, au) in aus.iter().enumerate() {
            assert_eq!(au.ts48k, base as i64 + k as i64 * 1024 - delay);
        }
        let mut dec = new_decoder(&[0x11, 0x90]).unwrap();
        let mut left = Vec::new();
        let mut pcm = vec![Vec::new(); 2];
        for au in &aus {
            let packet = PacketRef::new(0, Timestamp::ZERO, Duration::new(AAC_FRAME_SAMPLES), &au.data);
            let buf = dec.decode_ref(&packet).unwrap();
            buf.copy_to_vecs_planar::<f32>(&mut pcm);
            left.extend_from_slice(&pcm[0]);
        }
        // Skip the first 0.2 s (priming, both codecs' start-up), then count zero crossings.
        let tail = &left[9600..];
        let crossings = tail.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        let secs = tail.len() as f32 / 48_000.0;
        let measured = crossings as f32 / 2.0 / secs;
        assert!((measured - freq).abs() < 10.0, "measured {measured} Hz");
        let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len() as f32).sqrt();
        assert!(rms > 0.25, "rms {rms}"); // a sine of amplitude 0.5: 0.354
    }

    #[test]
    fn gaps_are_filled_and_garbage_is_an_error() {
        let mut enc = crate::opus::Encoder::new(48_000, crate::opus::Channels::Stereo).unwrap();
        let mut tc = OpusToAac::new().unwrap();
        let mut buf = vec![0u8; 4000];
        let silence = vec![0f32; 1920];
        let n = enc.encode_float(&silence, &mut buf).unwrap();
        tc.push(&buf[..n], 0).unwrap();
        // 200 ms lost: filled with silence, so 10 + 1 packets' worth of samples went in.
        tc.push(&buf[..n], 960 * 11).unwrap();
        assert_eq!(tc.samples_in, 960 * 12);
        // A 10 s pause: stamped later, nothing filled.
        tc.push(&buf[..n], 960 * 12 + 480_000).unwrap();
        assert_eq!(tc.samples_in, 960 * 13);
        assert!(tc.push(&[0xff, 0xff, 0xff], 960 * 13 + 480_000).is_err() || tc.samples_in > 960 * 13);
        let _ = tc.push(&[], 0);
    }

    /// The cost of one stream's Opus → AAC: 60 s of stereo audio, timed. Run with
    /// `cargo test --release -p sluice-codecs opus_to_aac_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn opus_to_aac_cost() {
        let mut enc = crate::opus::Encoder::new(48_000, crate::opus::Channels::Stereo).unwrap();
        enc.set_bitrate(64_000).unwrap();
        let mut buf = vec![0u8; 4000];
        let packets: Vec<Vec<u8>> = (0..3000usize)
            .map(|f| {
                let pcm: Vec<f32> = (0..1920)
                    .map(|i| {
                        ((f * 960 + i / 2) as f32 * 0.0654).sin() * 0.3 + ((i * 7919) % 13) as f32 * 0.001
                    })
                    .collect();
                let n = enc.encode_float(&pcm, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect();
        let mut tc = OpusToAac::new().unwrap();
        let t0 = std::time::Instant::now();
        let mut aus = 0;
        for (i, p) in packets.iter().enumerate() {
            tc.push(p, i as u64 * 960).unwrap();
            while tc.pop().is_some() {
                aus += 1;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "60 s of Opus -> {aus} AAC frames in {:.3} s: {:.2} % of one core per stream, {:.1} us per 20 ms packet",
            secs,
            secs / 60.0 * 100.0,
            secs / 3000.0 * 1e6
        );
    }
}
