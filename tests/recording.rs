//! Recording: `record: true` and the REST recorder methods write a fragmented MP4 that ffprobe
//! reads (codecs, duration), that survives SIGKILL and vanished publishers, with safe names.
//! The synthetic frames of tests/common are not decodable pictures, which does not matter to
//! ffprobe's codec and duration; "plays in Chromium" is tests/browser/recording.spec.mjs.
//! Needs ffprobe (Debian package ffmpeg).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn start(records: &Path) -> Server {
    let dir = records.to_str().expect("utf-8 temp path");
    Server::start_with(&["--records-dir", dir])
}

fn record_name(st: &Value) -> String {
    st["recordName"].as_str().unwrap_or_else(|| panic!("no recordName in {st}")).to_string()
}

fn unpublish(ws: &mut Wcs, id: &str, name: &str) -> Value {
    ws.send("unPublishStream", json!({"mediaSessionId": id, "name": name, "published": true}));
    let st = ws.status(id);
    assert_eq!(st["status"], "UNPUBLISHED", "{st}");
    st
}

/// Wait until no recording is in progress (the recorder finished its file).
fn wait_no_recordings(s: &Server, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let (code, body) = s.rest("/rest-api/recorder/find_all", None);
        if code == 200 && body.as_array().is_some_and(|a| a.is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("recordings still in progress after {within:?}");
}

/// Record `secs` of `video` + Opus, stop, check the file: codecs and duration within 10%.
fn record_and_probe(video: Video, codec: &str, secs: f64) {
    let dir = TempDir::new(&format!("records-{codec}"));
    let s = start(&dir.0);
    let mut ws = Wcs::connect(&s);
    let name = new_id("rec");
    let (id, peer, st) = publish_recorded(&mut ws, &name, video);
    let file = record_name(&st);
    assert!(file.starts_with(&name) && file.ends_with(".mp4"), "{file}");
    assert_eq!(st["record"], true);
    let began = Instant::now();
    peer.wait_until(STEP, "media flows", |p| p.connected.load(std::sync::atomic::Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs_f64(secs));
    let st = unpublish(&mut ws, &id, &name);
    let elapsed = began.elapsed().as_secs_f64();
    assert_eq!(record_name(&st), file, "UNPUBLISHED names the same file");
    assert_eq!(dir.files(), vec![file.clone()]);

    let p = ffprobe(&dir.0.join(&file));
    assert_eq!(p.codecs, vec![codec, "opus"], "{p:?}");
    assert!(
        (p.duration - elapsed).abs() <= 0.1 * elapsed,
        "duration {} for {elapsed:.2} s recorded: {p:?}",
        p.duration
    );
    // A/V: both tracks end together (no drift); the video starts at the first keyframe.
    assert!((p.stream_durations[0] - p.stream_durations[1]).abs() < 0.15, "{p:?}");
    assert!(p.packets[0] as f64 >= 25.0 * secs && p.packets[1] as f64 >= 45.0 * secs, "{p:?}");

    // Served on the web port with Range support.
    let (code, headers, body) = s.web_get(&format!("/client/records/{file}"), &[("Range", "bytes=0-99")]);
    assert_eq!(code, 206, "{headers:?}");
    assert_eq!(body.len(), 100);
    assert_eq!(&body[4..8], b"ftyp");
    drop(peer);
}

#[test]
fn h264_and_opus_recorded_to_mp4() {
    record_and_probe(Video::H264, "h264", 5.0);
}

#[test]
fn vp8_and_opus_recorded_to_mp4() {
    record_and_probe(Video::Vp8, "vp8", 3.0);
}

#[test]
fn file_survives_sigkill() {
    let dir = TempDir::new("records-kill");
    let mut s = start(&dir.0);
    let mut ws = Wcs::connect(&s);
    let name = new_id("kill");
    let (_id, peer, st) = publish_recorded(&mut ws, &name, Video::H264);
    let file = record_name(&st);
    std::thread::sleep(Duration::from_secs(8));
    s.sigkill();
    drop(peer);
    let p = ffprobe(&dir.0.join(&file));
    assert_eq!(p.codecs, vec!["h264", "opus"], "{p:?}");
    assert!(p.duration >= 6.0, "only {} s survived: {p:?}", p.duration);
    assert!(p.packets[0] >= 6 * 25 && p.packets[1] >= 6 * 45, "{p:?}");
}

#[test]
fn publisher_vanishing_leaves_a_complete_file() {
    let dir = TempDir::new("records-vanish");
    let s = start(&dir.0);
    let mut ws = Wcs::connect(&s);
    let name = new_id("vanish");
    let (_id, peer, st) = publish_recorded(&mut ws, &name, Video::H264);
    let file = record_name(&st);
    std::thread::sleep(Duration::from_secs(4));
    // The browser is gone: no more packets, the socket dropped without a close frame.
    let gone = Instant::now();
    peer.kill();
    drop(ws);
    wait_no_recordings(&s, Duration::from_secs(15));
    let p = ffprobe(&dir.0.join(&file));
    assert_eq!(p.codecs, vec!["h264", "opus"], "{p:?}");
    assert!(
        p.duration >= 3.5 && p.duration <= 4.6,
        "{p:?} (finished {:?} after the publisher vanished)",
        gone.elapsed()
    );
    // Finished, not cut: the last fragment holds the last frames (no trailing `free` box).
    let bytes = std::fs::read(dir.0.join(&file)).expect("file");
    assert_ne!(last_mp4_box(&bytes), Some(*b"free"), "the last fragment was not finished");
}

#[test]
fn unsafe_stream_names_give_safe_file_names() {
    let dir = TempDir::new("records-names");
    let s = start(&dir.0);
    let mut ws = Wcs::connect(&s);
    let long = "L".repeat(1000);
    let names =
        ["../../escape", "/etc/passwd", "a/b/../c", "nul\u{0}byte", "..", "spaced name?#", long.as_str()];
    let mut files = Vec::new();
    for name in names {
        let (id, peer, st) = publish_recorded(&mut ws, name, Video::None);
        let file = record_name(&st);
        assert!(file.len() <= 255 && file.ends_with(".mp4"), "{file}");
        assert!(!file.starts_with('.'), "{file}");
        assert!(
            file.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{file:?} from {name:?}"
        );
        std::thread::sleep(Duration::from_millis(400));
        let st = unpublish(&mut ws, &id, name);
        assert_eq!(record_name(&st), file);
        files.push(file);
        drop(peer);
    }
    files.sort();
    assert_eq!(dir.files(), files, "every file, and only them, in the records folder");
    let parent = dir.0.parent().expect("parent");
    assert!(!parent.join("escape.mp4").exists() && !parent.join("escape").exists());
}

#[test]
fn rest_start_stop_find_and_errors() {
    let dir = TempDir::new("records-rest");
    let s = start(&dir.0);
    let mut ws = Wcs::connect(&s);
    let unknown = json!({"mediaSessionId": "no-such-stream"}).to_string();
    for path in
        ["/stream/startRecording", "/stream/stopRecording", "/recorder/terminate", "/recorder/startup"]
    {
        let (code, body) = s.rest(&format!("/rest-api{path}"), Some(&unknown));
        assert_eq!(code, 404, "{path}: {body}");
    }
    let (code, body) = s.rest("/rest-api/stream/startRecording", Some("not json"));
    assert_eq!(code, 400, "{body}");
    assert_eq!(s.rest("/rest-api/recorder/find_all", None), (200, json!([])));

    let name = new_id("restrec");
    let (id, peer) = publish(&mut ws, &name, Video::H264);
    let body = json!({"mediaSessionId": id}).to_string();
    let (code, started) = s.rest("/rest-api/stream/startRecording", Some(&body));
    assert_eq!(code, 200, "{started}");
    let file = started["fileName"].as_str().expect("fileName").to_string();
    // Starting again is harmless and names the same file.
    assert_eq!(s.rest("/rest-api/stream/startRecording", Some(&body)), (200, started.clone()));
    let (code, list) = s.rest("/rest-api/recorder/find_all", Some("{}"));
    assert_eq!(code, 200);
    assert_eq!(list[0]["fileName"], file.as_str());
    assert_eq!(list[0]["mediaSessionId"], id.as_str());
    let (_, found) = s.rest("/rest-api/stream/find", Some(&body));
    assert_eq!(found[0]["record"], true);
    assert_eq!(found[0]["recordName"], file.as_str());

    std::thread::sleep(Duration::from_secs(3));
    let (code, stopped) = s.rest("/rest-api/stream/stopRecording", Some(&body));
    assert_eq!((code, stopped["fileName"].as_str()), (200, Some(file.as_str())));
    assert_eq!(s.rest("/rest-api/recorder/find_all", None), (200, json!([])));
    assert_eq!(s.rest("/rest-api/stream/stopRecording", Some(&body)).0, 404);
    let p = ffprobe(&dir.0.join(&file));
    assert_eq!(p.codecs, vec!["h264", "opus"]);
    assert!(p.duration > 2.5 && p.duration < 3.5, "{p:?}");

    // startup with a template that needs the end: renamed when finished.
    let cfg =
        json!({"mediaSessionId": id, "config": {"fileTemplate": "{streamName}-{duration}ms"}}).to_string();
    let (code, started) = s.rest("/rest-api/recorder/startup", Some(&cfg));
    assert_eq!(code, 200, "{started}");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, stopped) = s.rest("/rest-api/recorder/terminate", Some(&body));
    assert_eq!(code, 200, "{stopped}");
    let renamed = stopped["fileName"].as_str().expect("fileName").to_string();
    let ms: u64 = renamed
        .strip_prefix(&format!("{name}-"))
        .and_then(|r| r.strip_suffix("ms.mp4"))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{renamed}"));
    assert!((1400..5000).contains(&ms), "{renamed}");
    assert!(
        dir.0.join(&renamed).exists() && !dir.0.join(started["fileName"].as_str().unwrap_or("-")).exists()
    );
    let rotation = json!({"mediaSessionId": id, "config": {"rotation": "20M"}}).to_string();
    assert_eq!(s.rest("/rest-api/recorder/startup", Some(&rotation)).0, 400);

    // The stream was never disturbed.
    assert_eq!(peer.corrupt(), 0);
    unpublish(&mut ws, &id, &name);
}

/// A records "folder" that is a file cannot be written even by root.
#[test]
fn unwritable_records_dir_fails_recording_not_the_stream() {
    let dir = TempDir::new("records-ro");
    let blocker = dir.0.join("a-file");
    std::fs::write(&blocker, b"").expect("file");
    let s = start(&blocker.join("records"));
    let mut ws = Wcs::connect(&s);
    let name = new_id("ro");
    let (id, peer, st) = publish_recorded(&mut ws, &name, Video::H264);
    assert!(st.get("recordName").is_none(), "{st}");
    let fail = ws.expect("fail", |d| d["id"] == id.as_str());
    let why = fail["info"].as_str().unwrap_or("");
    assert!(why.starts_with("Recording failed: records directory") && why.contains("not writable"), "{fail}");

    // The live stream flows to a viewer.
    let mut viewer_ws = Wcs::connect(&s);
    let (_pid, viewer) = play(&mut viewer_ws, &name);
    viewer
        .wait_until(STEP, "video frames", |p| p.video_frames.load(std::sync::atomic::Ordering::Relaxed) > 30);

    let (code, body) =
        s.rest("/rest-api/stream/startRecording", Some(&json!({"mediaSessionId": id}).to_string()));
    assert_eq!(code, 500, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("not writable"), "{body}");
    let st = unpublish(&mut ws, &id, &name);
    assert!(st.get("recordName").is_none(), "{st}");
    drop(peer);
}

/// A disk that fills up mid-recording (a 256 KB tmpfs): the recording stops with a notice, the
/// file keeps what fit, and the stream goes on. Skipped where tmpfs cannot be mounted.
#[test]
fn full_disk_fails_recording_not_the_stream() {
    let dir = TempDir::new("records-full");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "sluice-test-full"])
        .arg(&dir.0)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot mount a tmpfs here (not root?): skipped");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _mounted = Unmount(dir.0.clone());
    let s = start(&dir.0);
    let mut ws = Wcs::connect(&s);
    let name = new_id("full");
    let (id, peer, st) = publish_recorded(&mut ws, &name, Video::H264);
    let file = record_name(&st);
    // ~150 KB/s of synthetic media: full within a few seconds.
    let fail =
        ws.try_expect("fail", Duration::from_secs(15), |d| d["id"] == id.as_str()).expect("a fail notice");
    assert!(fail["info"].as_str().unwrap_or("").contains("No space left"), "{fail}");
    let mut viewer_ws = Wcs::connect(&s);
    let (_pid, viewer) = play(&mut viewer_ws, &name);
    viewer
        .wait_until(STEP, "video frames", |p| p.video_frames.load(std::sync::atomic::Ordering::Relaxed) > 30);
    let p = ffprobe(&dir.0.join(&file));
    assert_eq!(p.codecs, vec!["h264", "opus"], "what fit is readable: {p:?}");
    unpublish(&mut ws, &id, &name);
    drop(peer);
}

