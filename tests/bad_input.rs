//! Every error path of the signalling gets its exact status and info, and leaves the server
//! serving others.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;
use tungstenite::Message;

#[test]
fn duplicate_name_and_unknown_stream() {
    let server = Server::start();
    let mut a = Wcs::connect(&server);
    let name = new_id("dup");
    let (_id, _peer) = publish(&mut a, &name, Video::H264);

    let mut b = Wcs::connect(&server);
    let (_id, _offer, res) = request_publish(&mut b, &name, Video::H264);
    let st = res.expect_err("second publisher of one name is refused");
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("FAILED"), Some("Stream name is already in use"))
    );

    let offer = Offering::new(false, Video::H264);
    let (_id, res) = request_play(&mut b, "no-such-stream", &offer.sdp);
    let st = res.expect_err("unknown name is refused");
    assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("FAILED"), Some("Stream not found")));

    // availableStream answers with the strings "true"/"false".
    b.send("availableStream", json!({"mediaSessionId": "q1", "name": name}));
    assert_eq!(b.expect("availableStream", |d| d["id"] == "q1")["status"], "true");
    b.send("availableStream", json!({"mediaSessionId": "q2", "name": "nope"}));
    let r = b.expect("availableStream", |d| d["id"] == "q2");
    assert_eq!((r["status"].as_str(), r["info"].as_str()), (Some("false"), Some("Stream not found")));
}

#[test]
fn duplicate_media_session_id_is_refused() {
    let server = Server::start();
    let mut a = Wcs::connect(&server);
    let name = new_id("s");
    let (id, _peer) = publish(&mut a, &name, Video::H264);
    let offer = Offering::new(false, Video::H264);
    a.send("playStream", json!({"mediaSessionId": id, "name": name, "sdp": offer.sdp}));
    let st = a.status(&id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("FAILED"), Some("MediaSessionId is already in use"))
    );
    // The original stream is untouched.
    let (code, found) =
        server.rest("/rest-api/stream/find", Some(&json!({"mediaSessionId": id}).to_string()));
    assert_eq!(code, 200);
    assert_eq!(found[0]["status"], "PUBLISHING");
}

#[test]
fn malformed_frames_get_fail_and_the_session_goes_on() {
    let server = Server::start();
    let mut c = Wcs::open(&server.ws_url());
    // Before `connection`, stream requests are refused with "Session not ready".
    c.send("publishStream", json!({"mediaSessionId": "early", "name": "x", "sdp": "v=0"}));
    let st = c.status("early");
    assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("FAILED"), Some("Session not ready")));

    c.send("connection", json!({"appKey": "defaultApp"}));
    c.expect("getUserData", |_| true);

    c.send_text("this is not json");
    let f = c.expect("fail", |_| true);
    assert!(f["info"].as_str().unwrap().contains("not JSON"), "{f}");

    c.send_text(r#"{"message":"frobnicate","data":[{}]}"#);
    let f = c.expect("fail", |_| true);
    assert_eq!(f["info"], "Unknown message \"frobnicate\"");

    c.send_text(r#"{"data":[{}]}"#);
    c.expect("fail", |f| f["info"].as_str().unwrap().contains("no \"message\""));

    // Missing fields: the stream named by mediaSessionId is failed through `fail`.
    c.send("playStream", json!({"mediaSessionId": "m1", "name": "x"}));
    let f = c.expect("fail", |f| f["id"] == "m1");
    assert_eq!((f["apiMethod"].as_str(), f["status"].as_str()), (Some("StreamStatusEvent"), Some("FAILED")));
    assert!(f["info"].as_str().unwrap().contains("sdp"), "{f}");
    c.send("publishStream", json!({"name": "x", "sdp": "v=0"}));
    c.expect("fail", |f| f["info"].as_str().unwrap().contains("mediaSessionId"));

    // Garbage SDP: FAILED with the reason.
    c.send(
        "publishStream",
        json!({"mediaSessionId": "g1", "name": new_id("g"), "sdp": "v=0\r\nthis is not sdp"}),
    );
    let st = c.status("g1");
    assert_eq!(st["status"], "FAILED");
    assert!(st["info"].as_str().unwrap().starts_with("Failed by error: invalid SDP offer"), "{st}");

    // An offer without a single usable codec: "No common codecs".
    let vp9_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
        a=setup:actpass\r\na=rtpmap:98 VP9/90000\r\n";
    c.send("publishStream", json!({"mediaSessionId": "v9", "name": new_id("v9"), "sdp": vp9_only}));
    let st = c.status("v9");
    assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("FAILED"), Some("No common codecs")));

    // Binary frames are not part of the protocol.
    c.send_message(Message::binary(vec![1u8, 2, 3])).unwrap();
    c.expect("fail", |f| f["info"].as_str().unwrap().contains("Binary"));

    // Stopping something unknown still resolves the client's stream.
    c.send("stopStream", json!({"mediaSessionId": "ghost", "name": "x"}));
    assert_eq!(c.status("ghost")["status"], "STOPPED");

    // After all that, this session still publishes.
    let (_id, _peer) = publish(&mut c, &new_id("after"), Video::H264);
}

