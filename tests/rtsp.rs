//! RTSP pull: a real RTSP server (GStreamer's, tests/support/rtsp_camera.py: H.264 test pattern +
//! AAC tone) on loopback is played by URL. Two viewers share one pull (the camera sees one
//! client); the exact WCS errors for a closed port, a wrong path, a malformed URL and a host off
//! the allow-list; by default loopback (by address or by name) is refused and never connected
//! to; credentials never reach the log or the stream objects; a camera that dies stops its
//! viewers. Needs the packages of the test camera (`Camera` of tests/common: python3-gi,
//! gir1.2-gst-rtsp-server-1.0, GStreamer's plugins; tests/run-all.sh installs them).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::json;

/// A server that may pull the test camera. The camera listens on 127.0.0.1, which the default
/// policy refuses (an `rtsp://` name never reaches loopback or private hosts unless
/// `--rtsp-allow` says so), so the tests allow that one address, as an operator allows a LAN.
fn server_with(extra: &[&str]) -> Server {
    let mut args = vec!["--rtsp-allow", "127.0.0.1"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

fn server() -> Server {
    server_with(&[])
}

/// Play `name` and expect FAILED with `info`.
fn play_fails(ws: &mut Wcs, name: &str, info: &str) {
    let offer = Offering::new(false, Video::H264);
    let (_, res) = request_play(ws, name, &offer.sdp);
    let st = res.expect_err("play must fail");
    assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("FAILED"), Some(info)), "{name}: {st}");
}

#[test]
fn two_viewers_share_one_pull_of_the_camera() {
    let cam = Camera::start();
    let server = server();
    let url = cam.url("/cam");
    // Both viewers ask at once, before the camera answers either.
    let mut ws1 = Wcs::connect(&server);
    let mut ws2 = Wcs::connect(&server);
    let (o1, o2) = (Offering::new(false, Video::H264), Offering::new(false, Video::H264));
    let id1 = new_id("play");
    let id2 = new_id("play");
    for (ws, id, o) in [(&mut ws1, &id1, &o1), (&mut ws2, &id2, &o2)] {
        ws.send("playStream", json!({"mediaSessionId": id, "name": url, "published": false, "sdp": o.sdp}));
    }
    let a1 = remote_sdp_or_status(&mut ws1, &id1).unwrap_or_else(|st| panic!("viewer 1: {st}"));
    let a2 = remote_sdp_or_status(&mut ws2, &id2).unwrap_or_else(|st| panic!("viewer 2: {st}"));
    let (p1, p2) = (o1.start(&a1), o2.start(&a2));
    for (ws, id) in [(&mut ws1, &id1), (&mut ws2, &id2)] {
        let st = ws.status(id);
        assert_eq!(st["status"], "PLAYING", "{st}");
        assert_eq!(st["name"], url.as_str());
    }
    for p in [&p1, &p2] {
        p.wait_until(STEP, "video and audio", |s| {
            s.video_frames.load(Ordering::Relaxed) >= 45 && s.audio_frames.load(Ordering::Relaxed) >= 25
        });
        assert_eq!(*p.stats.video_codec.lock().unwrap(), Some(str0m::format::Codec::H264));
    }
    assert_eq!(cam.clients(), 1, "the camera was pulled more than once");
    let (code, found) = find_published(&server, &url);
    assert_eq!(code, 200, "{found}");
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    let s = &found[0];
    assert_eq!(
        (s["mediaProvider"].as_str(), s["hasAudio"].as_bool(), s["width"].as_u64(), s["height"].as_u64()),
        (Some("RTSP"), Some(true), Some(640), Some(360)),
        "{s}"
    );

    // A snapshot of the pull is the camera's picture size.
    let (code, body) =
        server.rest("/rest-api/stream/snapshot", Some(&json!({"streamName": url}).to_string()));
    assert_eq!(code, 200, "{body}");
    let png = base64::engine::general_purpose::STANDARD.decode(body["data"].as_str().unwrap()).unwrap();
    let img = image::load_from_memory(&png).expect("PNG");
    assert_eq!((img.width(), img.height()), (640, 360));

    // Both viewers leave: the pull stays for its idle grace (60 s), and a new viewer joins it.
    ws1.send("stopStream", json!({"mediaSessionId": id1, "name": url}));
    ws2.send("stopStream", json!({"mediaSessionId": id2, "name": url}));
    assert_eq!(ws1.status(&id1)["status"], "STOPPED");
    assert_eq!(ws2.status(&id2)["status"], "STOPPED");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(find_published(&server, &url).0, 200);
    let (_, p3) = play(&mut ws1, &url);
    p3.wait_until(STEP, "video", |s| s.video_frames.load(Ordering::Relaxed) >= 15);
    assert_eq!(cam.clients(), 1);
}

