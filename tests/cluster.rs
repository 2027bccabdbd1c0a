//! The cluster on a real `redis-server` (Debian package `redis-server`) and real sluice
//! processes on loopback: a stream published on one node plays on every other node through
//! one edge pull each, frames intact; names are unique across nodes; the origin's death stops
//! the edges' viewers and frees the name for a republish on another node; a Redis restart
//! keeps local streams and the nodes re-register; an edge drops its pull after its last viewer;
//! a node with the wrong cluster secret cannot pull from an origin with access control; a REST
//! snapshot on one node pictures a stream of another; terminate works across nodes.
//! The browser version across three network namespaces is tests/topology/cluster.spec.mjs.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "cluster-secret-for-tests";

/// A `redis-server` on a free loopback port, no persistence; killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut r = Redis { child: None, port, dir: TempDir::new("redis") };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let end = Instant::now() + STEP;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--cluster-redis", &url, "--cluster-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn viewers_of(server: &Server, name: &str) -> usize {
    let (_, all) = server.rest("/rest-api/stream/find_all", None);
    all.as_array().map_or(0, |a| a.iter().filter(|s| s["name"] == name && s["published"] == false).count())
}

fn cluster_streams(server: &Server) -> Value {
    server.rest("/rest-api/cluster/streams", None).1
}

fn health_cluster(server: &Server) -> Value {
    server.rest("/health", None).1["cluster"].clone()
}

fn wait_video(p: &Peer, what: &str) {
    let before = p.video();
    p.wait_until(Duration::from_secs(10), what, |s| s.video_frames.load(Ordering::Relaxed) > before + 30);
    assert_eq!(p.corrupt(), 0, "frames changed on the way ({what})");
}

#[test]
fn a_stream_published_on_one_node_plays_on_every_node_and_survives_its_origin() {
    let redis = Redis::start();
    let mut a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let c = node(&redis, &[]);
    wait_for("three nodes in /cluster/nodes", STEP, || {
        c.rest("/rest-api/cluster/nodes", None).1.as_array().map(Vec::len) == Some(3)
    });

    let mut pws = Wcs::connect(&a);
    let (_pub_id, _publisher) = publish(&mut pws, "cam", Video::H264);
    let a_id = format!("127.0.0.1:{}", a.ws);
    assert_eq!(cluster_streams(&b), json!([{ "streamName": "cam", "node": a_id }]));

    // Viewers on B and C: each edge pulls once from A.
    let (mut vb, mut vb2, mut vc) = (Wcs::connect(&b), Wcs::connect(&b), Wcs::connect(&c));
    let (idb, pb) = play(&mut vb, "cam");
    let (_idb2, pb2) = play(&mut vb2, "cam");
    let (idc, pc) = play(&mut vc, "cam");
    for (p, what) in [(&pb, "B"), (&pb2, "B, second viewer"), (&pc, "C")] {
        wait_video(p, what);
    }
    assert_eq!(viewers_of(&a, "cam"), 2, "one pull per edge, however many viewers it has");
    wait_for("B to list its edge pull", STEP, || {
        let nodes = c.rest("/rest-api/cluster/nodes", None).1;
        nodes.as_array().into_iter().flatten().any(|n| {
            n["id"] == format!("127.0.0.1:{}", b.ws) && n["edges"] == json!(["cam"]) && n["viewers"] == 2
        })
    });
    // Viewers now: A 2 (the pulls), B 2, C 1: C is where a new viewer should go.
    let c_id = format!("127.0.0.1:{}", c.ws);
    wait_for("C as the least loaded node", STEP, || {
        a.rest("/rest-api/cluster/node?streamName=cam", None).1["node"]["id"] == c_id.as_str()
    });
    let (code, best) = a.rest("/rest-api/cluster/node?streamName=cam", None);
    assert_eq!(code, 200, "{best}");
    assert_eq!(best["origin"], a_id.as_str(), "{best}");

    // The name is unique across the cluster: a publish of it on C fails.
    let mut cws = Wcs::connect(&c);
    let (id, offer, answer) = request_publish(&mut cws, "cam", Video::H264);
    let st = match answer {
        Ok(sdp) => {
            let _peer = offer.start(&sdp);
            cws.status(&id)
        }
        Err(st) => st,
    };
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("FAILED"), Some("Stream name is already in use")),
        "{st}"
    );

    // A dies: B's and C's viewers get STOPPED with the reason.
    a.sigkill();
    for (ws, id) in [(&mut vb, &idb), (&mut vc, &idc)] {
        let st = ws.status(id);
        assert_eq!(
            (st["status"].as_str(), st["info"].as_str()),
            (Some("STOPPED"), Some("Stopped by publisher stop")),
            "{st}"
        );
    }
    // Its record and claim expire; the name is then free on any node.
    wait_for("A's claim to expire", Duration::from_secs(10), || cluster_streams(&b) == json!([]));
    wait_for("A to leave /cluster/nodes", Duration::from_secs(10), || {
        b.rest("/rest-api/cluster/nodes", None).1.as_array().map(Vec::len) == Some(2)
    });
    let mut bws = Wcs::connect(&b);
    let (republish_id, _republisher) = publish(&mut bws, "cam", Video::H264);
    let mut vc2 = Wcs::connect(&c);
    let (idc2, pc2) = play(&mut vc2, "cam");
    wait_video(&pc2, "C, from the republish on B");
    assert_eq!(viewers_of(&b, "cam"), 1, "C pulls from B now");

    // terminate works cluster-wide: asked on C, B stops its publisher, C's viewer stops.
    let (code, v) = c.rest("/rest-api/cluster/terminate", Some(&json!({ "streamName": "cam" }).to_string()));
    assert_eq!((code, v["node"].as_str()), (200, Some(format!("127.0.0.1:{}", b.ws).as_str())), "{v}");
    let st = bws.status(&republish_id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("UNPUBLISHED"), Some("Stopped by rest /terminate")),
        "{st}"
    );
    let st = vc2.status(&idc2);
    assert_eq!(st["status"], "STOPPED", "{st}");
    let (code, _) = c.rest("/rest-api/cluster/terminate", Some(&json!({ "streamName": "cam" }).to_string()));
    wait_for("the claim to go", STEP, || cluster_streams(&c) == json!([]));
    assert!(code == 200 || code == 404, "{code}");
    let (code, _) = c.rest("/rest-api/cluster/terminate", Some(&json!({ "streamName": "cam" }).to_string()));
    assert_eq!(code, 404, "nothing left to terminate");
}

