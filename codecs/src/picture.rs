//! Decoding one picture of a stream and encoding it as an image. Pure code, no actix: the
//! snapshot worker calls it on a thread of its own, never on the media path.
//!
//! H.264 goes through openh264 (bundled C source): the held GOP (keyframe + frames since) is
//! decoded in order and the last picture is kept, so the snapshot shows the stream as it is now.
//! VP8 key frames are decoded with image-webp's pure-Rust VP8 decoder (a WebP lossy image is a
//! VP8 key frame); inter frames are not decoded, so a VP8 snapshot shows the last key frame, which
//! the fan-out keeps at most a few seconds old.

use std::io::Cursor;
use std::sync::Arc;

use image::{ImageFormat, RgbImage};
use openh264::formats::YUVSource;

use crate::media::{Codec, Frame};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PictureError {
    #[error("no decodable video frame")]
    NothingDecoded,
    #[error("decoder error: {0}")]
    Decoder(String),
    #[error("image encoding failed: {0}")]
    Encode(String),
}

/// Output format of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Png,
    Jpeg,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Some(Format::Png),
            "jpeg" | "jpg" => Some(Format::Jpeg),
            _ => None,
        }
    }
}

/// Decode the latest picture of a GOP (keyframe first, then the frames since, in order).
pub fn decode_latest(gop: &[Arc<Frame>]) -> Result<RgbImage, PictureError> {
    let first = gop.first().ok_or(PictureError::NothingDecoded)?;
    match first.codec {
        Codec::H264 => decode_h264(gop),
        Codec::Vp8 => {
            // The newest key frame in the GOP (normally the first).
            let key = gop.iter().rev().find(|f| f.keyframe).ok_or(PictureError::NothingDecoded)?;
            decode_vp8_key(&key.data)
        }
        Codec::Opus => Err(PictureError::NothingDecoded),
    }
}

fn decode_h264(gop: &[Arc<Frame>]) -> Result<RgbImage, PictureError> {
    let mut decoder = openh264::decoder::Decoder::new().map_err(|e| PictureError::Decoder(e.to_string()))?;
    let mut last: Option<RgbImage> = None;
    let mut last_err = None;
    let n = gop.len();
    for (i, f) in gop.iter().enumerate().filter(|(_, f)| f.codec == Codec::H264) {
        match decoder.decode(&f.data) {
            // Converting to RGB costs a few ms; do it only for the newest picture.
            Ok(Some(yuv)) if i + 1 == n => last = Some(yuv_to_image(&yuv)?),
            Ok(Some(_)) => {}
            Ok(None) => {}
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    if last.is_none() {
        // The newest frame gave no picture yet (decoder delay): drain what is buffered.
        if let Ok(rest) = decoder.flush_remaining() {
            if let Some(yuv) = rest.last() {
                last = Some(yuv_to_image(yuv)?);
            }
        }
    }
    match (last, last_err) {
        (Some(img), _) => Ok(img),
        (None, Some(e)) => Err(PictureError::Decoder(e)),
        (None, None) => Err(PictureError::NothingDecoded),
    }
}

fn yuv_to_image(yuv: &impl YUVSource) -> Result<RgbImage, PictureError> {
    let (w, h) = yuv.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    let (ys, us, vs) = yuv.strides();
    yuv420_to_rgb(yuv.y(), ys, yuv.u(), us, yuv.v(), vs, w, h, &mut rgb);
    RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| PictureError::Decoder("bad picture size".into()))
}

fn decode_vp8_key(data: &[u8]) -> Result<RgbImage, PictureError> {
    let frame = image_webp::vp8::Vp8Decoder::decode_frame(Cursor::new(data))
        .map_err(|e| PictureError::Decoder(e.to_string()))?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    if w == 0 || h == 0 {
        return Err(PictureError::NothingDecoded);
    }
    // The decoder keeps planes padded to whole macroblocks.
    let ys = w.div_ceil(16) * 16;
    let cs = ys / 2;
    if frame.ybuf.len() < ys * h
        || frame.ubuf.len() < cs * h.div_ceil(2)
        || frame.vbuf.len() < cs * h.div_ceil(2)
    {
        return Err(PictureError::Decoder("VP8 planes shorter than the picture".into()));
    }
    let mut rgb = vec![0u8; w * h * 3];
    yuv420_to_rgb(&frame.ybuf, ys, &frame.ubuf, cs, &frame.vbuf, cs, w, h, &mut rgb);
    RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| PictureError::Decoder("bad picture size".into()))
}

