//! Real-world media (issue 22): an ordinary MP4 as phones and x264 make it (High profile with
//! B-frames, AAC) and OBS's defaults over RTMP. WebRTC viewers do not reorder frames, so such
//! video is re-encoded once per source to constrained baseline: viewers get every frame, at the
//! file's rate, with no B-slices, and the stream object says so. Test media is made by ffmpeg;
//! viewers are real WebRTC peers (str0m); recordings are read back by ffprobe. Needs ffmpeg.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sluice_actors::h264::{self, SliceType};

const NOTE: &str = "B-frames: re-encoded to constrained baseline";

/// A 640x360 30 fps High-profile clip with 3 B-frames (x264's defaults) and AAC, `seconds` long.
fn b_frame_clip(name: &str, seconds: u32, extra: &[&str]) -> PathBuf {
    let secs = seconds.to_string();
    ffmpeg(
        &[
            &["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i"][..],
            &["sine=frequency=440:sample_rate=48000", "-t", secs.as_str()],
            &["-c:v", "libx264", "-profile:v", "high", "-bf", "3", "-g", "60", "-pix_fmt", "yuv420p"],
            &["-c:a", "aac", "-ac", "2"],
            extra,
        ]
        .concat(),
        name,
    )
}

fn into_media(server: &Server, file: &Path, name: &str) {
    std::fs::copy(file, server.media_dir.join(name)).expect("copy into media dir");
}

/// Watch a viewer for `during`: frames received, and whether any frame seen had a B-slice or a
/// non-baseline SPS (the newest frame is sampled every few ms).
fn watch(peer: &Peer, during: Duration) -> (u64, bool) {
    let start = peer.video();
    let end = Instant::now() + during;
    let mut bad = false;
    while Instant::now() < end {
        if let Some(f) = peer.stats.last_video.lock().unwrap().clone() {
            for nal in h264::annexb_nals(&f) {
                bad |= h264::slice_type(nal) == Some(SliceType::B);
                if h264::nal_type(nal) == Some(h264::NAL_SPS) {
                    bad |= h264::sps_profile_idc(nal) != Some(66);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(7));
    }
    (peer.video() - start, bad)
}

/// The published stream object REST lists under `name`.
fn stream(server: &Server, name: &str) -> Value {
    let (code, found) = server.rest("/rest-api/stream/find", Some(&json!({"name": name}).to_string()));
    assert_eq!(code, 200, "{found}");
    // The source's object (its viewers are listed under the same name).
    found.as_array().and_then(|a| a.iter().find(|s| s["published"] == true).cloned()).unwrap_or(Value::Null)
}

#[test]
fn b_frame_mp4_as_vod_plays_every_frame_as_constrained_baseline() {
    let server = Server::start();
    into_media(&server, &b_frame_clip("bf10.mp4", 10, &["-movflags", "+faststart"]), "bf10.mp4");
    let mut ws = Wcs::connect(&server);
    let (_id, peer) = play(&mut ws, "vod://bf10.mp4");
    peer.wait_until(STEP, "first frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);
    let (frames, bad) = watch(&peer, Duration::from_secs(5));
    eprintln!("vod:// B-frame file: {frames} frames in 5 s");
    assert!(!bad, "a frame with a B-slice or a non-baseline SPS reached the viewer");
    // The file's 30 fps (150 frames), or down to 15 fps where a loaded machine thins the
    // re-encode by design; a slideshow is a handful.
    assert!((75..=160).contains(&frames), "{frames} frames in 5 s");
    assert!(peer.stats.keyframes.load(Ordering::Relaxed) >= 2, "a keyframe every 2 s");
    let log = server.log_text();
    assert_eq!(log.matches("VOD video has B-frames").count(), 1, "said once in the log");
}

#[test]
fn b_frame_vod_live_is_reencoded_once_for_every_viewer_and_recording() {
    let records = std::env::temp_dir().join(format!("sluice-rw-records-{}", new_id("r")));
    std::fs::create_dir_all(&records).unwrap();
    let server = Server::start_with(&["--records-dir", records.to_str().unwrap()]);
    into_media(&server, &b_frame_clip("bf20.mp4", 20, &[]), "bf20.mp4");
    let name = "vod-live://bf20.mp4";
    let mut a = Wcs::connect(&server);
    let (_a, pa) = play(&mut a, name);
    let mut b = Wcs::connect(&server);
    let (_b, pb) = play(&mut b, name);
    pb.wait_until(STEP, "first frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);

    let st = stream(&server, name);
    assert_eq!(st["transcoding"], NOTE, "{st}");
    assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(640), Some(360)), "{st}");
    let body = json!({"mediaSessionId": st["mediaSessionId"]}).to_string();
    let (code, started) = server.rest("/rest-api/stream/startRecording", Some(&body));
    assert_eq!(code, 200, "{started}");

    let b0 = pb.video();
    let (frames, bad) = watch(&pa, Duration::from_secs(5));
    let frames_b = pb.video() - b0;
    eprintln!("vod-live:// B-frame file: {frames} and {frames_b} frames in 5 s");
    assert!(!bad, "a frame with a B-slice or a non-baseline SPS reached the viewer");
    assert!((75..=160).contains(&frames) && (75..=160).contains(&frames_b), "{frames}, {frames_b}");
    let (code, stopped) = server.rest("/rest-api/stream/stopRecording", Some(&body));
    assert_eq!(code, 200, "{stopped}");
    // One transcoding thread for the source, whatever the number of viewers.
    let log = server.log_text();
    assert_eq!(log.matches("VOD video has B-frames").count(), 1, "{log}");

    // The recording is what viewers got: constrained baseline, no B-frames, 30 fps.
    let file = records.join(stopped["fileName"].as_str().expect("fileName"));
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-count_frames", "-show_entries"])
        .args(["stream=profile,has_b_frames,nb_read_frames,width,height,avg_frame_rate", "-of", "json"])
        .arg(&file)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    eprintln!("recording: {s}");
    assert_eq!(s["profile"], "Constrained Baseline", "{s}");
    assert_eq!(s["has_b_frames"], 0, "{s}");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)), "{s}");
    let n: u64 = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    let secs = ffprobe(&file).duration;
    assert!((n as f64 / secs - 30.0).abs() < 3.0, "{n} frames in {secs} s");
    let _ = std::fs::remove_dir_all(&records);
}

