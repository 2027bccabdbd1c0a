//! Publish and play with real WebRTC peers (str0m clients) over the WCS protocol.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn three_subscribers_receive_every_frame_intact() {
    let server = Server::start();
    let mut pub_ws = Wcs::connect(&server);
    let name = new_id("cam");
    let (pub_id, publisher) = publish(&mut pub_ws, &name, Video::H264);
    publisher.wait_until(STEP, "connected", |s| s.connected.load(Ordering::Relaxed));
    // Past FRESH_GOP (500 ms) the held keyframe is no longer fresh: a viewer's start asks for one.
    std::thread::sleep(Duration::from_millis(600));

    let mut viewers = Vec::new();
    for _ in 0..3 {
        let mut ws = Wcs::connect(&server);
        let t0 = Instant::now();
        let (id, peer) = play(&mut ws, &name);
        // A viewer must see video within a second: the server asks the publisher for a keyframe.
        peer.wait_until(Duration::from_secs(1), "first keyframe", |s| {
            s.keyframes.load(Ordering::Relaxed) > 0
        });
        eprintln!("viewer {id}: PLAYING + first keyframe after {:?}", t0.elapsed());
        viewers.push((ws, id, peer));
    }
    assert!(
        publisher.stats.keyframe_requests.load(Ordering::Relaxed) >= 1,
        "the publisher was asked for keyframes"
    );

    // Two seconds of media: ~60 video frames and ~100 audio frames per viewer.
    let before: Vec<(u64, u64)> = viewers.iter().map(|(_, _, p)| (p.video(), p.audio())).collect();
    std::thread::sleep(Duration::from_secs(2));
    for ((_, id, p), (v0, a0)) in viewers.iter().zip(before) {
        let (v, a) = (p.video() - v0, p.audio() - a0);
        assert!(v >= 45, "{id}: only {v} video frames in 2 s");
        assert!(a >= 75, "{id}: only {a} audio frames in 2 s");
        assert_eq!(p.corrupt(), 0, "{id}: frames differ from what was published");
        assert_eq!(*p.stats.video_codec.lock().unwrap(), Some(str0m::format::Codec::H264));
    }

    // REST sees one publisher and three players.
    let (code, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!(code, 200);
    let all = all.as_array().expect("array").clone();
    assert_eq!(all.len(), 4, "{all:?}");
    let p = all.iter().find(|s| s["published"] == true).expect("publisher listed");
    assert_eq!(p["name"], name.as_str());
    assert_eq!(p["status"], "PUBLISHING");
    assert_eq!(p["videoCodec"], "H264");
    assert_eq!(p["audioCodec"], "opus");
    assert_eq!(all.iter().filter(|s| s["status"] == "PLAYING").count(), 3);

    // The publisher stops: it gets UNPUBLISHED, every viewer STOPPED "Stopped by publisher stop".
    pub_ws.send("unPublishStream", json!({"mediaSessionId": pub_id, "name": name, "published": true}));
    let st = pub_ws.status(&pub_id);
    assert_eq!(st["status"], "UNPUBLISHED", "{st}");
    for (ws, id, _) in viewers.iter_mut() {
        let st = ws.status(id);
        assert_eq!(st["status"], "STOPPED", "{st}");
        assert_eq!(st["info"], "Stopped by publisher stop");
    }
    let (code, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!((code, all), (200, json!([])));
}

#[test]
fn vp8_publisher_is_forwarded_as_vp8() {
    let server = Server::start();
    let mut pub_ws = Wcs::connect(&server);
    let name = new_id("vp8");
    let (_id, _publisher) = publish(&mut pub_ws, &name, Video::Vp8);
    let mut ws = Wcs::connect(&server);
    let (_pid, peer) = play(&mut ws, &name);
    peer.wait_until(Duration::from_secs(3), "30 VP8 frames", |s| {
        s.video_frames.load(Ordering::Relaxed) >= 30
    });
    assert_eq!(*peer.stats.video_codec.lock().unwrap(), Some(str0m::format::Codec::Vp8));
    assert_eq!(peer.corrupt(), 0);
    assert!(peer.audio() > 0);
}

#[test]
fn a_viewer_that_stops_leaves_the_others_playing() {
    let server = Server::start();
    let mut pub_ws = Wcs::connect(&server);
    let name = new_id("cam");
    let (_pub_id, _publisher) = publish(&mut pub_ws, &name, Video::H264);
    let mut a = Wcs::connect(&server);
    let (a_id, a_peer) = play(&mut a, &name);
    let mut b = Wcs::connect(&server);
    let (_b_id, b_peer) = play(&mut b, &name);
    a_peer.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);

    a.send("stopStream", json!({"mediaSessionId": a_id, "name": name, "published": false}));
    let st = a.status(&a_id);
    assert_eq!(st["status"], "STOPPED", "{st}");
    let n = b_peer.video();
    std::thread::sleep(Duration::from_millis(500));
    assert!(b_peer.video() > n + 5, "the other viewer keeps receiving");

    // A publisher that goes away (socket closed, no unPublishStream) ends its viewers too.
    pub_ws.close();
    let st = b.status(&_b_id);
    assert_eq!(st["status"], "STOPPED", "{st}");
    assert_eq!(st["info"], "Stopped by publisher stop");
    let (code, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!((code, all), (200, json!([])), "everything freed");
}

/// A viewer whose offer has transport-wide CC gets it in the answer (the server estimates the
/// bandwidth towards it); with `--no-viewer-bwe` it does not, and still plays.
#[test]
fn viewer_bandwidth_estimation_follows_no_viewer_bwe() {
    for (args, estimated) in [(&[][..], true), (&["--no-viewer-bwe"][..], false)] {
        let server = Server::start_with(args);
        let mut pub_ws = Wcs::connect(&server);
        let name = new_id("cam");
        let (_pub_id, _publisher) = publish(&mut pub_ws, &name, Video::H264);
        let mut ws = Wcs::connect(&server);
        let offer = Offering::new(false, Video::H264);
        assert!(offer.sdp.contains("transport-wide-cc"), "the test viewer offers it");
        let (id, answer) = request_play(&mut ws, &name, &offer.sdp);
        let answer = answer.unwrap_or_else(|st| panic!("play refused: {st}"));
        assert_eq!(answer.contains("transport-wide-cc"), estimated, "{args:?}: {answer}");
        let peer = offer.start(&answer);
        assert_eq!(ws.status(&id)["status"], "PLAYING");
        peer.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 5);
    }
}