#[test]
fn redis_restarts_local_streams_go_on_and_nodes_register_again() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    wait_for("A connected", STEP, || health_cluster(&a)["redis"] == "connected");
    let mut pws = Wcs::connect(&a);
    let (_pub_id, _publisher) = publish(&mut pws, "show", Video::Vp8);
    let mut local = Wcs::connect(&a);
    let (_lid, pl) = play(&mut local, "show");
    wait_video(&pl, "local viewer");

    redis.kill();
    wait_for("A's /health to say Redis is unreachable", STEP, || {
        health_cluster(&a)["redis"] == "unreachable"
    });
    let (code, h) = a.rest("/health", None);
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "a node without Redis still serves: {h}");
    wait_video(&pl, "local viewer while Redis is down");

    redis.spawn(); // empty: no persistence
    wait_for("A connected again", STEP, || health_cluster(&a)["redis"] == "connected");
    wait_for("A's claim made again", STEP, || cluster_streams(&b).as_array().map(Vec::len) == Some(1));
    wait_video(&pl, "local viewer after the restart");

    // B serves it as an edge, and drops the pull once its viewer has gone.
    let mut vb = Wcs::connect(&b);
    let (idb, pb) = play(&mut vb, "show");
    wait_video(&pb, "B after the restart");
    assert_eq!(viewers_of(&a, "show"), 2, "the local viewer and B's pull");
    vb.send("stopStream", json!({ "mediaSessionId": idb, "name": "show" }));
    wait_for("B to drop its idle pull", Duration::from_secs(12), || viewers_of(&a, "show") == 1);
    assert_eq!(health_cluster(&b)["edges"], 0);
    drop(pb);
}