/// With the default folders (records inside the media folder), a recording plays back as
/// `vod://records/<file>` without copying: the VOD reader takes the fragmented MP4 as written,
/// and the frames come out byte for byte as the publisher sent them.
#[test]
fn recording_plays_back_as_vod() {
    let s = Server::start();
    let records = s.log.parent().expect("server dir").join("media").join("records");
    let mut ws = Wcs::connect(&s);
    // A server without VOD answers "Stream not found" for any vod:// name.
    let (_, missing) =
        request_play(&mut ws, "vod://records/none.mp4", &Offering::new(false, Video::H264).sdp);
    if missing.as_ref().err().is_some_and(|st| st["info"] == "Stream not found") {
        eprintln!("this build has no VOD: skipped");
        return;
    }
    let name = new_id("vodrec");
    let (id, peer, _) = publish_recorded(&mut ws, &name, Video::H264);
    std::thread::sleep(Duration::from_secs(3));
    let file = record_name(&unpublish(&mut ws, &id, &name));
    drop(peer);
    assert!(records.join(&file).is_file(), "{file} not in {}", records.display());

    let (_id, viewer) = play(&mut ws, &format!("vod://records/{file}"));
    viewer.wait_until(STEP, "recorded video and audio", |p| {
        p.video_frames.load(std::sync::atomic::Ordering::Relaxed) > 30
            && p.audio_frames.load(std::sync::atomic::Ordering::Relaxed) > 50
    });
    assert_eq!(viewer.corrupt(), 0, "frames differ from what was published");
}

