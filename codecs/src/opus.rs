//! Opus encoding and decoding: the one module that calls into the Opus library.
//!
//! The library is `unsafe-libopus`, the reference libopus (1.3.1) translated to Rust: the build
//! needs no system library, no pkg-config and no cmake (the `opus` crate's `audiopus_sys` needs
//! one of them). Its API is libopus's C API; this module wraps the few calls we make in safe
//! types that own their state and free it on drop.

use std::ptr::NonNull;

use unsafe_libopus as lib;

/// A libopus error code, with libopus's own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(i32);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self.0 {
            lib::OPUS_BAD_ARG => "invalid argument",
            lib::OPUS_BUFFER_TOO_SMALL => "buffer too small",
            lib::OPUS_INTERNAL_ERROR => "internal error",
            lib::OPUS_INVALID_PACKET => "corrupted packet",
            lib::OPUS_UNIMPLEMENTED => "not implemented",
            lib::OPUS_INVALID_STATE => "invalid state",
            lib::OPUS_ALLOC_FAIL => "memory allocation failed",
            _ => "unknown error",
        };
        write!(f, "libopus: {text} ({})", self.0)
    }
}

impl std::error::Error for Error {}

fn check(code: i32) -> Result<i32, Error> {
    if code < 0 {
        Err(Error(code))
    } else {
        Ok(code)
    }
}

/// Mono or stereo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Mono = 1,
    Stereo = 2,
}

/// An Opus encoder for general audio (`OPUS_APPLICATION_AUDIO`).
pub struct Encoder {
    st: NonNull<lib::OpusEncoder>,
    channels: usize,
}

// SAFETY: the encoder state is plain memory owned by this value alone; libopus keeps no
// thread-local or global state for it.
unsafe impl Send for Encoder {}

impl Encoder {
    /// `rate`: 8000, 12000, 16000, 24000 or 48000.
    pub fn new(rate: u32, channels: Channels) -> Result<Self, Error> {
        let rate = i32::try_from(rate).map_err(|_| Error(lib::OPUS_BAD_ARG))?;
        let mut err = 0i32;
        // SAFETY: arguments are checked by libopus; a null return comes with an error code.
        let st =
            unsafe { lib::opus_encoder_create(rate, channels as i32, lib::OPUS_APPLICATION_AUDIO, &mut err) };
        check(err)?;
        let st = NonNull::new(st).ok_or(Error(lib::OPUS_ALLOC_FAIL))?;
        Ok(Encoder { st, channels: channels as usize })
    }

    pub fn set_bitrate(&mut self, bits_per_second: i32) -> Result<(), Error> {
        // SAFETY: `st` is a live encoder; the request takes one i32.
        let r = unsafe {
            lib::opus_encoder_ctl_impl(
                self.st.as_ptr(),
                lib::OPUS_SET_BITRATE_REQUEST,
                lib::varargs!(bits_per_second),
            )
        };
        check(r).map(|_| ())
    }

    /// Samples (per channel) the encoder delays its input by.
    pub fn lookahead(&mut self) -> Result<u32, Error> {
        let mut v = 0i32;
        // SAFETY: `st` is a live encoder; the request writes one i32 through the reference.
        let r = unsafe {
            lib::opus_encoder_ctl_impl(
                self.st.as_ptr(),
                lib::OPUS_GET_LOOKAHEAD_REQUEST,
                lib::varargs!(&mut v),
            )
        };
        check(r)?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// Encodes one frame of interleaved samples (2.5 to 60 ms) into `out`; returns the packet
    /// length.
    pub fn encode_float(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, Error> {
        let frame = pcm.len() / self.channels;
        let frame = i32::try_from(frame).map_err(|_| Error(lib::OPUS_BAD_ARG))?;
        let cap = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: `pcm` holds `frame * channels` samples, `out` has `cap` writable bytes.
        let n =
            unsafe { lib::opus_encode_float(self.st.as_ptr(), pcm.as_ptr(), frame, out.as_mut_ptr(), cap) };
        check(n).map(|n| n as usize)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { lib::opus_encoder_destroy(self.st.as_ptr()) }
    }
}

/// An Opus decoder (tests check what the encoder produced).
pub struct Decoder {
    st: NonNull<lib::OpusDecoder>,
    channels: usize,
}

// SAFETY: as for `Encoder`.
unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new(rate: u32, channels: Channels) -> Result<Self, Error> {
        let rate = i32::try_from(rate).map_err(|_| Error(lib::OPUS_BAD_ARG))?;
        let mut err = 0i32;
        // SAFETY: arguments are checked by libopus; a null return comes with an error code.
        let st = unsafe { lib::opus_decoder_create(rate, channels as i32, &mut err) };
        check(err)?;
        let st = NonNull::new(st).ok_or(Error(lib::OPUS_ALLOC_FAIL))?;
        Ok(Decoder { st, channels: channels as usize })
    }

    /// Decodes one packet into interleaved samples; returns the samples per channel.
    pub fn decode_float(&mut self, packet: &[u8], pcm: &mut [f32]) -> Result<usize, Error> {
        let len = i32::try_from(packet.len()).map_err(|_| Error(lib::OPUS_BAD_ARG))?;
        let frame = i32::try_from(pcm.len() / self.channels).unwrap_or(i32::MAX);
        // SAFETY: `packet` has `len` bytes, `pcm` room for `frame * channels` samples.
        let n = unsafe {
            lib::opus_decode_float(self.st.as_ptr(), packet.as_ptr(), len, pcm.as_mut_ptr(), frame, 0)
        };
        check(n).map(|n| n as usize)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { lib::opus_decoder_destroy(self.st.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_survives_encode_and_decode() {
        let mut enc = Encoder::new(48000, Channels::Mono).unwrap();
        enc.set_bitrate(64_000).unwrap();
        assert!(enc.lookahead().unwrap() > 0);
        let mut dec = Decoder::new(48000, Channels::Mono).unwrap();
        let mut out = vec![0u8; 4000];
        let mut pcm = vec![0f32; 960];
        let mut energy = 0.0f32;
        for f in 0..20 {
            let frame: Vec<f32> = (0..960)
                .map(|i| (((f * 960 + i) as f32) * 2.0 * std::f32::consts::PI * 440.0 / 48000.0).sin() * 0.5)
                .collect();
            let n = enc.encode_float(&frame, &mut out).unwrap();
            assert!(n > 10 && n < 1000);
            assert_eq!(dec.decode_float(&out[..n], &mut pcm).unwrap(), 960);
            if f > 5 {
                energy += pcm.iter().map(|s| s * s).sum::<f32>() / 960.0;
            }
        }
        // A sine of amplitude 0.5 has a mean square of 0.125.
        assert!(energy / 14.0 > 0.08, "energy {}", energy / 14.0);
        // Garbage decodes to an error or to concealment, never a panic.
        let _ = dec.decode_float(&[0xff; 3], &mut pcm);
        assert!(Encoder::new(44100, Channels::Stereo).is_err());
    }
}
