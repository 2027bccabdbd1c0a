//! What re-encoding B-frame video costs (issue 22): per transcoded stream, openh264 decode and
//! encode time per frame, the share of one core a 30 fps stream takes, the delay the transcoder
//! adds (frames in before the first frame out, and the wall time of one frame), and the quality
//! of the output against the source's own decode (luma PSNR). Test media is made by ffmpeg.
//!
//! `cargo bench -p sluice-codecs --bench video_transcode` (figures in BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::formats::YUVBuffer;
use openh264::OpenH264API;
use sluice_codecs::h264;
use sluice_codecs::media::{Codec, Frame};
use sluice_codecs::mp4_reader::{self, TrackKind, VideoSetup};
use sluice_codecs::video_transcode::{psnr_y, TranscodeSettings, VideoTranscoder};

fn clip(size: &str, seconds: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-bench-vt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join(format!("{size}.mp4"));
    let ok = std::process::Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30"))
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-profile:v", "high", "-bf", "3"])
        .args(["-pix_fmt", "yuv420p", "-an"])
        .arg(&out)
        .status()
        .expect("ffmpeg (Debian package ffmpeg)")
        .success();
    assert!(ok, "ffmpeg failed");
    out
}

fn frames_of(path: &Path) -> Vec<Frame> {
    let (idx, mut f) = mp4_reader::open(path).expect("index");
    let Some(VideoSetup::H264 { sps, pps, length_size }) = &idx.video else { panic!("no H.264") };
    let t0 = Instant::now();
    idx.samples
        .iter()
        .filter(|s| s.track == TrackKind::Video)
        .map(|s| {
            let data = mp4_reader::read_sample(&mut f, s).expect("sample");
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

/// Packed I420 copies of decoded pictures, in output order.
fn decode_all(frames: &[Frame], timed: &mut Duration) -> Vec<(Vec<u8>, usize, usize)> {
    let mut dec = Decoder::with_api_config(
        OpenH264API::from_source(),
        DecoderConfig::new().flush_after_decode(Flush::NoFlush),
    )
    .expect("decoder");
    let mut out = Vec::new();
    let mut keep = |y: &openh264::decoder::DecodedYUV<'_>| {
        use openh264::formats::YUVSource;
        let (w, h) = y.dimensions();
        let (ys, us, vs) = y.strides();
        let mut v = Vec::with_capacity(w * h * 3 / 2);
        (0..h).for_each(|r| v.extend_from_slice(&y.y()[r * ys..r * ys + w]));
        (0..h / 2).for_each(|r| v.extend_from_slice(&y.u()[r * us..r * us + w / 2]));
        (0..h / 2).for_each(|r| v.extend_from_slice(&y.v()[r * vs..r * vs + w / 2]));
        out.push((v, w, h));
    };
    for f in frames {
        let t = Instant::now();
        let r = dec.decode(&f.data).expect("decodes");
        *timed += t.elapsed();
        if let Some(y) = r {
            keep(&y);
        }
    }
    for y in dec.flush_remaining().expect("flush") {
        keep(&y);
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    for (size, seconds) in [("1280x720", 10), ("1920x1080", 10)] {
        let frames = frames_of(&clip(size, seconds));
        let n = frames.len();
        // Decode alone: the source's own pictures (the PSNR reference) and the decode cost.
        let mut decode = Duration::ZERO;
        let reference = decode_all(&frames, &mut decode);
        // The whole transcoder, frame by frame, as the transcoding thread runs it.
        let mut t = VideoTranscoder::new(TranscodeSettings { fps: Some(30.0), ..Default::default() })
            .expect("transcoder");
        let mut out = Vec::new();
        let mut first_out_after = None;
        let mut per_frame = Vec::with_capacity(n);
        let start = Instant::now();
        for (i, f) in frames.iter().enumerate() {
            let t0 = Instant::now();
            t.push(f, &mut out).expect("transcodes");
            per_frame.push(t0.elapsed());
            if first_out_after.is_none() && !out.is_empty() {
                first_out_after = Some(i + 1);
            }
        }
        t.flush(&mut out).expect("flush");
        let total = start.elapsed();
        per_frame.sort();
        let p50 = per_frame[n / 2];
        let p99 = per_frame[(n * 99 / 100).min(n - 1)];
        let ms = total.as_secs_f64() * 1000.0 / n as f64;
        let dec_ms = decode.as_secs_f64() * 1000.0 / n as f64;
        let bytes: usize = out.iter().map(|f| f.data.len()).sum();
        let kbps = bytes as f64 * 8.0 / (n as f64 / 30.0) / 1000.0;
        // Quality: decode the output and compare with the source's own pictures.
        let mut dec = Decoder::new().expect("decoder");
        let mut psnr = Vec::new();
        for (f, (r, w, h)) in out.iter().zip(&reference) {
            if let Ok(Some(y)) = dec.decode(&f.data) {
                psnr.push(psnr_y(&y, &YUVBuffer::from_vec(r.clone(), *w, *h)));
            }
        }
        let mean_psnr = psnr.iter().sum::<f64>() / psnr.len().max(1) as f64;
        let min_psnr = psnr.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{size} 30 fps, {n} frames (x264 high, 3 B-frames) -> constrained baseline {}x{}:\n  \
             decode {dec_ms:.1} ms/frame, decode+encode {ms:.1} ms/frame = {:.0} % of one core at 30 fps\n  \
             per frame p50 {:.1} ms, p99 {:.1} ms; first frame out after {} frames in ({} ms of stream)\n  \
             out {} frames, {} keyframes, {kbps:.0} kbit/s; luma PSNR vs the source's decode: mean {mean_psnr:.1} dB, min {min_psnr:.1} dB",
            t.output_size().map_or(0, |s| s.0),
            t.output_size().map_or(0, |s| s.1),
            ms * 30.0 / 10.0,
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            first_out_after.unwrap_or(0),
            first_out_after.unwrap_or(0) as f64 * 1000.0 / 30.0,
            out.len(),
            t.stats().keyframes_out,
        );
    }
}