/// BT.601 limited-range YUV 4:2:0 to RGB, as browsers and ffmpeg show camera video.
#[allow(clippy::too_many_arguments)]
pub fn yuv420_to_rgb(
    y: &[u8],
    ys: usize,
    u: &[u8],
    us: usize,
    v: &[u8],
    vs: usize,
    w: usize,
    h: usize,
    out: &mut [u8],
) {
    for row in 0..h {
        for col in 0..w {
            let yy = y.get(row * ys + col).copied().unwrap_or(16) as i32 - 16;
            let uu = u.get((row / 2) * us + col / 2).copied().unwrap_or(128) as i32 - 128;
            let vv = v.get((row / 2) * vs + col / 2).copied().unwrap_or(128) as i32 - 128;
            let c = 298 * yy;
            let r = (c + 409 * vv + 128) >> 8;
            let g = (c - 100 * uu - 208 * vv + 128) >> 8;
            let b = (c + 516 * uu + 128) >> 8;
            let o = (row * w + col) * 3;
            out[o] = r.clamp(0, 255) as u8;
            out[o + 1] = g.clamp(0, 255) as u8;
            out[o + 2] = b.clamp(0, 255) as u8;
        }
    }
}

/// Scale to fit `width` x `height` (either may be 0: keep the aspect ratio), then encode.
pub fn encode(img: &RgbImage, format: Format, width: u32, height: u32) -> Result<Vec<u8>, PictureError> {
    let scaled = match (width, height) {
        (0, 0) => None,
        (w, h) => {
            let (iw, ih) = img.dimensions();
            let (w, h) = match (w, h) {
                (0, h) => ((iw as u64 * h as u64 / ih.max(1) as u64).max(1) as u32, h),
                (w, 0) => (w, (ih as u64 * w as u64 / iw.max(1) as u64).max(1) as u32),
                wh => wh,
            };
            Some(image::imageops::resize(
                img,
                w.min(8192),
                h.min(8192),
                image::imageops::FilterType::Triangle,
            ))
        }
    };
    let img = scaled.as_ref().unwrap_or(img);
    let mut out = Cursor::new(Vec::new());
    let fmt = match format {
        Format::Png => ImageFormat::Png,
        Format::Jpeg => ImageFormat::Jpeg,
    };
    img.write_to(&mut out, fmt).map_err(|e| PictureError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn frame(codec: Codec, key: bool, data: Vec<u8>) -> Arc<Frame> {
        Arc::new(Frame { codec, keyframe: key, rtp_time: 0, captured: Instant::now(), data: data.into() })
    }

    #[test]
    fn h264_round_trip_through_openh264() {
        // Encode a known picture with openh264's encoder, decode it back through our path.
        use openh264::encoder::Encoder;
        use openh264::formats::{RgbSliceU8, YUVBuffer};
        let (w, h) = (64usize, 48usize);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [((i % w) * 4) as u8, ((i / w) * 5) as u8, 128]).collect();
        let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (w, h)));
        let mut enc = Encoder::new().unwrap();
        let bits = enc.encode(&yuv).unwrap().to_vec();
        let img = decode_latest(&[frame(Codec::H264, true, bits)]).unwrap();
        assert_eq!(img.dimensions(), (w as u32, h as u32));
        let px = img.get_pixel(40, 30);
        assert!((px[0] as i32 - 160).abs() < 24 && (px[1] as i32 - 150).abs() < 24, "{px:?}");
        let png = encode(&img, Format::Png, 0, 0).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let small = image::load_from_memory(&encode(&img, Format::Jpeg, 32, 0).unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (32, 24));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [vec![], vec![0, 0, 0, 1, 0x65], vec![0xff; 300]] {
            assert!(decode_latest(&[frame(Codec::H264, true, data.clone())]).is_err());
            assert!(decode_latest(&[frame(Codec::Vp8, true, data)]).is_err());
        }
        assert_eq!(decode_latest(&[]), Err(PictureError::NothingDecoded));
    }
}
