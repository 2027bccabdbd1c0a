//! What the WCS web console and the SDK's diagnostics read from a node: `/?action=stat` (text,
//! parsed here exactly as the console's REST client parses it, and JSON), the `/rtsp/...` REST
//! family (a pull started over REST, listed, kept with no viewer, terminated), `/api/find_all`,
//! session debug logs (`sessionDebug` start/stop, `pushLogs`, the file the page downloads), and
//! the `inboundVideoRate`/`outboundVideoRate` reports a publisher and a viewer get every second
//! (and the same figures as `metrics` in `/stream/find`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// GET a path of the REST port; status and body as text.
fn rest_text(server: &Server, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{}", server.rest, path);
    match ureq::get(&url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// The console's parser (flashphoner-rest-api.js `stat.poll`): a line starting with '-' is a
/// group header (the word after the dashes, lower-cased); every other line is `key=value` of the
/// current group. A line before any header would be an error there (no current group).
fn parse_stat(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut groups: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.split('\n') {
        if line.starts_with('-') {
            let name: String =
                line.trim_start_matches('-').chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            assert!(!name.is_empty(), "header without a name: {line:?}");
            current = Some(name.to_lowercase());
            groups.entry(name.to_lowercase()).or_default();
        } else {
            let g = current.as_ref().unwrap_or_else(|| panic!("field before any header: {line:?}"));
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
            groups.get_mut(g).expect("group").insert(k.to_string(), v.to_string());
        }
    }
    groups
}

fn num(groups: &HashMap<String, HashMap<String, String>>, g: &str, k: &str) -> f64 {
    groups[g].get(k).unwrap_or_else(|| panic!("no {g}.{k} in {groups:?}")).parse().expect("a number")
}

#[test]
fn stat_counts_what_runs_in_the_console_format_and_as_json() {
    let server = Server::start();
    let (status, text) = rest_text(&server, "/?action=stat");
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("-----Connection-----\n"), "{text}");
    let idle = parse_stat(&text);
    for g in ["connection", "stream", "system", "core"] {
        assert!(idle.contains_key(g), "no {g} group: {text}");
    }
    assert_eq!(num(&idle, "stream", "streams_webrtc_in"), 0.0);
    assert!(num(&idle, "system", "system_memory_total") > num(&idle, "system", "system_memory_free"));
    assert!(num(&idle, "system", "system_memory_free") > 0.0);
    assert!(num(&idle, "core", "core_threads") >= 2.0);
    assert!(num(&idle, "system", "system_java_cpu_usage") >= 0.0);

    let mut publisher_ws = Wcs::connect(&server);
    let (_id, _pub_peer) = publish(&mut publisher_ws, "stat1", Video::H264);
    let mut viewer_ws = Wcs::connect(&server);
    let (_play_id, _viewer) = play(&mut viewer_ws, "stat1");

    let busy = parse_stat(&rest_text(&server, "/?action=stat&preventCache=123").1);
    assert_eq!(num(&busy, "stream", "streams_webrtc_in"), 1.0);
    assert_eq!(num(&busy, "stream", "streams_webrtc_out"), 1.0);
    assert_eq!(num(&busy, "stream", "streams_rtmp_in"), 0.0);
    assert_eq!(num(&busy, "connection", "connections_websocket"), 2.0);
    assert_eq!(num(&busy, "connection", "webrtc_peers"), 2.0);

    // JSON, one group asked for by its WCS-style name.
    let (status, v) = server.rest("/?action=stat&format=json&groups=stream_stats", None);
    assert_eq!(status, 200);
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["stream"], "{v}");
    assert_eq!(v["stream"]["streams_webrtc_in"], 1);

    // `/` without the action is no method.
    assert_eq!(rest_text(&server, "/").0, 404);
    assert_eq!(rest_text(&server, "/?action=other").0, 404);
    // The console's SIP view: no agents, an empty list.
    assert_eq!(server.rest("/rest-api/api/find_all", None), (200, json!([])));
}

#[test]
fn stat_is_behind_the_management_gate() {
    let server = Server::start_with(&["--api-key", "k1"]);
    let (status, _) = rest_text(&server, "/?action=stat");
    assert_eq!(status, 401);
    let url = format!("http://127.0.0.1:{}/?action=stat&token=k1", server.rest);
    assert_eq!(ureq::get(&url).call().map(|r| r.status()).unwrap_or(0), 200);
}

