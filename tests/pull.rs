//! WebRTC pull between two real servers on loopback: an edge pulls a stream published on an
//! origin (`/rest-api/pull/pull`) and serves it to its own viewers, bytes intact; the origin
//! sees one viewer however many the edge has; the pull is listed, terminated, and ends when
//! the origin's publisher stops. Refusals: a host off `--pull-allow` (loopback by default), a bad
//! uri, an unknown remote stream, a taken local name.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn pull_body(origin: &Server, remote: &str, local: &str) -> String {
    json!({ "uri": origin.ws_url(), "remoteStreamName": remote, "localStreamName": local }).to_string()
}

fn viewers_of(server: &Server, name: &str) -> usize {
    let (_, all) = server.rest("/rest-api/stream/find_all", None);
    all.as_array().map_or(0, |a| a.iter().filter(|s| s["name"] == name && s["published"] == false).count())
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_edge_pulls_from_an_origin_and_serves_its_viewers() {
    let origin = Server::start();
    let edge = Server::start_with(&["--pull-allow", "127.0.0.1"]);
    let mut pws = Wcs::connect(&origin);
    let (_pub_id, _publisher) = publish(&mut pws, "cam", Video::H264);

    let (status, v) = edge.rest("/rest-api/pull/pull", Some(&pull_body(&origin, "cam", "edge-cam")));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "PUBLISHING");
    assert_eq!(v["localStreamName"], "edge-cam");
    assert_eq!(viewers_of(&origin, "cam"), 1, "the edge is the origin's one viewer");
    let (_, list) = edge.rest("/rest-api/pull/find_all", None);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["remoteStreamName"], "cam");
    let found = wait_published(&edge, "edge-cam");
    assert_eq!(found["mediaProvider"], "WebRTC", "{found}");

    // Two viewers on the edge: the frames the origin's publisher wrote, byte for byte.
    let mut v1 = Wcs::connect(&edge);
    let mut v2 = Wcs::connect(&edge);
    let (id1, p1) = play(&mut v1, "edge-cam");
    let (_id2, p2) = play(&mut v2, "edge-cam");
    for p in [&p1, &p2] {
        p.wait_until(Duration::from_secs(10), "video through the edge", |s| {
            s.video_frames.load(Ordering::Relaxed) > 30 && s.audio_frames.load(Ordering::Relaxed) > 10
        });
        assert_eq!(p.corrupt(), 0, "frames changed on the way");
    }
    assert_eq!(viewers_of(&origin, "cam"), 1, "still one viewer at the origin");

    // Terminate: the edge's viewers stop, the origin loses its viewer.
    let (status, _) =
        edge.rest("/rest-api/pull/terminate", Some(&json!({ "localStreamName": "edge-cam" }).to_string()));
    assert_eq!(status, 200);
    let st = v1.status(&id1);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by publisher stop"))
    );
    wait_for("the origin's viewer to go", || viewers_of(&origin, "cam") == 0);
    wait_for("the pull to be unlisted", || edge.rest("/rest-api/pull/find_all", None).1 == json!([]));
    let (status, _) =
        edge.rest("/rest-api/pull/terminate", Some(&json!({ "localStreamName": "edge-cam" }).to_string()));
    assert_eq!(status, 404);
}

#[test]
fn the_pull_ends_when_the_origin_publisher_stops() {
    let origin = Server::start();
    let edge = Server::start_with(&["--pull-allow", "127.0.0.1"]);
    let mut pws = Wcs::connect(&origin);
    let (pub_id, _publisher) = publish(&mut pws, "cam2", Video::Vp8);
    let (status, v) = edge.rest("/rest-api/pull/pull", Some(&pull_body(&origin, "cam2", "cam2")));
    assert_eq!(status, 200, "{v}");
    let mut vws = Wcs::connect(&edge);
    let (play_id, viewer) = play(&mut vws, "cam2");
    viewer.wait_until(Duration::from_secs(10), "VP8 through the edge", |s| {
        s.video_frames.load(Ordering::Relaxed) > 10
    });
    pws.send("unPublishStream", json!({ "mediaSessionId": pub_id, "name": "cam2" }));
    let st = vws.status(&play_id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by publisher stop"))
    );
    wait_for("the pull to end", || edge.rest("/rest-api/pull/find_all", None).1 == json!([]));
    assert!(edge.rest("/rest-api/stream/find", Some(r#"{"name":"cam2"}"#)).0 == 404);
}

#[test]
fn pull_refusals_are_clear() {
    let origin = Server::start();
    let guarded = Server::start(); // no --pull-allow: loopback is off limits
    let (status, v) = guarded.rest("/rest-api/pull/pull", Some(&pull_body(&origin, "x", "x")));
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().starts_with("Restricted access"), "{v}");

    let edge = Server::start_with(&["--pull-allow", "127.0.0.1"]);
    let cases: [(Value, u16); 4] = [
        (json!({ "remoteStreamName": "x" }), 400),
        (json!({ "uri": "http://127.0.0.1/", "remoteStreamName": "x" }), 400),
        (json!({ "uri": origin.ws_url() }), 400),
        (json!({ "uri": origin.ws_url(), "remoteStreamName": "no-such-stream" }), 404),
    ];
    for (body, code) in cases {
        let (status, v) = edge.rest("/rest-api/pull/pull", Some(&body.to_string()));
        assert_eq!(status, code, "{body} -> {v}");
    }
    // A closed port: 502, quickly.
    let started = Instant::now();
    let body = json!({ "uri": "ws://127.0.0.1:1/", "remoteStreamName": "x" }).to_string();
    assert_eq!(edge.rest("/rest-api/pull/pull", Some(&body)).0, 502);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A taken local name.
    let mut pws = Wcs::connect(&edge);
    let (_id, _p) = publish(&mut pws, "taken", Video::H264);
    let mut ows = Wcs::connect(&origin);
    let (_oid, _op) = publish(&mut ows, "remote", Video::H264);
    assert_eq!(edge.rest("/rest-api/pull/pull", Some(&pull_body(&origin, "remote", "taken"))).0, 409);
    assert_eq!(edge.rest("/rest-api/pull/find_all", None), (200, json!([])));
    assert_eq!(edge.rest("/rest-api/pull/terminate", Some("{}")).0, 400);
}
