//! Snapshots of live streams over REST and WebSocket: correct pictures, exact errors.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::json;

fn clip(seconds: u32, size: &str) -> Vec<u8> {
    let (src, secs) = (format!("testsrc=size={size}:rate=30"), seconds.to_string());
    let args: Vec<&str> = ["-f", "lavfi", "-i", &src, "-t", &secs]
        .into_iter()
        .chain(X264_BASELINE.iter().copied())
        .chain(["-x264-params", "aud=1", "-f", "h264"])
        .collect();
    let path = ffmpeg(&args, &format!("testsrc-{size}-{seconds}.h264"));
    std::fs::read(path).expect("clip")
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let mse: f64 =
        a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>()
            / a.as_raw().len() as f64;
    if mse == 0.0 {
        return 99.0;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

fn png_of(v: &serde_json::Value) -> image::RgbImage {
    let b64 = v.as_str().expect("base64 string");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    assert_eq!(&bytes[1..4], b"PNG");
    image::load_from_memory(&bytes).expect("PNG decodes").to_rgb8()
}

#[test]
fn snapshot_matches_ffmpeg_decode_of_the_same_frame() {
    let server = Server::start();
    let data = clip(2, "640x360");
    // Frames 0..45: keyframes at 0 and 30, so the held GOP is 30..44 and the picture is frame 44.
    let mut ws = Wcs::connect(&server);
    let name = new_id("snap");
    let (_id, peer) = publish_clip(&mut ws, &name, Clip::from_annexb(&data, 45));
    peer.wait_until(STEP, "clip sent", |s| s.video_sent.load(Ordering::Relaxed) >= 45);
    std::thread::sleep(Duration::from_millis(300));

    let t0 = Instant::now();
    let (code, body) =
        server.rest("/rest-api/stream/snapshot", Some(&json!({"streamName": name}).to_string()));
    eprintln!("snapshot in {:?}", t0.elapsed());
    assert_eq!(code, 200, "{body}");
    let ours = png_of(&body["data"]);

    let reference = ffmpeg(
        &[
            "-f",
            "h264",
            "-i",
            &path_of_clip(&data),
            "-vf",
            "select=eq(n\\,44)",
            "-vsync",
            "0",
            "-frames:v",
            "1",
        ],
        &format!("ref-{name}.png"),
    );
    let reference = image::open(reference).expect("reference png").to_rgb8();
    assert_eq!(ours.dimensions(), reference.dimensions());
    let db = psnr(&ours, &reference);
    eprintln!("PSNR {db:.1} dB");
    assert!(db >= 30.0, "PSNR {db:.1} dB < 30");

    // The same through the WebSocket API: snapshotCompleted for the requesting id.
    ws.send("snapshot", json!({"name": name, "mediaSessionId": "snap-1"}));
    let ev = ws.expect("notifyStreamEvent", |d| d["mediaSessionId"] == "snap-1");
    assert_eq!(ev["type"], "snapshotCompleted", "{ev}");
    assert!(psnr(&png_of(&ev["payload"]["snapshot"]), &reference) >= 30.0);

    // Downscaled JPEG, an extra.
    let (code, body) = server
        .rest("/rest-api/stream/snapshot?format=jpeg&width=320", Some(&json!({"name": name}).to_string()));
    assert_eq!(code, 200);
    let jpeg = base64::engine::general_purpose::STANDARD.decode(body["data"].as_str().unwrap()).unwrap();
    let img = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (320, 180));
}

/// Write the clip where ffmpeg can read it.
fn path_of_clip(data: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("sluice-clip-{}-{}.h264", std::process::id(), data.len()));
    std::fs::write(&p, data).expect("write clip");
    p.to_string_lossy().into_owned()
}

#[test]
fn bad_requests_get_exact_errors() {
    let server = Server::start();
    assert_eq!(server.rest("/rest-api/stream/snapshot", Some(r#"{"streamName":"nope"}"#)).0, 404);
    assert_eq!(server.rest("/rest-api/stream/snapshot", Some("")).0, 400);
    assert_eq!(server.rest("/rest-api/stream/snapshot", Some("{not json")).0, 400);
    assert_eq!(server.rest("/rest-api/stream/snapshot?format=gif", Some(r#"{"name":"x"}"#)).0, 400);

    // An audio-only stream never has a picture: 500 at once, with the reason.
    let mut ws = Wcs::connect(&server);
    let name = new_id("audio");
    let (_id, _peer) = publish(&mut ws, &name, Video::None);
    let t0 = Instant::now();
    let (code, body) =
        server.rest("/rest-api/stream/snapshot", Some(&json!({"streamName": name}).to_string()));
    assert_eq!((code, body["error"].as_str()), (500, Some("Stream has no video")));
    assert!(t0.elapsed() < Duration::from_secs(1));
    ws.send("snapshot", json!({"name": "missing", "mediaSessionId": "s2"}));
    let ev = ws.expect("notifyStreamEvent", |d| d["mediaSessionId"] == "s2");
    assert_eq!(
        (ev["type"].as_str(), ev["payload"]["info"].as_str()),
        (Some("snapshotFailed"), Some("Stream not found"))
    );
}

#[test]
fn a_stream_with_undecodable_video_fails_within_3_s() {
    let server = Server::start();
    let mut ws = Wcs::connect(&server);
    let name = new_id("junk");
    // The synthetic frames have valid framing but no decodable picture.
    let (_id, _peer) = publish(&mut ws, &name, Video::H264);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (code, body) =
        server.rest("/rest-api/stream/snapshot", Some(&json!({"streamName": name}).to_string()));
    assert_eq!(code, 500, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("Failed to decode"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[test]
fn fifty_concurrent_snapshots_share_one_decode_and_viewers_lose_nothing() {
    let server = Server::start();
    let data = clip(10, "640x360");
    let mut ws = Wcs::connect(&server);
    let name = new_id("busy");
    let (_id, publisher) = publish_clip(&mut ws, &name, Clip::from_annexb(&data, usize::MAX));
    let mut vws = Wcs::connect(&server);
    let (_vid, viewer) = play(&mut vws, &name);
    viewer.wait_until(STEP, "viewer frames", |s| s.video_frames.load(Ordering::Relaxed) > 10);

    let (sent0, got0) = (publisher.stats.video_sent.load(Ordering::Relaxed), viewer.video());
    let rest = server.rest;
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || {
                let url = format!("http://127.0.0.1:{rest}/rest-api/stream/snapshot");
                let r = ureq::post(&url).send_string(&json!({"streamName": name}).to_string());
                r.map(|r| r.status()).unwrap_or_else(|e| match e {
                    ureq::Error::Status(c, _) => c,
                    _ => 0,
                })
            })
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    std::thread::sleep(Duration::from_millis(500));
    let (sent, got) = (publisher.stats.video_sent.load(Ordering::Relaxed) - sent0, viewer.video() - got0);
    eprintln!("during the burst: publisher sent {sent} frames, viewer got {got}");
    assert!(got + 3 >= sent, "viewer lost frames: sent {sent}, got {got}");
    assert!(server.log_text().matches("snapshot decoded").count() < 50, "decodes were shared");
}