#[test]
fn rtsp_pull_started_over_rest_is_listed_kept_and_terminated() {
    let cam = Camera::start();
    let server = Server::start_with(&["--rtsp-allow", "127.0.0.1"]);
    let url = cam.url("/cam");

    let (status, v) = server.rest("/rest-api/rtsp/startup", Some(&json!({ "uri": url }).to_string()));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["uri"], url.as_str());
    assert_eq!(v["status"], "PUBLISHING");
    let id = v["localMediaSessionId"].as_str().expect("a media session id").to_string();

    let (status, all) = server.rest("/rest-api/rtsp/find_all", None);
    assert_eq!(status, 200);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all[0]["uri"], url.as_str());
    let (status, found) = server.rest("/rest-api/rtsp/find", Some(&json!({ "uri": url }).to_string()));
    assert_eq!((status, found[0]["localMediaSessionId"].as_str()), (200, Some(id.as_str())));
    // The stream is an ordinary published stream: the console's stream list shows it too.
    let (_, streams) = server.rest("/rest-api/stream/find_all", None);
    assert!(streams
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == url.as_str() && s["mediaProvider"] == "RTSP"));

    // A viewer comes and goes; a second startup joins the running pull (one camera client).
    let mut ws = Wcs::connect(&server);
    let (play_id, viewer) = play(&mut ws, &url);
    viewer.wait_until(Duration::from_secs(10), "video from the camera", |s| {
        s.video_frames.load(std::sync::atomic::Ordering::Relaxed) > 10
    });
    ws.send("stopStream", json!({ "mediaSessionId": play_id, "name": url }));
    assert_eq!(ws.status(&play_id)["status"], "STOPPED");
    let (status, again) = server.rest("/rest-api/rtsp/startup", Some(&json!({ "uri": url }).to_string()));
    assert_eq!((status, again["localMediaSessionId"].as_str()), (200, Some(id.as_str())));
    assert_eq!(cam.clients(), 1);

    // Terminate: gone from both lists; a second terminate finds nothing.
    let (status, _) = server.rest("/rest-api/rtsp/terminate", Some(&json!({ "uri": url }).to_string()));
    assert_eq!(status, 200);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while server.rest("/rest-api/rtsp/find_all", None).1 != json!([]) {
        assert!(std::time::Instant::now() < end, "pull still listed after terminate");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = server.rest("/rest-api/rtsp/terminate", Some(&json!({ "uri": url }).to_string()));
    assert_eq!(status, 404);
}

#[test]
fn rtsp_rest_refusals_are_clear_and_start_nothing() {
    let server = Server::start();
    let cases = [
        (json!({}), 400, "uri is required"),
        (json!({ "uri": "http://example.com/x" }), 400, "Rtsp has wrong format"),
        // Loopback is refused by default, before any packet is sent.
        (json!({ "uri": "rtsp://127.0.0.1:1/x" }), 403, "Restricted access"),
        (json!({ "uri": "rtsp://user:secret@10.0.0.5/x" }), 403, "Restricted access"),
    ];
    for (body, code, error) in cases {
        let (status, v) = server.rest("/rest-api/rtsp/startup", Some(&body.to_string()));
        assert_eq!((status, v["error"].as_str()), (code, Some(error)), "{body}");
    }
    // A destructive call needs its selector.
    assert_eq!(server.rest("/rest-api/rtsp/terminate", Some("{}")).0, 400);
    assert_eq!(server.rest("/rest-api/rtsp/find_all", None), (200, json!([])));
    assert!(!server.log_text().contains("secret"), "credentials reached the log");
}

#[test]
fn session_debug_log_is_written_and_served_for_download() {
    let server = Server::start();
    let mut ws = Wcs::connect(&server);
    ws.send("sessionDebug", json!({ "command": "start" }));
    let started = ws.expect("notifySessionDebugEvent", |d| d["status"] == "STARTED");
    assert!(started.get("file").is_none());
    ws.send("pushLogs", json!({ "logs": "12:00:00 INFO core - hello from the client\n" }));
    let (id, _peer) = publish(&mut ws, "dbg1", Video::H264);
    ws.send("sessionDebug", json!({ "command": "stop" }));
    let stopped = ws.expect("notifySessionDebugEvent", |d| d["status"] == "STOPPED");
    let file = stopped["file"].as_str().expect("a file").to_string();
    assert!(file.starts_with("client/session-logs/session-") && file.ends_with(".log"), "{file}");

    // The page links `<its origin>/<file>`: the web port serves it.
    let (status, _, body) = server.web_get(&format!("/{file}"), &[]);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("text");
    assert!(text.contains("client: 12:00:00 INFO core - hello from the client"), "{text}");
    assert!(text.contains("in: {") && text.contains("publishStream") && text.contains(&id), "{text}");
    assert!(text.contains("out: {") && text.contains("setRemoteSDP"), "{text}");
    assert!(text.contains("PUBLISHING"), "{text}");
    // Nothing after the stop, and no other name is served.
    let (status, _, _) = server.web_get("/client/session-logs/session-0-0.log", &[]);
    assert_eq!(status, 404);

    // A stop without a start, and an unknown command.
    ws.send("sessionDebug", json!({ "command": "stop" }));
    let v = ws.expect("notifySessionDebugEvent", |_| true);
    assert_eq!((v["status"].as_str(), v.get("file")), (Some("STOPPED"), None));
    ws.send("sessionDebug", json!({ "command": "bogus" }));
    let fail = ws.expect("fail", |_| true);
    assert!(fail["info"].as_str().unwrap_or_default().contains("Unknown command"), "{fail}");
}