#[test]
fn rtsp_failures_have_the_wcs_strings() {
    let cam = Camera::start();
    let server = server();
    let mut ws = Wcs::connect(&server);
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    play_fails(&mut ws, &format!("rtsp://127.0.0.1:{closed}/cam"), "Failed to connect to rtsp stream");
    play_fails(&mut ws, &cam.url("/nope"), "Rtsp stream not found");
    for bad in ["rtsp:/cam", "rtsp://", "rtsps://127.0.0.1/cam", "rtsp://a b/c"] {
        play_fails(&mut ws, bad, "Rtsp has wrong format");
    }
    // Failed pulls leave nothing behind.
    let (code, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!(code, 200);
    assert!(all.as_array().is_some_and(|a| a.iter().all(|s| s["published"] == false)), "{all}");

    // With an allow-list, other hosts are refused before anything is fetched.
    let strict = Server::start_with(&["--rtsp-allow", "*.cams.example", "--rtsp-allow", "10.1.2.*"]);
    let mut ws = Wcs::connect(&strict);
    play_fails(&mut ws, &cam.url("/cam"), "Restricted access");
    play_fails(&mut ws, "rtsp://127.0.0.1@10.9.9.9/cam", "Restricted access");
    assert_eq!(cam.clients(), 1, "only the 404 probe reached the camera");
}

#[test]
fn by_default_loopback_is_refused_and_never_connected_to() {
    let cam = Camera::start();
    // No --rtsp-allow: only hosts whose every address is public may be pulled.
    let server = Server::start();
    let mut ws = Wcs::connect(&server);
    let port = cam.port;
    for name in [
        format!("rtsp://127.0.0.1:{port}/x"),
        format!("rtsp://localhost:{port}/x"),
        format!("rtsp://[::1]:{port}/x"),
        // A spelling of 127.0.0.1 that only the resolver understands.
        format!("rtsp://2130706433:{port}/x"),
        format!("rtsp://user:pw@LocalHost:{port}/x"),
        "rtsp://10.0.0.5:22/x".to_string(),
        format!("rtsp://0.0.0.0:{port}/x"),
    ] {
        play_fails(&mut ws, &name, "Restricted access");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cam.clients(), 0, "the camera saw a connection");
    let (code, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!(code, 200);
    assert!(all.as_array().is_some_and(|a| a.iter().all(|s| s["published"] == false)), "{all}");
    let log = server.log_text();
    assert!(log.contains("RTSP pull refused"), "the log says why");
    // The same camera, allowed by address, plays.
    let allowed = server_with(&[]);
    let mut ws = Wcs::connect(&allowed);
    let (_, peer) = play(&mut ws, &cam.url("/cam"));
    peer.wait_until(STEP, "video", |s| s.video_frames.load(Ordering::Relaxed) >= 10);
    assert_eq!(cam.clients(), 1);
}

#[test]
fn credentials_never_reach_logs_or_stream_objects() {
    let cam = Camera::start();
    let server = server();
    let mut ws = Wcs::connect(&server);
    let secret = "s3cr3t-Pw";
    let with_creds = format!("rtsp://admin:{secret}@127.0.0.1:{}/video", cam.port);
    let (id, peer) = play(&mut ws, &with_creds);
    peer.wait_until(STEP, "video", |s| s.video_frames.load(Ordering::Relaxed) >= 15);
    let plain = cam.url("/video");
    let (code, found) = find_published(&server, &plain);
    assert_eq!(code, 200, "{found}");
    assert_eq!(found[0]["hasAudio"], false, "a video-only camera");
    let (_, all) = server.rest("/rest-api/stream/find_all", None);
    assert!(!all.to_string().contains(secret), "{all}");
    let viewer = all.as_array().unwrap().iter().find(|s| s["mediaSessionId"] == id.as_str()).cloned();
    assert_eq!(viewer.map(|v| v["name"].clone()), Some(json!(plain)));
    // The same camera without the credentials does not join the authenticated pull.
    let mut ws2 = Wcs::connect(&server);
    play_fails(&mut ws2, &plain, "Restricted access");
    // A malformed URL with credentials is refused and logged redacted.
    play_fails(&mut ws2, &format!("rtsp://admin:{secret}@/x"), "Rtsp has wrong format");
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log_text();
    assert!(!log.contains(secret), "the password is in the server log");
    assert!(log.contains("RTSP pull playing"), "no pull in the log");
}

#[test]
fn a_camera_that_dies_stops_its_viewers() {
    let mut cam = Camera::start();
    let server = server();
    let mut ws = Wcs::connect(&server);
    let url = cam.url("/cam");
    let (id, peer) = play(&mut ws, &url);
    peer.wait_until(STEP, "video", |s| s.video_frames.load(Ordering::Relaxed) >= 15);
    cam.kill();
    let t0 = Instant::now();
    let st = ws.status(&id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by publisher stop"))
    );
    eprintln!("viewer stopped {:?} after the camera died", t0.elapsed());
    assert_eq!(find_published(&server, &url).0, 404);
}

#[test]
fn udp_transport_on_request() {
    let cam = Camera::start();
    let server = server_with(&["--rtsp-transport", "udp"]);
    let mut ws = Wcs::connect(&server);
    let url = cam.url("/cam");
    let (_id, peer) = play(&mut ws, &url);
    peer.wait_until(STEP, "video and audio over RTP/UDP", |s| {
        s.video_frames.load(Ordering::Relaxed) >= 30 && s.audio_frames.load(Ordering::Relaxed) >= 20
    });
    let (_, found) = find_published(&server, &url);
    assert_eq!(found[0]["transport"], "UDP", "{found}");
}
