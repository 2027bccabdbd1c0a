//! RTMP ingest: ffmpeg publishes a generated H.264 + AAC clip over RTMP; a real WebRTC viewer
//! gets its video and Opus audio, a REST snapshot gives a picture of the clip's size, a REST
//! recording gives an MP4 ffprobe reads; duplicate names, garbage after the handshake and a
//! publisher killed mid-stream. Needs ffmpeg and ffprobe (Debian package ffmpeg).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::json;

/// A 30 s 640x360 H.264 (baseline, keyframe every second) + 44.1 kHz stereo AAC clip, made once.
fn clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=640x360:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-t",
                "30",
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "30",
                "-bf",
                "0",
                "-c:a",
                "aac",
                "-ac",
                "2",
                "-movflags",
                "+faststart",
            ],
            "rtmp-clip.mp4",
        )
    })
}

/// An ffmpeg publishing the clip in real time to `rtmp://127.0.0.1:<port>/live/<name>`; killed
/// when dropped.
struct Encoder(Child);

impl Encoder {
    fn start(server: &Server, name: &str) -> Encoder {
        let url = format!("rtmp://127.0.0.1:{}/live/{name}", server.rtmp);
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
            .arg(clip())
            .args(["-c", "copy", "-f", "flv", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg runs (apt package ffmpeg)");
        Encoder(child)
    }

    /// Wait for ffmpeg to exit; returns its success and what it printed.
    fn wait_exit(mut self, within: Duration) -> Option<(bool, String)> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.0.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Some((st.success(), err));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn rtmp_stream_plays_over_webrtc_is_snapshot_and_recorded() {
    let records = std::env::temp_dir().join(format!("sluice-rtmp-records-{}", new_id("r")));
    std::fs::create_dir_all(&records).unwrap();
    let server = Server::start_with(&["--records-dir", records.to_str().unwrap()]);
    assert!(server.rtmp > 0);
    let _enc = Encoder::start(&server, "enc1");
    let st = wait_published(&server, "enc1");
    assert_eq!(st["mediaProvider"], "Flash", "{st}");
    assert_eq!((st["videoCodec"].as_str(), st["audioCodec"].as_str()), (Some("H264"), Some("opus")));
    let id = st["mediaSessionId"].as_str().expect("id").to_string();

    // A WebRTC viewer gets H.264 video and Opus audio.
    let mut ws = Wcs::connect(&server);
    let (_pid, peer) = play(&mut ws, "enc1");
    peer.wait_until(STEP, "60 video frames and 50 audio packets", |s| {
        s.video_frames.load(std::sync::atomic::Ordering::Relaxed) >= 60
            && s.audio_frames.load(std::sync::atomic::Ordering::Relaxed) >= 50
    });
    assert_eq!(*peer.stats.video_codec.lock().unwrap(), Some(str0m::format::Codec::H264));
    assert!(peer.stats.keyframes.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let (_, found) = server.rest("/rest-api/stream/find", Some(&json!({"name": "enc1"}).to_string()));
    assert_eq!((found[0]["width"].as_u64(), found[0]["height"].as_u64()), (Some(640), Some(360)), "{found}");

    // A snapshot is a PNG of the clip's size.
    let (code, body) =
        server.rest("/rest-api/stream/snapshot", Some(&json!({"streamName": "enc1"}).to_string()));
    assert_eq!(code, 200, "{body}");
    let png = base64::engine::general_purpose::STANDARD.decode(body["data"].as_str().expect("data")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let img = image::load_from_memory(&png).expect("PNG decodes");
    assert_eq!((img.width(), img.height()), (640, 360));

    // Recording it gives an MP4 with H.264 and Opus.
    let body = json!({"mediaSessionId": id}).to_string();
    let (code, started) = server.rest("/rest-api/stream/startRecording", Some(&body));
    assert_eq!(code, 200, "{started}");
    std::thread::sleep(Duration::from_secs(4));
    let (code, stopped) = server.rest("/rest-api/stream/stopRecording", Some(&body));
    assert_eq!(code, 200, "{stopped}");
    let file = records.join(stopped["fileName"].as_str().expect("fileName"));
    let p = ffprobe(&file);
    assert_eq!(p.codecs, vec!["h264", "opus"], "{p:?}");
    assert_eq!(p.sizes[0], (640, 360), "{p:?}");
    let duration = p.duration;
    assert!((3.0..5.5).contains(&duration), "recorded {duration} s: {p:?}");
    // Every frame of the recording decodes.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&records);
}

#[test]
fn rtmp_publish_of_a_name_in_use_is_refused() {
    let server = Server::start();
    let first = Encoder::start(&server, "dup");
    let st = wait_published(&server, "dup");
    let second = Encoder::start(&server, "dup");
    let (ok, err) = second.wait_exit(STEP).expect("the second encoder gives up");
    assert!(!ok, "second publish of a name in use succeeded");
    assert!(err.contains("Stream name is already in use"), "ffmpeg said: {err}");
    // The first publisher is untouched.
    let again = wait_published(&server, "dup");
    assert_eq!(again["mediaSessionId"], st["mediaSessionId"]);
    assert!(server.log_text().contains("stream name is already in use"));
    // REST terminate ends the stream and disconnects the encoder.
    let filter = json!({"name": "dup", "published": true}).to_string();
    assert_eq!(server.rest("/rest-api/stream/terminate", Some(&filter)).0, 200);
    let (ok, err) = first.wait_exit(STEP).expect("the terminated encoder stops");
    assert!(!ok, "ffmpeg did not notice the disconnect: {err}");
    assert_eq!(server.rest("/rest-api/stream/find", Some(&filter)).0, 404);
}

/// The RTMP handshake as a client: C0+C1, read S0+S1+S2, send C2.
fn handshake(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", server.rtmp)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c1 = vec![3u8];
    c1.extend((0..1536u32).map(|i| (i * 7 % 251) as u8));
    s.write_all(&c1).unwrap();
    let mut s012 = vec![0u8; 1 + 1536 * 2];
    s.read_exact(&mut s012).expect("S0 S1 S2");
    assert_eq!(s012[0], 3);
    s.write_all(&s012[1..1537]).unwrap(); // C2 echoes S1
    s
}

/// Read until the server closes the socket (Ok) or the timeout passes (Err).
fn closed_by_server(s: &mut TcpStream) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(format!("not closed: {e}")),
        }
    }
}

#[test]
fn rtmp_garbage_closes_the_connection_not_the_server() {
    let mut server = Server::start();
    // Chunks that continue a message never started (chunk type 1 first).
    let mut s = handshake(&server);
    s.write_all(&[0x43, 0, 0, 0, 0, 0, 9, 0x14, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5]).unwrap();
    closed_by_server(&mut s).expect("connection closed after garbage");
    // Random bytes after the handshake, many times: never a crash.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..50 {
        let mut s = handshake(&server);
        let garbage: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = s.write_all(&garbage);
    }
    // A bad handshake version is closed too.
    let mut s = TcpStream::connect(("127.0.0.1", server.rtmp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0x47; 1537]).unwrap();
    closed_by_server(&mut s).expect("bad handshake closed");
    assert!(server.is_running(), "server died");
    // And the server still takes a real publish.
    let _enc = Encoder::start(&server, "after-garbage");
    wait_published(&server, "after-garbage");
    let log = server.log_text();
    assert!(!log.contains("panicked"), "a panic in the server log");
}

#[test]
fn rtmp_publisher_killed_mid_stream_stops_its_viewers() {
    let server = Server::start();
    let mut enc = Encoder::start(&server, "kill1");
    wait_published(&server, "kill1");
    let mut ws = Wcs::connect(&server);
    let (id, peer) = play(&mut ws, "kill1");
    peer.wait_until(STEP, "video", |s| s.video_frames.load(std::sync::atomic::Ordering::Relaxed) >= 30);
    enc.kill();
    let st = ws.status(&id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by publisher stop"))
    );
    let (code, _) = find_published(&server, "kill1");
    assert_eq!(code, 404, "the stream is still listed");
    // The name is free again.
    let _enc2 = Encoder::start(&server, "kill1");
    wait_published(&server, "kill1");
}