/// The first `kind` report for `id` with video flowing.
fn rate_report(ws: &mut Wcs, kind: &str, id: &str) -> Value {
    ws.expect(kind, |d| d["mediaSessionId"] == id && d["videoRate"].as_u64() > Some(0))
}

#[test]
fn publisher_and_viewer_get_video_rate_reports_and_find_shows_them() {
    let server = Server::start();
    let mut pws = Wcs::connect(&server);
    let (pub_id, _publisher) = publish(&mut pws, "rate1", Video::H264);
    let mut vws = Wcs::connect(&server);
    let (play_id, viewer) = play(&mut vws, "rate1");
    viewer.wait_until(Duration::from_secs(10), "video", |s| {
        s.video_frames.load(std::sync::atomic::Ordering::Relaxed) > 20
    });

    let inbound = rate_report(&mut pws, "inboundVideoRate", &pub_id);
    let outbound = rate_report(&mut vws, "outboundVideoRate", &play_id);
    for r in [&inbound, &outbound] {
        assert!(r["fps"].as_f64() > Some(5.0), "{r}");
        for k in ["nack", "pli", "lostPackets", "width", "height", "videoRate"] {
            assert!(r[k].is_u64(), "{k} in {r}");
        }
    }
    // The synthetic publisher sends well under a megabit.
    assert!(inbound["videoRate"].as_u64() < Some(5_000_000), "{inbound}");

    // An audio rate needs two samples of the audio counters, a second apart, which may come
    // after the first video report: wait until both entries show one.
    let query = json!({ "name": "rate1" }).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let (status, found) = server.rest("/rest-api/stream/find", Some(&query));
        assert_eq!(status, 200);
        let entries = found.as_array().expect("array");
        let rated = |k: &str| entries.iter().all(|s| s["metrics"][k].as_u64() > Some(0));
        if (entries.len() == 2 && rated("videoRate") && rated("audioRate"))
            || std::time::Instant::now() > deadline
        {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for s in found.as_array().expect("array") {
        assert!(s["metrics"]["videoRate"].as_u64() > Some(0), "{s}");
        assert!(s["metrics"]["audioRate"].as_u64() > Some(0), "{s}");
        if s["published"] == true {
            assert_eq!(s["viewers"], 1, "{s}");
        } else {
            assert!(s.get("viewers").is_none(), "{s}");
        }
    }
    // And on /metrics, by stream.
    let (_, text) = rest_text(&server, "/metrics");
    let line = text
        .lines()
        .find(|l| l.starts_with("sluice_stream_video_bitrate{stream=\"rate1\"}"))
        .unwrap_or_else(|| panic!("no bitrate series in {text}"));
    let bps: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a value");
    assert!(bps > 0.0, "{line}");
}

#[test]
fn a_requested_play_size_is_noted_in_the_playing_info() {
    let server = Server::start();
    let mut pws = Wcs::connect(&server);
    let (_pub_id, _publisher) = publish(&mut pws, "size1", Video::H264);
    let mut vws = Wcs::connect(&server);
    let offer = Offering::new(false, Video::H264);
    let id = new_id("play");
    vws.send(
        "playStream",
        json!({"mediaSessionId": id, "name": "size1", "published": false, "width": 320, "height": 240,
               "sdp": offer.sdp}),
    );
    let answer = remote_sdp_or_status(&mut vws, &id).expect("an answer");
    let _viewer = offer.start(&answer);
    let st = vws.status(&id);
    assert_eq!(st["status"], "PLAYING", "{st}");
    let info = st["info"].as_str().unwrap_or_default();
    assert!(info.starts_with("Play size not applied") && info.ends_with("320x240"), "{st}");
}
