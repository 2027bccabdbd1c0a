//! VOD: MP4 files played as streams, private (`vod://`) and shared (`vod-live://`).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice_actors::mp4_reader::{self, TrackKind};

/// Make an H.264 + AAC file in the server's media folder.
fn make(server: &Server, name: &str, seconds: u32, extra: &[&str]) -> std::path::PathBuf {
    let secs = seconds.to_string();
    let made = ffmpeg(
        &[
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=640x360:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ],
            &["-t", secs.as_str()][..],
            X264_BASELINE,
            &["-c:a", "aac", "-ac", "2"][..],
            extra,
        ]
        .concat(),
        name,
    );
    let dest = server.media_dir.join(name);
    std::fs::copy(&made, &dest).expect("copy into media dir");
    dest
}

/// Index of each video frame by its last NAL unit (the slice), as viewers receive it.
fn frame_index(path: &Path) -> HashMap<Vec<u8>, usize> {
    let (idx, mut f) = mp4_reader::open(path).expect("index");
    let mut map = HashMap::new();
    for (i, s) in idx.samples.iter().filter(|s| s.track == TrackKind::Video).enumerate() {
        let data = mp4_reader::read_sample(&mut f, s).unwrap();
        map.insert(last_nal_avcc(&data), i);
    }
    map
}

fn last_nal_avcc(d: &[u8]) -> Vec<u8> {
    let mut i = 0;
    let mut last = Vec::new();
    while i + 4 <= d.len() {
        let len = u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]) as usize;
        i += 4;
        if i + len > d.len() {
            break;
        }
        last = d[i..i + len].to_vec();
        i += len;
    }
    last
}

fn last_nal_annexb(d: &[u8]) -> Vec<u8> {
    let pos = d.windows(4).rposition(|w| w == [0, 0, 0, 1]).map(|p| p + 4).unwrap_or(0);
    d[pos..].to_vec()
}

fn position(peer: &Peer, index: &HashMap<Vec<u8>, usize>) -> Option<usize> {
    let last = peer.stats.last_video.lock().unwrap().clone()?;
    index.get(&last_nal_annexb(&last)).copied()
}

#[test]
fn vod_plays_the_file_at_real_time_pace_then_stops() {
    let server = Server::start();
    let file = make(&server, "ten.mp4", 10, &["-movflags", "+faststart"]);
    let mut ws = Wcs::connect(&server);
    let (id, peer) = play(&mut ws, "vod://ten.mp4");
    let st = ws
        .try_expect("notifyStreamStatusEvent", Duration::from_secs(14), |d| d["mediaSessionId"] == id)
        .expect("STOPPED at the end of the file");
    assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("STOPPED"), Some("End of file")));
    let frames = peer.video();
    let (first, last) = (
        peer.stats.first_video_at.lock().unwrap().unwrap(),
        peer.stats.last_video_at.lock().unwrap().unwrap(),
    );
    let span = last.duration_since(first).as_secs_f64();
    eprintln!("vod: {frames} video frames, {} audio frames, first to last {span:.3} s", peer.audio());
    assert!(frames >= 295, "{frames} of 300 frames");
    // The frames are the file's own, byte for byte, up to its last one.
    assert_eq!(position(&peer, &frame_index(&file)), Some(299));
    // The last frame is due 9.967 s after the first.
    assert!((span - 9.967).abs() <= 0.3, "paced over {span:.3} s");
    // AAC became Opus: 20 ms packets for 10 s.
    assert!((480..=510).contains(&peer.audio()), "{} Opus packets", peer.audio());
}