#[test]
fn edge_pulls_carry_the_cluster_secret_through_access_control() {
    let redis = Redis::start();
    let jwt = "jwt-secret-of-the-service";
    let a = node(&redis, &["--jwt-secret", jwt]);
    let b = node(&redis, &["--jwt-secret", jwt]);
    // A node of the same Redis that does not know the cluster secret.
    let url = redis.url();
    let stranger = Server::start_with(&[
        "--cluster-redis",
        &url,
        "--cluster-secret",
        "not-the-cluster-secret",
        "--jwt-secret",
        jwt,
    ]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let token = |grants: Value| {
        let claims = json!({ "sub": "alice", "exp": now + 600, "grants": grants });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(jwt.as_bytes()).expect("key"),
        )
        .expect("token")
    };
    let mut pws = Wcs::connect(&a);
    let (id, offer, answer) =
        request_publish_with(&mut pws, "secure", json!({ "token": token(json!({ "publish": ["secure"] })) }));
    let _publisher = offer.start(&answer.expect("publish accepted"));
    assert_eq!(pws.status(&id)["status"], "PUBLISHING");

    let play_with = |server: &Server, grants: Value| {
        let mut ws = Wcs::connect(server);
        let offer = Offering::new(false, Video::H264);
        let id = new_id("play");
        ws.send(
            "playStream",
            json!({ "mediaSessionId": id, "name": "secure", "sdp": offer.sdp,
            "custom": { "token": token(grants) } }),
        );
        (ws, id, offer)
    };
    // A viewer without the play grant is refused on the edge, as on the origin.
    let (mut ws, id, _offer) = play_with(&b, json!({ "play": ["other"] }));
    let st = remote_sdp_or_status(&mut ws, &id).expect_err("refused");
    assert!(st["info"].as_str().unwrap_or("").starts_with("Restricted access"), "{st}");
    // A viewer with it plays on the edge: the pull's cluster token passed A's access control.
    let (mut ws, id, offer) = play_with(&b, json!({ "play": ["secure"] }));
    let peer = offer.start(&remote_sdp_or_status(&mut ws, &id).expect("edge play accepted"));
    assert_eq!(ws.status(&id)["status"], "PLAYING");
    wait_video(&peer, "edge viewer with a token");
    // The stranger's pull carries a token A cannot verify: A refuses it, its viewer finds no
    // stream.
    let refused = |s: &Server| s.rest("/health", None).1["refused"]["token"].as_u64().unwrap_or(0);
    let before = refused(&a);
    let (mut ws, id, _offer) = play_with(&stranger, json!({ "play": ["secure"] }));
    let st = remote_sdp_or_status(&mut ws, &id).expect_err("no stream through the stranger");
    assert_eq!(st["info"], "Stream not found", "{st}");
    assert!(refused(&a) > before, "A refused the stranger's token");
}

#[test]
fn a_snapshot_asked_on_any_node_pictures_a_stream_of_another() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let src = "testsrc=size=320x240:rate=30";
    let args: Vec<&str> = ["-f", "lavfi", "-i", src, "-t", "10"]
        .into_iter()
        .chain(X264_BASELINE.iter().copied())
        .chain(["-x264-params", "aud=1", "-f", "h264"])
        .collect();
    let data = std::fs::read(ffmpeg(&args, "cluster-testsrc-320x240-10.h264")).expect("clip");
    let mut ws = Wcs::connect(&a);
    let (_id, _peer) = publish_clip(&mut ws, "pictured", Clip::from_annexb(&data, 300));
    let (code, body) =
        b.rest("/rest-api/stream/snapshot", Some(&json!({ "streamName": "pictured" }).to_string()));
    assert_eq!(code, 200, "{body}");
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        body["data"].as_str().unwrap_or(""),
    )
    .expect("base64");
    let img = image::load_from_memory(&png).expect("a PNG");
    assert_eq!((img.width(), img.height()), (320, 240));
    assert_eq!(health_cluster(&b)["edges"], 1, "pictured through an edge pull");
    let (code, _) =
        b.rest("/rest-api/stream/snapshot", Some(&json!({ "streamName": "nowhere" }).to_string()));
    assert_eq!(code, 404);
}
