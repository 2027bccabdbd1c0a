//! AAC-LC encoding: the one module that calls into the AAC encoder library.
//!
//! The library is the Fraunhofer FDK AAC encoder through the `fdk-aac` crate, whose `-sys` crate
//! bundles the C++ source and builds it with the `cc` crate: no system library, no pkg-config,
//! no cmake (a C++ compiler is already needed for openh264). This module wraps the few calls we
//! make in one safe type that owns its state; [`crate::transcode::OpusToAac`] drives it.
//!
//! Output is raw AAC (no ADTS header): one access unit per [`Encoder::encode`] of
//! [`FRAME_SAMPLES`] samples per channel, as FLV/RTMP and MP4 carry AAC, with the
//! AudioSpecificConfig from [`Encoder::audio_specific_config`].

use fdk_aac::enc as fdk;

/// Samples per channel in one AAC-LC access unit.
pub const FRAME_SAMPLES: usize = 1024;
/// Room for one encoded access unit: AAC-LC caps a frame at 6144 bits per channel.
const MAX_AU: usize = 6144 / 8 * 2 + 64;

/// The encoder refused a setting or failed on a frame (the library's own message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AAC encoder: {0}")]
pub struct Error(pub String);

fn err(e: fdk::EncoderError) -> Error {
    Error(e.to_string())
}

/// An AAC-LC encoder for interleaved 16-bit PCM, 1 or 2 channels.
pub struct Encoder {
    inner: fdk::Encoder,
    channels: usize,
    asc: Vec<u8>,
    delay: u32,
    out: Vec<u8>,
}

impl Encoder {
    /// AAC-LC at `rate` Hz (8000 to 96000), `channels` 1 or 2, constant `bitrate` in bits/s.
    pub fn new(rate: u32, channels: u8, bitrate: u32) -> Result<Self, Error> {
        let mode = match channels {
            1 => fdk::ChannelMode::Mono,
            2 => fdk::ChannelMode::Stereo,
            n => return Err(Error(format!("{n} channels (1 or 2 only)"))),
        };
        let inner = fdk::Encoder::new(fdk::EncoderParams {
            bit_rate: fdk::BitRate::Cbr(bitrate),
            sample_rate: rate,
            transport: fdk::Transport::Raw,
            channels: mode,
            audio_object_type: fdk::AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(err)?;
        let info = inner.info().map_err(err)?;
        if info.frameLength as usize != FRAME_SAMPLES {
            return Err(Error(format!("unexpected frame length {}", info.frameLength)));
        }
        let asc_len = (info.confSize as usize).min(info.confBuf.len());
        let asc = info.confBuf[..asc_len].to_vec();
        if asc.len() < 2 {
            return Err(Error("no AudioSpecificConfig".into()));
        }
        Ok(Encoder { inner, channels: channels as usize, asc, delay: info.nDelay, out: vec![0; MAX_AU] })
    }

    /// The AudioSpecificConfig (ISO 14496-3 §1.6.2.1) of the stream: the FLV AAC sequence
    /// header's payload, an MP4 `esds`'s decoder specific info.
    pub fn audio_specific_config(&self) -> &[u8] {
        &self.asc
    }

    /// Samples (per channel) the encoder delays its input by: the first access units decode to
    /// that much priming silence.
    pub fn delay(&self) -> u32 {
        self.delay
    }

    /// Encode one frame of interleaved samples ([`FRAME_SAMPLES`] per channel). Returns the
    /// access unit it completed, if any (none while the encoder fills its look-ahead).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<Vec<u8>>, Error> {
        if pcm.len() != FRAME_SAMPLES * self.channels {
            return Err(Error(format!("{} samples, want {}", pcm.len(), FRAME_SAMPLES * self.channels)));
        }
        let mut input = pcm;
        let mut au = None;
        // The encoder takes a whole frame in one call; loop defensively should it take less.
        for _ in 0..4 {
            let r = self.inner.encode(input, &mut self.out).map_err(err)?;
            if r.output_size > 0 && au.is_none() {
                au = Some(self.out[..r.output_size.min(self.out.len())].to_vec());
            }
            input = &input[r.input_consumed.min(input.len())..];
            if input.is_empty() || r.input_consumed == 0 {
                break;
            }
        }
        Ok(au)
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aac::Encoder").field("channels", &self.channels).field("asc", &self.asc).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_raw_access_units() {
        let mut enc = Encoder::new(48_000, 2, 96_000).unwrap();
        // AAC-LC (2), 48 kHz (index 3), 2 channels: 0001 0|001 1|001 0|000 = 0x11 0x90.
        assert_eq!(enc.audio_specific_config(), &[0x11, 0x90]);
        assert!(enc.delay() > 0);
        let mut aus = 0;
        for f in 0..50 {
            let pcm: Vec<i16> = (0..FRAME_SAMPLES * 2)
                .map(|i| {
                    let t = (f * FRAME_SAMPLES + i / 2) as f32 / 48_000.0;
                    ((t * 2.0 * std::f32::consts::PI * 1000.0).sin() * 8000.0) as i16
                })
                .collect();
            if let Some(au) = enc.encode(&pcm).unwrap() {
                assert!(!au.is_empty() && au.len() < MAX_AU);
                aus += 1;
            }
        }
        assert!(aus >= 45, "{aus} access units from 50 frames");
        assert!(enc.encode(&[0; 10]).is_err());
        assert!(Encoder::new(48_000, 3, 96_000).is_err());
    }
}