#[test]
fn vod_viewers_are_private_and_vod_live_viewers_share_one_source() {
    let server = Server::start();
    let file = make(&server, "six.mp4", 12, &[]);
    let index = frame_index(&file);

    let mut a = Wcs::connect(&server);
    let (_a, pa) = play(&mut a, "vod://six.mp4");
    std::thread::sleep(Duration::from_secs(3));
    let mut b = Wcs::connect(&server);
    let (_b, pb) = play(&mut b, "vod://six.mp4");
    pb.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 10);
    let (x, y) = (position(&pa, &index).unwrap(), position(&pb, &index).unwrap());
    eprintln!("vod positions {x} and {y}");
    assert!((x as i64 - y as i64 - 90).abs() <= 15, "private viewers 3 s apart: {x} vs {y}");

    let mut c = Wcs::connect(&server);
    let (_c, pc) = play(&mut c, "vod-live://six.mp4");
    std::thread::sleep(Duration::from_secs(2));
    let mut d = Wcs::connect(&server);
    let (_d, pd) = play(&mut d, "vod-live://six.mp4");
    pd.wait_until(Duration::from_secs(3), "joined in progress", |s| {
        s.video_frames.load(Ordering::Relaxed) > 5
    });
    let (x, y) = (position(&pc, &index).unwrap(), position(&pd, &index).unwrap());
    eprintln!("vod-live positions {x} and {y}");
    assert!((x as i64 - y as i64).abs() <= 15, "shared viewers at one position: {x} vs {y}");
    assert!(x >= 45, "the second viewer joined in progress, not at 0: {x}");

    let (code, list) = server.rest("/rest-api/vod/find_all", None);
    assert_eq!(code, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(
        list.iter().filter(|e| e["uri"] == "vod-live://six.mp4").count(),
        1,
        "one shared source: {list:?}"
    );
    assert_eq!(list.iter().filter(|e| e["uri"] == "vod://six.mp4").count(), 2, "one private source each");
    // A shared VOD stream is a stream like any other: a snapshot of it works.
    let (code, snap) =
        server.rest("/rest-api/stream/snapshot", Some(r#"{"streamName":"vod-live://six.mp4"}"#));
    assert_eq!(code, 200, "{snap}");
}

#[test]
fn bad_files_and_paths_get_exact_failures() {
    let server = Server::start();
    let good = make(&server, "good.mp4", 2, &[]);
    std::fs::write(server.media_dir.join("text.mp4"), "this is a text file\n".repeat(100)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(server.media_dir.join("cut.mp4"), &bytes[..bytes.len() - 300]).unwrap(); // moov at the end, cut
    let hevc = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            "1",
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=none",
        ],
        "hevc.mp4",
    );
    std::fs::copy(hevc, server.media_dir.join("hevc.mp4")).unwrap();
    let outside = server.media_dir.parent().unwrap().join("outside.mp4");
    std::fs::copy(&good, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, server.media_dir.join("link.mp4")).unwrap();

    let mut ws = Wcs::connect(&server);
    for (name, want) in [
        ("vod://missing.mp4", "File not found"),
        ("vod://../../etc/passwd", "File not found"),
        ("vod:///etc/passwd", "File not found"),
        ("vod-live://../outside.mp4", "File not found"),
        ("vod://link.mp4", "File not found"),
        ("vod://text.mp4", "File has wrong format"),
        ("vod://cut.mp4", "File has wrong format"),
    ] {
        let offer = Offering::new(false, Video::H264);
        let (_id, res) = request_play(&mut ws, name, &offer.sdp);
        let st = res.expect_err(name);
        assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("FAILED"), Some(want)), "{name}");
    }
    let offer = Offering::new(false, Video::H264);
    let (_id, res) = request_play(&mut ws, "vod://hevc.mp4", &offer.sdp);
    let st = res.expect_err("hevc");
    assert_eq!(st["status"], "FAILED");
    assert!(st["info"].as_str().unwrap().contains("HEVC"), "{st}");
    assert!(server.log_text().contains("VOD file refused"), "refusals are logged");
    // And the server still plays a good file.
    let (_id, peer) = play(&mut ws, "vod://good.mp4");
    peer.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 10);
}

#[test]
fn rest_vod_startup_find_terminate() {
    let server = Server::start();
    make(&server, "r.mp4", 20, &[]);
    let body = json!({"uri": "vod-live://r.mp4", "localStreamName": "movie", "loop": true}).to_string();
    assert_eq!(server.rest("/rest-api/vod/startup", Some(&body)).0, 200);
    assert_eq!(server.rest("/rest-api/vod/startup", Some(&body)).0, 409);
    assert_eq!(server.rest("/rest-api/vod/startup", Some(r#"{"uri":"vod-live://nope.mp4"}"#)).0, 404);
    let (code, found) = server.rest("/rest-api/vod/find", Some(r#"{"localStreamName":"movie"}"#));
    assert_eq!(code, 200);
    assert_eq!(found[0]["uri"], "vod-live://r.mp4");
    assert_eq!(found[0]["status"], "PROCESSED_LOCAL");
    assert_eq!(found[0]["loop"], true);
    assert_eq!(server.rest("/rest-api/vod/find", Some(r#"{"localStreamName":"other"}"#)).0, 404);
    // It is a stream named "movie" that plays.
    let mut ws = Wcs::connect(&server);
    let (id, peer) = play(&mut ws, "movie");
    peer.wait_until(Duration::from_secs(3), "frames", |s| s.video_frames.load(Ordering::Relaxed) > 10);
    assert_eq!(server.rest("/rest-api/vod/terminate", Some(r#"{"localStreamName":"movie"}"#)).0, 200);
    assert_eq!(ws.status(&id)["status"], "STOPPED");
    // The source ends asynchronously after the terminate answer: gone within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut listed = server.rest("/rest-api/vod/find_all", None);
    while listed != (200, json!([])) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        listed = server.rest("/rest-api/vod/find_all", None);
    }
    assert_eq!(listed, (200, json!([])));
}
