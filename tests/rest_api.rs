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
    assert_eq!(server.rest("/rest-api/stream/terminate", Some("{}")).0, 200);
    for id in [p1, p2] {
        assert_eq!(a.status(&id)["status"], "UNPUBLISHED");
    }
    let resp =
        ureq::get(&format!("http://127.0.0.1:{}/rest-api/stream/find_all", server.rest)).call().unwrap();
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let health = ureq::get(&format!("http://127.0.0.1:{}/health", server.http)).call().unwrap();
    assert_eq!(health.status(), 200);
}
