//! The WCS REST API: /stream/find, /stream/find_all, /stream/terminate.

mod common;

use common::*;
use serde_json::json;

#[test]
fn find_and_terminate() {
    let server = Server::start();
    assert_eq!(server.rest("/rest-api/stream/find_all", None), (200, json!([])));
    assert_eq!(server.rest("/rest-api/stream/find_all", Some("")), (200, json!([])));

    let mut a = Wcs::connect(&server);
    let name = new_id("r");
    let (pid, _peer) = publish(&mut a, &name, Video::H264);
    let mut v = Wcs::connect(&server);
    let (vid, _vpeer) = play(&mut v, &name);

    let (code, found) =
        server.rest("/rest-api/stream/find", Some(&json!({"name": name, "published": "true"}).to_string()));
    assert_eq!(code, 200);
    let s = &found[0];
    assert_eq!(found.as_array().unwrap().len(), 1);
    for (k, want) in [
        ("mediaSessionId", json!(pid)),
        ("published", json!(true)),
        ("status", json!("PUBLISHING")),
        ("mediaProvider", json!("WebRTC")),
        ("appKey", json!("defaultApp")),
        ("mediaType", json!("publish")),
    ] {
        assert_eq!(s[k], want, "{k} in {s}");
    }
    assert!(s["sessionId"].as_str().unwrap().starts_with("/127.0.0.1:"), "{s}");
    assert!(s["createDate"].as_u64().unwrap() > 1_600_000_000_000);

    let (code, found) = server.rest("/rest-api/stream/find", Some(&json!({"status": "PLAYING"}).to_string()));
    assert_eq!((code, found[0]["mediaSessionId"].as_str()), (200, Some(vid.as_str())));
    assert_eq!(server.rest("/rest-api/stream/find", Some(r#"{"name":"nope"}"#)).0, 404);
    assert_eq!(server.rest("/rest-api/stream/find", Some("{not json")).0, 400);
    assert_eq!(server.rest("/rest-api/stream/find", Some(r#"{"status":"BOGUS"}"#)).0, 400);
    assert_eq!(server.rest("/rest-api/stream/terminate", Some(r#"{"name":"nope"}"#)).0, 404);
    assert_eq!(server.rest("/rest-api/no/such", Some("{}")).0, 404);

    // Terminating the publisher: UNPUBLISHED "Stopped by rest /terminate"; its viewer is stopped.
    let (code, _) =
        server.rest("/rest-api/stream/terminate", Some(&json!({"mediaSessionId": pid}).to_string()));
    assert_eq!(code, 200);
    let st = a.status(&pid);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("UNPUBLISHED"), Some("Stopped by rest /terminate"))
    );
    let st = v.status(&vid);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by publisher stop"))
    );
    assert_eq!(server.rest("/rest-api/stream/find_all", None), (200, json!([])));
}

#[test]
fn terminate_all_and_cors() {
    let server = Server::start();
    let mut a = Wcs::connect(&server);
    let (p1, _x) = publish(&mut a, &new_id("t"), Video::H264);
    let (p2, _y) = publish(&mut a, &new_id("t"), Video::Vp8);
    // A browser's CORS preflight, an empty POST or GET, `{}`, or another method on any REST
    // route ends nothing (issue 23: a preflight of terminate used to end every stream).
    let base = format!("http://127.0.0.1:{}", server.rest);
    for route in [
        "stream/terminate",
        "stream/find",
        "stream/find_all",
        "stream/snapshot",
        "stream/startRecording",
        "stream/stopRecording",
        "recorder/startup",
        "recorder/terminate",
        "recorder/find_all",
        "vod/startup",
        "vod/find",
        "vod/find_all",
        "vod/terminate",
        "turn/credentials",
        "nonexistent",
    ] {
        let url = format!("{base}/rest-api/{route}");
        let pre = ureq::request("OPTIONS", &url)
            .set("Origin", "https://elsewhere.example")
            .set("Access-Control-Request-Method", "POST")
            .set("Access-Control-Request-Headers", "content-type")
            .call()
            .unwrap_or_else(|e| panic!("preflight of {route}: {e}"));
        assert_eq!(pre.status(), 204, "{route}");
        assert_eq!(pre.header("access-control-allow-origin"), Some("*"), "{route}");
        assert!(pre.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{route}");
        for body in [Some(""), Some("{}"), None] {
            let code = server.rest(&format!("/rest-api/{route}"), body).0;
            assert!(code != 500 || route.contains("snapshot"), "{route} {body:?}: {code}");
        }
        let put = match ureq::request("PUT", &url).send_string("{}") {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(c, _)) => c,
            Err(e) => panic!("{e}"),
        };
        assert!(put == 405 || put == 404, "{route}: PUT answered {put}");
    }
    for id in [&p1, &p2] {
        assert!(a.status_now(id).is_none(), "stream {id} got a status: {:?}", a.status_now(id));
    }
    assert_eq!(server.rest("/rest-api/stream/find_all", None).1.as_array().map(|v| v.len()), Some(2));
    let (code, body) = server.rest("/rest-api/stream/terminate", Some("{}"));
    assert_eq!(code, 400, "{body}");
    // An explicit selector still ends many at once.
    assert_eq!(server.rest("/rest-api/stream/terminate", Some(r#"{"published": true}"#)).0, 200);
    for id in [p1, p2] {
        assert_eq!(a.status(&id)["status"], "UNPUBLISHED");
    }
    let resp =
        ureq::get(&format!("http://127.0.0.1:{}/rest-api/stream/find_all", server.rest)).call().unwrap();
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let health = ureq::get(&format!("http://127.0.0.1:{}/health", server.http)).call().unwrap();
    assert_eq!(health.status(), 200);
}
