//! Codec facts read from frame payloads without decoding them. Pure code.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_idr_after_sps_pps() {
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88,
        ];
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
}
