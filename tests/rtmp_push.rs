//! RTMP re-publishing: a WebRTC stream (real H.264 frames, Opus audio) is pushed to real RTMP
//! servers and read back there: ffmpeg listening (`publishStream` with `rtmpUrl`), and nginx
//! with Debian's RTMP module (`/rest-api/push/startup`), whose stream ffmpeg then plays. The
//! RTMP side must hold H.264 of the clip's size and AAC. Also the refusals: a VP8 stream, a
//! loopback host without `--rtmp-push-allow`, bad bodies. Needs ffmpeg/ffprobe (Debian package
//! ffmpeg) and, for the nginx test, nginx and libnginx-mod-rtmp (skipped when absent).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A 10 s 640x360 H.264 baseline clip with access unit delimiters, made once per process.
fn clip() -> Clip {
    let args: Vec<&str> = ["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-t", "10"]
        .into_iter()
        .chain(X264_BASELINE.iter().copied())
        .chain(["-x264-params", "aud=1", "-f", "h264"])
        .collect();
    let path = ffmpeg(&args, "push-640x360-10s.h264");
    Clip::from_annexb(&std::fs::read(path).expect("clip"), usize::MAX)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Publish `clip` as `name` with `rtmpUrl`; waits for PUBLISHING.
fn publish_with_rtmp(
    ws: &mut Wcs,
    name: &str,
    video: Video,
    clip: Option<Clip>,
    rtmp_url: &str,
) -> (String, Peer) {
    let id = new_id("pub");
    let mut offer = Offering::new(true, video);
    if let Some(c) = clip {
        offer = offer.with_clip(c);
    }
    ws.send(
        "publishStream",
        json!({"mediaSessionId": id, "name": name, "published": true, "hasVideo": video != Video::None,
               "hasAudio": true, "sdp": offer.sdp, "rtmpUrl": rtmp_url}),
    );
    let answer = remote_sdp_or_status(ws, &id).unwrap_or_else(|st| panic!("publish {name} refused: {st}"));
    let peer = offer.start(&answer);
    let st = ws.status(&id);
    assert_eq!(st["status"], "PUBLISHING", "{st}");
    (id, peer)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn wait_exit(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// ffmpeg copying `input` (an RTMP URL, listening when `listen`) for `secs` seconds of media
/// into `out` (FLV).
fn ffmpeg_copy(input: &str, listen: bool, secs: u32, out: &Path) -> Proc {
    let mut c = Command::new("ffmpeg");
    c.args(["-y", "-hide_banner", "-loglevel", "warning"]);
    if listen {
        c.args(["-listen", "1", "-timeout", "30"]);
    } else {
        c.args(["-rw_timeout", "15000000"]);
    }
    c.args(["-i", input, "-c", "copy", "-t", &secs.to_string(), "-f", "flv"]).arg(out);
    Proc(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ffmpeg runs (Debian package ffmpeg)"))
}

fn wait_port(port: u16, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

/// The pushes `/push/find_all` lists.
fn pushes(server: &Server) -> Vec<Value> {
    let (code, v) = server.rest("/rest-api/push/find_all", None);
    assert_eq!(code, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

fn wait_push_status(server: &Server, status: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Some(p) = pushes(server).into_iter().find(|p| p["status"] == status) {
            return p;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no push {status}: {:?}", pushes(server));
}

fn assert_h264_aac(p: &Probe, what: &str) {
    let v = p.codecs.iter().position(|c| c == "h264").unwrap_or_else(|| panic!("{what}: no h264 in {p:?}"));
    let a = p.codecs.iter().position(|c| c == "aac").unwrap_or_else(|| panic!("{what}: no aac in {p:?}"));
    assert_eq!(p.sizes[v], (640, 360), "{what}: {p:?}");
    // 3 s copied: at 30 fps about 90 frames; at 48 kHz about 140 AAC frames.
    assert!(p.packets[v] >= 45, "{what}: {} video packets", p.packets[v]);
    assert!(p.packets[a] >= 70, "{what}: {} audio packets", p.packets[a]);
}

/// `publishStream` with `rtmpUrl` re-publishes to ffmpeg listening as an RTMP server, under the
/// WCS name `rtmp_<name>`; the push is listed while it runs and ends with the publish.
#[test]
fn publish_with_rtmp_url_reaches_ffmpeg() {
    let server = Server::start_with(&["--rtmp-push-allow", "127.0.0.1"]);
    let port = free_port();
    let name = new_id("cam");
    let dir = TempDir::new("push-ffmpeg");
    let out = dir.0.join("got.flv");
    // ffmpeg's listen mode takes one connection, so no probing: should it not listen yet, the
    // push retries a second later.
    let mut listener = ffmpeg_copy(&format!("rtmp://127.0.0.1:{port}/live/rtmp_{name}"), true, 3, &out);
    std::thread::sleep(Duration::from_millis(500));

    let mut ws = Wcs::connect(&server);
    let (id, publisher) = publish_with_rtmp(
        &mut ws,
        &name,
        Video::H264,
        Some(clip()),
        &format!("rtmp://127.0.0.1:{port}/live"),
    );
    let p = wait_push_status(&server, "PROCESSED_LOCAL");
    assert_eq!(p["streamName"], format!("rtmp_{name}"));
    assert_eq!(p["sourceMediaSessionId"], id);
    assert_eq!(p["rtmpUrl"], format!("rtmp://127.0.0.1:{port}/live"));
    assert!(listener.wait_exit(Duration::from_secs(20)), "ffmpeg copied 3 s");
    assert_h264_aac(&ffprobe(&out), "ffmpeg listening");
    assert!(p["width"] == 640 || pushes(&server).iter().any(|p| p["width"] == 640));

    // The publish ends: so does the push.
    ws.send("unPublishStream", json!({"mediaSessionId": id, "name": name}));
    let end = Instant::now() + Duration::from_secs(5);
    while !pushes(&server).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pushes(&server).is_empty(), "{:?}", pushes(&server));
    drop(publisher);
}

/// nginx with Debian's RTMP module: a REST push (`/push/startup`), ffmpeg plays it back from
/// nginx, terminate ends it.
#[test]
fn rest_push_to_nginx_rtmp_plays_back() {
    if !Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists()
        || Command::new("nginx").arg("-v").output().is_err()
    {
        eprintln!(
            "SKIP: nginx with libnginx-mod-rtmp is not installed (apt-get install nginx libnginx-mod-rtmp)"
        );
        return;
    }
    let dir = TempDir::new("push-nginx");
    let port = free_port();
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
         daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
         rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
           application live {{ live on; record off; }} }} }}\n",
        d = dir.0.display()
    );
    std::fs::write(dir.0.join("nginx.conf"), conf).expect("nginx.conf");
    let _nginx = Proc(
        Command::new("nginx")
            .args(["-p", &dir.0.display().to_string(), "-c"])
            .arg(dir.0.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts"),
    );
    wait_port(port, Duration::from_secs(10));

    let server = Server::start_with(&["--rtmp-push-allow", "127.0.0.0/8"]);
    let mut ws = Wcs::connect(&server);
    let name = new_id("cam");
    let (_id, publisher) = publish_clip(&mut ws, &name, clip());
    let url = format!("rtmp://127.0.0.1:{port}/live");
    let body = json!({"streamName": name, "rtmpUrl": url}).to_string();
    let (code, started) = server.rest("/rest-api/push/startup", Some(&body));
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["streamName"], format!("rtmp_{name}"));
    let (code, again) = server.rest("/rest-api/push/startup", Some(&body));
    assert_eq!(code, 409, "the same push twice: {again}");
    wait_push_status(&server, "PROCESSED_LOCAL");

    let out = dir.0.join("played.flv");
    let mut player = ffmpeg_copy(&format!("rtmp://127.0.0.1:{port}/live/rtmp_{name}"), false, 3, &out);
    assert!(player.wait_exit(Duration::from_secs(25)), "ffmpeg played 3 s from nginx");
    assert_h264_aac(&ffprobe(&out), "played from nginx");

    let (code, found) = server.rest("/rest-api/push/find", Some(&json!({"streamName": name}).to_string()));
    assert_eq!(code, 200, "{found}");
    let push_id = found[0]["mediaSessionId"].as_str().expect("push id").to_string();
    let (code, _) =
        server.rest("/rest-api/push/terminate", Some(&json!({"mediaSessionId": push_id}).to_string()));
    assert_eq!(code, 200);
    let end = Instant::now() + Duration::from_secs(5);
    while !pushes(&server).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pushes(&server).is_empty());
    // The stream itself goes on.
    assert_eq!(find_published(&server, &name).0, 200);
    let (code, _) =
        server.rest("/rest-api/push/terminate", Some(&json!({"mediaSessionId": push_id}).to_string()));
    assert_eq!(code, 404);
    drop(publisher);
}

/// What cannot be pushed is refused with a clear answer, and the publish goes on.
#[test]
fn refusals() {
    // Default policy: public hosts only, loopback refused.
    let server = Server::start();
    let mut ws = Wcs::connect(&server);
    let name = new_id("cam");
    let (_id, publisher) = publish(&mut ws, &name, Video::H264);
    let rest = |body: Value| server.rest("/rest-api/push/startup", Some(&body.to_string()));
    let (code, v) = rest(json!({"streamName": name, "rtmpUrl": "rtmp://127.0.0.1:1935/live"}));
    assert_eq!(code, 403, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("--rtmp-push-allow"), "{v}");
    let (code, v) = rest(json!({"streamName": name, "rtmpUrl": "http://example.com/live"}));
    assert_eq!(code, 400, "{v}");
    let (code, v) = rest(json!({"streamName": name}));
    assert_eq!(code, 400, "{v}");
    let (code, v) = rest(json!({"streamName": "nobody", "rtmpUrl": "rtmp://203.0.113.1/live"}));
    assert_eq!(code, 404, "{v}");
    let (code, v) = server.rest("/rest-api/push/terminate", Some("{}"));
    assert_eq!(code, 400, "{v}");
    assert!(pushes(&server).is_empty());

    // A VP8 publish with rtmpUrl: PUBLISHING all the same, and a `fail` notice saying why.
    let server = Server::start_with(&["--rtmp-push-allow", "127.0.0.1"]);
    let mut ws = Wcs::connect(&server);
    let name = new_id("vp8");
    let (id, vp8) = publish_with_rtmp(&mut ws, &name, Video::Vp8, None, "rtmp://127.0.0.1:1/live");
    let fail = ws.expect("fail", |d| d["id"] == id);
    assert!(fail["info"].as_str().unwrap_or("").contains("VP8"), "{fail}");
    assert!(pushes(&server).is_empty());
    drop(vp8);
    drop(publisher);
}

/// A push whose RTMP server is down retries (FAILED with the reason, attempts counting up) and
/// connects once the server is there.
#[test]
fn retries_until_the_server_is_up() {
    let server = Server::start_with(&["--rtmp-push-allow", "127.0.0.1"]);
    let port = free_port();
    let name = new_id("cam");
    let mut ws = Wcs::connect(&server);
    let (_id, publisher) = publish_clip(&mut ws, &name, clip());
    let body = json!({"streamName": name, "rtmpUrl": format!("rtmp://127.0.0.1:{port}/live")}).to_string();
    let (code, v) = server.rest("/rest-api/push/startup", Some(&body));
    assert_eq!(code, 200, "{v}");
    let failed = wait_push_status(&server, "FAILED");
    assert!(!failed["info"].as_str().unwrap_or("").is_empty(), "{failed}");
    // A second sluice's RTMP ingest comes up on that port: the push lands there as a stream.
    let target = Server::start_with(&["--rtmp-port", &port.to_string()]);
    wait_push_status(&server, "PROCESSED_LOCAL");
    let found = wait_published(&target, &format!("rtmp_{name}"));
    assert!(found.to_string().contains(&format!("rtmp_{name}")), "{found}");
    assert!(server.log_text().contains("RTMP push connection failed"));
    drop(publisher);
}