/// ffmpeg publishing a file as is (`-c copy`) in real time over RTMP, as OBS does with its
/// defaults (x264 High with B-frames); killed when dropped.
struct Encoder(Child);

impl Encoder {
    fn start(server: &Server, file: &Path, name: &str) -> Encoder {
        let url = format!("rtmp://127.0.0.1:{}/live/{name}", server.rtmp);
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "flv", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg runs (apt package ffmpeg)");
        Encoder(child)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rtmp_with_b_frames_is_reencoded_for_webrtc_viewers() {
    let server = Server::start();
    let clip = b_frame_clip("rtmp-bf.mp4", 30, &["-movflags", "+faststart"]);
    let _enc = Encoder::start(&server, &clip, "obs");
    wait_published(&server, "obs");
    let mut ws = Wcs::connect(&server);
    let (_id, peer) = play(&mut ws, "obs");
    peer.wait_until(STEP, "first frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);
    let st = stream(&server, "obs");
    assert_eq!(st["transcoding"], NOTE, "{st}");
    let (frames, bad) = watch(&peer, Duration::from_secs(5));
    eprintln!("RTMP with B-frames: {frames} frames in 5 s");
    assert!(!bad, "a frame with a B-slice or a non-baseline SPS reached the viewer");
    // The file's 30 fps (150 frames), or down to 15 fps where a loaded machine thins the
    // re-encode by design; a slideshow is a handful.
    assert!((75..=160).contains(&frames), "{frames} frames in 5 s");
    assert_eq!(server.log_text().matches("RTMP video has B-frames").count(), 1);
}

#[test]
fn baseline_files_are_not_reencoded() {
    let server = Server::start();
    let plain = ffmpeg(
        &[
            &["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "3"][..],
            &["-c:v", "libx264", "-profile:v", "high", "-bf", "0", "-pix_fmt", "yuv420p"],
        ]
        .concat(),
        "high-nobf.mp4",
    );
    into_media(&server, &plain, "plain.mp4");
    let mut ws = Wcs::connect(&server);
    let (_id, peer) = play(&mut ws, "vod-live://plain.mp4");
    peer.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 30);
    let st = stream(&server, "vod-live://plain.mp4");
    assert!(st.get("transcoding").is_none(), "{st}");
    assert!(!server.log_text().contains("has B-frames"));
}

#[test]
fn portrait_phone_file_plays_upright() {
    let server = Server::start();
    // Landscape pictures and a rotation matrix, as a phone records portrait (no B-frames).
    let land = ffmpeg(
        &[
            &["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "6"][..],
            &["-c:v", "libx264", "-profile:v", "high", "-bf", "0", "-pix_fmt", "yuv420p"],
        ]
        .concat(),
        "land.mp4",
    );
    let portrait =
        ffmpeg(&["-i", land.to_str().unwrap(), "-c", "copy", "-metadata:s:v:0", "rotate=90"], "portrait.mp4");
    into_media(&server, &portrait, "portrait.mp4");
    let mut ws = Wcs::connect(&server);
    let (_id, peer) = play(&mut ws, "vod-live://portrait.mp4");
    peer.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);
    let st = stream(&server, "vod-live://portrait.mp4");
    assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(360), Some(640)), "{st}");
    assert_eq!(st["transcoding"], "rotated upright: re-encoded to constrained baseline", "{st}");
    // The pictures viewers get are portrait: the SPS of a keyframe says 360x640.
    let end = Instant::now() + STEP;
    let mut size = None;
    while size.is_none() && Instant::now() < end {
        let last = peer.stats.last_video.lock().unwrap().clone();
        size = last.and_then(|f| {
            h264::annexb_nals(&f)
                .find(|n| h264::nal_type(n) == Some(h264::NAL_SPS))
                .and_then(h264::sps_dimensions)
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(size, Some((360, 640)));
    let (frames, _) = watch(&peer, Duration::from_secs(3));
    // 30 fps, or down to 15 where a loaded machine thins the re-encode (the browser test holds
    // the issue's 25 fps floor).
    assert!((45..=95).contains(&frames), "{frames} frames in 3 s");
}

#[test]
fn a_b_frame_file_is_converted_once_and_later_plays_come_from_the_copy() {
    let server = Server::start();
    into_media(&server, &b_frame_clip("bf-cache.mp4", 6, &[]), "bf-cache.mp4");

    // The first play re-encodes live, and starts the conversion.
    let mut ws = Wcs::connect(&server);
    let (id1, first) = play(&mut ws, "vod://bf-cache.mp4");
    first.wait_until(STEP, "first frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);
    let live = server.rest("/rest-api/stream/find", Some(&json!({"mediaSessionId": id1}).to_string())).1;
    let (_, sources) = server.rest("/rest-api/stream/find_all", None);
    let src =
        sources.as_array().unwrap().iter().find(|s| s["mediaProvider"] == "VOD").cloned().unwrap_or(live);
    assert_eq!(src["transcoding"], NOTE, "{src}");

    let end = Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let (code, list) = server.rest("/rest-api/vod/cache", None);
        assert_eq!(code, 200);
        let e = list.as_array().and_then(|a| a.first().cloned()).unwrap_or(Value::Null);
        assert_ne!(e["state"], "failed", "{e}");
        if e["state"] == "ready" {
            break e;
        }
        assert!(Instant::now() < end, "conversion not done: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(entry["file"], "bf-cache.mp4");
    assert_eq!(entry["progress"], 1.0);
    let copy = PathBuf::from(entry["cached"].as_str().expect("the copy's path"));
    // The copy: constrained baseline with no B-frames, Opus audio, the whole file.
    let p = ffprobe(&copy);
    eprintln!("converted copy: {p:?}");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,profile,has_b_frames,nb_read_frames",
            "-count_frames",
        ])
        .args(["-of", "json"])
        .arg(&copy)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let streams = v["streams"].as_array().expect("streams");
    let video = streams.iter().find(|s| s["codec_name"] == "h264").expect("h264 in the copy");
    assert_eq!(video["profile"], "Constrained Baseline", "{v}");
    assert_eq!(video["has_b_frames"], 0, "{v}");
    let frames: u64 = video["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!((175..=180).contains(&frames), "6 s at 30 fps, got {frames}");
    assert!(streams.iter().any(|s| s["codec_name"] == "opus"), "{v}");

    // A later play comes from the copy: nothing is re-encoded, every frame arrives.
    let mut ws2 = Wcs::connect(&server);
    let (id2, second) = play(&mut ws2, "vod://bf-cache.mp4");
    second.wait_until(STEP, "frames from the copy", |s| s.video_frames.load(Ordering::Relaxed) > 5);
    let (frames, bad) = watch(&second, Duration::from_secs(3));
    assert!(!bad, "a B-slice or a non-baseline SPS from the copy");
    // From the copy nothing is re-encoded: the file's 30 fps.
    assert!((75..=95).contains(&frames), "{frames} frames in 3 s");
    let (_, sources) = server.rest("/rest-api/stream/find_all", None);
    let from_copy = sources
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["mediaProvider"] == "VOD")
        .find(|s| s["transcoding"].as_str().is_some_and(|t| t.contains("converted copy")));
    assert!(from_copy.is_some(), "no VOD source playing from the copy: {sources}");
    assert!(id2 != id1);
}

#[test]
fn edit_lists_align_audio_and_video_as_players_do() {
    // x264 with B-frames delays its first picture by two frames, AAC primes 1024 samples: the
    // edit lists say so, and a player aligns the two tracks by them (ffprobe: both start at 0).
    let clip = b_frame_clip("bf-edts.mp4", 2, &[]);
    let (index, _) = sluice_actors::mp4_reader::open(&clip).expect("index");
    let first = |k: sluice_actors::mp4_reader::TrackKind| {
        index.samples.iter().filter(|s| s.track == k).map(|s| s.pts_us).min().expect("samples")
    };
    let video = first(sluice_actors::mp4_reader::TrackKind::Video) as i64;
    let audio = first(sluice_actors::mp4_reader::TrackKind::Audio) as i64;
    // The first audio sample is the priming one, 1024/48000 s before the first heard sample,
    // which plays with the first picture.
    let offset = video - audio;
    assert!((offset - 21_333).abs() < 2_000, "first picture {video} µs, first audio {audio} µs");
}
