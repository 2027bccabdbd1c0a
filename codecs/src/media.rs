//! Media frames as every part of the server sees them, and whether one is a keyframe, read from
//! its payload without decoding it (H.264 details in [`crate::h264`]). Pure code: no engine
//! types, so any source (a browser, an MP4 file, an RTMP encoder) produces the same frames and any
//! sink (a viewer, a recorder, a snapshot) reads them.

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

    /// The picture size a keyframe announces: the SPS of an H.264 access unit, the key frame
    /// header of VP8. `None` for other frames or when it does not parse.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        if !self.keyframe {
            return None;
        }
        match self.codec {
            Codec::H264 => crate::h264::annexb_nals(&self.data)
                .find(|n| n.first().is_some_and(|b| b & 0x1f == crate::h264::NAL_SPS))
                .and_then(crate::h264::sps_dimensions),
            Codec::Vp8 => vp8_dimensions(&self.data),
            Codec::Opus => None,
        }
    }
}

/// Width and height of a VP8 key frame (RFC 6386 §9.1: a 3-byte frame tag, the start code
/// 9d 01 2a, then 14-bit width and height, little-endian, under 2-bit scale fields).
pub fn vp8_dimensions(data: &[u8]) -> Option<(u32, u32)> {
    let d = data.get(..10)?;
    if d[0] & 0x01 != 0 || d[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([d[6], d[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([d[8], d[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
}

/// True if an Annex-B H.264 access unit holds an IDR slice, or a VP8 frame is a key frame (bit 0
/// of the first byte clear). Used where the engine gives no keyframe flag.
pub fn is_keyframe(data: &[u8], h264: bool) -> bool {
    if !h264 {
        return data.first().is_some_and(|b| b & 0x01 == 0);
    }
    crate::h264::annexb_nal_types(data).any(|t| t == crate::h264::NAL_IDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_idr() {
        let au = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88];
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
}

#[cfg(test)]
mod dimension_tests {
    use super::*;

    #[test]
    fn vp8_key_frame_header() {
        // Frame tag (key frame, show), start code, 640x480.
        let key = [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0x00];
        assert_eq!(vp8_dimensions(&key), Some((640, 480)));
        assert_eq!(vp8_dimensions(&key[..9]), None);
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(vp8_dimensions(&inter), None);
        let f = Frame {
            codec: Codec::Vp8,
            keyframe: true,
            rtp_time: 0,
            captured: Instant::now(),
            data: key.into(),
        };
        assert_eq!(f.dimensions(), Some((640, 480)));
    }
}