/// Server CPU share (1.0 = one core) over `secs`, after `settle` seconds. Meanwhile `ws` is
/// read, so its session answers the server's pings and stays open.
fn cpu_share(pid: u32, settle: f64, secs: f64, ws: &mut Wcs) -> f64 {
    let _ = ws.try_expect("-", Duration::from_secs_f64(settle), |_| false);
    cpu_share_during(pid, || {
        let _ = ws.try_expect("-", Duration::from_secs_f64(secs), |_| false);
    })
}

/// BENCHMARKS.md "Recording": CPU cost of recording one 2.5 Mbps 720p H.264 + Opus stream, as a
/// fraction of the cost of forwarding it to one subscriber. A real x264 clip (1280x720, 30 fps,
/// CBR 2.5 Mbps with filler) is published; the server's CPU is read in three phases, publisher
/// alone, publisher + one viewer, publisher + recording, repeated `BENCH_ROUNDS` times
/// (interleaved, so drift of the baseline cancels) for `BENCH_SECS` each. Run on a release build:
/// `cargo test --release --test recording -- --ignored --nocapture recording_cpu_vs_forwarding`
#[test]
#[ignore = "benchmark: run explicitly, on a release build"]
fn recording_cpu_vs_forwarding() {
    let env = |k: &str, d: f64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (secs, rounds) = (env("BENCH_SECS", 15.0), env("BENCH_ROUNDS", 3.0) as usize);
    let settle = 2.0;
    let total = rounds as f64 * 3.0 * (secs + settle + 1.0) + 10.0;
    let clip_path = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size=1280x720:rate=30:duration={total}"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "60",
            "-b:v",
            "2500k",
            "-minrate",
            "2500k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "2500k",
            "-x264-params",
            "nal-hrd=cbr:aud=1",
            "-f",
            "h264",
        ],
        &format!("bench-720p-2500k-{}s.h264", total as u64),
    );
    let data = std::fs::read(&clip_path).expect("clip");
    let clip = Clip::from_annexb(&data, usize::MAX);
    let mbps = data.len() as f64 * 8.0 / (clip.frames.len() as f64 / 30.0) / 1e6;
    let dir = TempDir::new("records-bench");
    let s = start(&dir.0);
    let pid = s.pid();
    let mut ws = Wcs::connect(&s);
    let name = new_id("bench");
    let (id, publisher) = publish_clip(&mut ws, &name, clip.clone());
    let body = json!({"mediaSessionId": id}).to_string();

    let (mut alone, mut forwarding, mut recording) = (Vec::new(), Vec::new(), Vec::new());
    let mut recorded = 0.0;
    for _ in 0..rounds {
        alone.push(cpu_share(pid, settle, secs, &mut ws));

        let mut vws = Wcs::connect(&s);
        let (play_id, viewer) = play(&mut vws, &name);
        forwarding.push(cpu_share(pid, settle, secs, &mut ws));
        assert!(viewer.video() as f64 > 20.0 * secs, "viewer got {} frames", viewer.video());
        vws.send("stopStream", json!({"mediaSessionId": play_id, "name": name}));
        drop(viewer);
        vws.close();

        let (code, started) = s.rest("/rest-api/stream/startRecording", Some(&body));
        assert_eq!(code, 200, "{started}");
        recording.push(cpu_share(pid, settle, secs, &mut ws));
        let (_, stopped) = s.rest("/rest-api/stream/stopRecording", Some(&body));
        let p = ffprobe(&dir.0.join(stopped["fileName"].as_str().expect("fileName")));
        assert_eq!(p.codecs, vec!["h264", "opus"]);
        recorded += p.duration;
    }
    drop(publisher);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, f, r) = (mean(&alone), mean(&forwarding), mean(&recording));
    let per_round: Vec<String> = (0..rounds)
        .map(|i| format!("{:.0}%", 100.0 * (recording[i] - alone[i]) / (forwarding[i] - alone[i])))
        .collect();
    eprintln!(
        "clip {} frames, {mbps:.2} Mbit/s; {rounds} rounds of {secs} s per phase; recorded {recorded:.1} s in all\n\
         server CPU (1.0 = one core): publisher alone {a:.4} {alone:.4?}\n\
         + 1 viewer {f:.4} {forwarding:.4?}\n\
         + recording {r:.4} {recording:.4?}\n\
         forwarding to one viewer costs {:.4}, recording costs {:.4}: recording = {:.0}% of forwarding \
         (per round {})",
        clip.frames.len(),
        f - a,
        r - a,
        100.0 * (r - a) / (f - a),
        per_round.join(", ")
    );
    assert!(recorded > 0.8 * secs * rounds as f64, "the benchmark did not run as intended");
}
