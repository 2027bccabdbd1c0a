//! Media frames as every part of the server sees them, and codec facts read from payloads
//! without decoding them. Pure code: no engine types, so any source (a browser, an MP4 file, an
//! RTMP encoder) produces the same frames and any sink (a viewer, a recorder, a snapshot) reads them.

use std::sync::Arc;
use std::time::Instant;

/// Codecs the server carries. Video is passed through as sent; audio is Opus on the WebRTC side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    Vp8,
    Opus,
}

impl Codec {
    /// RTP clock rate: 90 kHz for video, 48 kHz for Opus.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::H264 | Codec::Vp8 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    pub fn kind(self) -> FrameKind {
        match self {
            Codec::H264 | Codec::Vp8 => FrameKind::Video,
            Codec::Opus => FrameKind::Audio,
        }
    }

    /// The name WCS uses in stream objects (`videoCodec`, `audioCodec`).
    pub fn wcs_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
            Codec::Opus => "opus",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Audio,
    Video,
}

/// One media frame: an H.264 access unit (Annex-B), a VP8 frame or an Opus packet.
/// Shared by reference (`Arc<Frame>`) among every sink of a stream.
#[derive(Debug, Clone)]
pub struct Frame {
    pub codec: Codec,
    pub keyframe: bool,
    /// Presentation time in the codec's clock ([`Codec::clock_rate`]), continuous per stream.
    pub rtp_time: u64,
    /// When the frame arrived (or, for file sources, when it is due).
    pub captured: Instant,
    pub data: Arc<[u8]>,
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        self.codec.kind()
    }
}

/// True if an Annex-B H.264 access unit holds an IDR slice (NAL type 5), or a VP8 frame is a
/// key frame (bit 0 of the first byte clear). Used where the engine gives no keyframe flag.
pub fn is_keyframe(data: &[u8], h264: bool) -> bool {
    if !h264 {
        return data.first().is_some_and(|b| b & 0x01 == 0);
    }
    annexb_nal_types(data).any(|t| t == 5)
}

/// NAL unit types of an Annex-B byte stream (start codes 00 00 01 or 00 00 00 01).
pub fn annexb_nal_types(data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + 3 < data.len() {
            if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                let t = data[i + 3] & 0x1f;
                i += 3;
                return Some(t);
            }
            i += 1;
        }
        None
    })
}

/// Picture size from an H.264 SPS NAL unit (header byte included): enough of the SPS is parsed to
/// reach the frame size and cropping. `None` if it does not parse.
pub fn h264_sps_dimensions(sps_nal: &[u8]) -> Option<(u32, u32)> {
    let rbsp = unescape(sps_nal.get(1..)?);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bits(1)? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bits(1)? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_map_units = r.ue()? + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bits(1)? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
            (1, false) => (2, 2),
            (2, false) => (2, 1),
            _ => (1, 1),
        };
        crop_x = (left + right).checked_mul(sub_w)?;
        crop_y = (top + bottom).checked_mul(sub_h * (2 - frame_mbs_only))?;
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = (height_map_units * 16 * (2 - frame_mbs_only)).checked_sub(crop_y)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// An MSB-first bit reader with Exp-Golomb codes (H.264 SPS, AAC AudioSpecificConfig).
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u64> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u64::from(b))
    }

    pub(crate) fn bits(&mut self, n: u32) -> Option<u64> {
        (0..n).try_fold(0, |acc, _| Some(acc << 1 | self.bit()?))
    }

    pub(crate) fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.bits(zeros)?)
    }

    pub(crate) fn se(&mut self) -> Option<i64> {
        let k = self.ue()? as i64;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Remove emulation-prevention bytes (00 00 03 -> 00 00).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_idr_after_sps_pps() {
        let au = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88];
        assert_eq!(annexb_nal_types(&au).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert!(is_keyframe(&au, true));
        assert!(!is_keyframe(&[0, 0, 1, 0x41, 0x9a], true));
        assert!(!is_keyframe(&[], true));
    }

    #[test]
    fn vp8_key_bit() {
        assert!(is_keyframe(&[0x10, 0x02], false));
        assert!(!is_keyframe(&[0x11], false));
        assert!(!is_keyframe(&[], false));
    }

    #[test]
    fn sps_dimensions() {
        assert_eq!(h264_sps_dimensions(crate::fmp4::tests::SPS_640X360), Some((640, 360)));
        // Garbage (the synthetic test SPS) gives None, never a panic.
        assert_eq!(h264_sps_dimensions(&[0x67, 0x80, 0x81, 0x82]), None);
        assert_eq!(h264_sps_dimensions(&[0x67]), None);
        for n in 0..=255u8 {
            let _ = h264_sps_dimensions(&[0x67, n, n, n, n, 0xff, n, 0, 0, 3, n]);
        }
    }
}