#[test]
fn a_10_mb_frame_closes_that_socket_only() {
    let server = Server::start();
    let mut other = Wcs::connect(&server);
    let name = new_id("keep");
    let (_id, peer) = publish(&mut other, &name, Video::H264);

    let mut big = Wcs::connect(&server);
    let huge = format!(r#"{{"message":"ping","data":["{}"]}}"#, "x".repeat(10 << 20));
    let _ = big.send_message(Message::text(huge));
    let closed = big.wait_closed(STEP).expect("server closes the oversized socket");
    assert_eq!(closed, Some(1009), "close code");

    // The other session and its stream are unaffected. Once the held GOP is no longer fresh
    // (its keyframe over FRESH_GOP old), a viewer's start asks the publisher for a keyframe.
    std::thread::sleep(Duration::from_millis(600));
    let n = peer.stats.keyframe_requests.load(Ordering::Relaxed);
    let mut viewer = Wcs::connect(&server);
    let (_pid, vpeer) = play(&mut viewer, &name);
    vpeer.wait_until(STEP, "frames", |s| s.video_frames.load(Ordering::Relaxed) > 10);
    assert!(peer.stats.keyframe_requests.load(Ordering::Relaxed) > n);
}

#[test]
fn vanished_publisher_session_frees_everything() {
    let server = Server::start();
    let mut a = Wcs::connect(&server);
    let name = new_id("gone");
    let (_id, peer) = publish(&mut a, &name, Video::H264);
    let mut v = Wcs::connect(&server);
    let (vid, _vpeer) = play(&mut v, &name);

    // The publisher's process dies: its peer stops sending and its socket drops, no goodbye.
    peer.kill();
    drop(a);
    let st = v.status(&vid);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by publisher stop"))
    );
    let (code, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!((code, all), (200, json!([])));
    // The name is free again.
    let mut b = Wcs::connect(&server);
    let (_id, _p) = publish(&mut b, &name, Video::H264);
}

#[test]
fn a_publisher_that_never_connects_is_failed_not_left_pending() {
    let server = Server::start();
    let mut a = Wcs::connect(&server);
    let name = new_id("mute");
    let (id, offer, answer) = request_publish(&mut a, &name, Video::H264);
    assert!(answer.is_ok());
    drop(offer); // never runs ICE
    let st = a
        .try_expect("notifyStreamStatusEvent", Duration::from_secs(20), |d| d["mediaSessionId"] == id)
        .expect("a final status within the connect timeout");
    assert_eq!((st["status"].as_str(), st["info"].as_str()), (Some("FAILED"), Some("Failed by ICE timeout")));
    assert_eq!(server.rest("/rest-api/stream/find_all", None).1, json!([]));
}

#[test]
fn stream_events_reach_subscribers() {
    let server = Server::start();
    let mut a = Wcs::connect(&server);
    let name = new_id("ev");
    let (id, _peer) = publish(&mut a, &name, Video::H264);
    let mut v = Wcs::connect(&server);
    let (vid, _vpeer) = play(&mut v, &name);

    a.send("sendStreamEvent", json!({"mediaSessionId": id, "type": "audioMuted"}));
    let e = v.expect("notifyStreamEvent", |d| d["type"] == "audioMuted");
    assert_eq!(e["mediaSessionId"], vid.as_str());
    // Mute notices carry an object with the stream's name (WCS pages read payload.streamName).
    assert_eq!(e["payload"], json!({"streamName": name}));
    a.send("sendStreamEvent", json!({"mediaSessionId": id, "type": "data", "payload": {"hello": 1}}));
    let e = v.expect("notifyStreamEvent", |d| d["type"] == "data");
    assert_eq!(e["payload"], json!({"hello": 1}));
    // The mute state is part of the stream object.
    let (_, found) = find_published(&server, &name);
    assert_eq!(found[0]["audioState"], json!({"muted": true}));
    // A late viewer learns the publisher is muted.
    let mut late = Wcs::connect(&server);
    let (lid, _lpeer) = play(&mut late, &name);
    let e = late.expect("notifyStreamEvent", |d| d["type"] == "audioMuted");
    assert_eq!(e["mediaSessionId"], lid.as_str());
    assert_eq!(e["payload"]["streamName"], name.as_str());
}

/// An offer that reuses a payload type across m-lines (found by fuzzing) made str0m assert
/// inside `accept_offer`: now it is refused like any offer that does not parse, and the session
/// and the server go on.
#[test]
fn an_offer_str0m_would_panic_on_is_refused_and_the_session_goes_on() {
    let server = Server::start();
    let mut ws = Wcs::connect(&server);
    let sdp = String::from_utf8_lossy(include_bytes!("support/sdp-offer-pt-claimed-twice.sdp")).to_string();
    for (message, published) in [("publishStream", true), ("playStream", false)] {
        let id = new_id("bad-sdp");
        ws.send(
            message,
            json!({"mediaSessionId": id, "name": "bad-sdp", "published": published, "sdp": sdp}),
        );
        let st = ws.status(&id);
        assert_eq!(st["status"], "FAILED", "{message}: {st}");
    }
    // The same session publishes normally afterwards.
    let (_id, _peer) = publish(&mut ws, "after-bad-sdp", Video::H264);
}
