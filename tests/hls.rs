//! HLS and LL-HLS: an RTMP stream (ffmpeg, real H.264 + AAC, which the server turns into Opus)
//! played over HLS: the multivariant and media playlists parse with `m3u8-rs`, segment
//! durations fit `EXT-X-TARGETDURATION`, init + segments concatenated are a file ffprobe reads
//! as H.264 + Opus (and, for the AAC rendition, H.264 + AAC-LC), parts are CMAF fragments, a blocking reload is held until its part exists;
//! a WebRTC-published stream gets ~1 s segments (the muxer asks the browser for keyframes);
//! unknown streams and files are 404; tokens (`?token=`) are checked and carried into the
//! playlists' URIs; packaging stops 30 s after the last request and when the stream ends. Needs ffmpeg and ffprobe (Debian package ffmpeg).
//!
//! `cargo test --release --test hls -- --ignored --nocapture hls_load` is the load run of
//! BENCHMARKS.md (1,000 HLS viewers of one stream).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use m3u8_rs::Playlist;

/// A 40 s 640x360 H.264 (baseline, keyframe every second) + AAC clip, made once.
fn clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "40",
        ];
        args.extend_from_slice(X264_BASELINE);
        args.extend_from_slice(&["-c:a", "aac", "-ac", "2", "-movflags", "+faststart"]);
        ffmpeg(&args, "hls-clip.mp4")
    })
}

/// The clip's video at a constant `bitrate` (x264 CBR with filler), for the load run.
fn clip_at(bitrate: &str) -> PathBuf {
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "60",
    ];
    args.extend_from_slice(X264_BASELINE);
    args.extend_from_slice(&["-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", bitrate]);
    args.extend_from_slice(&["-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-ac", "2"]);
    ffmpeg(&args, &format!("hls-clip-{bitrate}.mp4"))
}

/// ffmpeg publishing the clip in real time over RTMP; killed when dropped.
struct Encoder(Child);

impl Encoder {
    fn start(server: &Server, name: &str) -> Encoder {
        Self::start_file(server, name, clip())
    }

    fn start_file(server: &Server, name: &str, file: &Path) -> Encoder {
        let url = format!("rtmp://127.0.0.1:{}/live/{name}", server.rtmp);
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "flv", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg runs (apt package ffmpeg)");
        Encoder(child)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Got {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    took: Duration,
}

impl Got {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn get(url: &str) -> Got {
    let t = Instant::now();
    let resp = match ureq::get(url).timeout(Duration::from_secs(20)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("body");
    Got { status, body, headers, took: t.elapsed() }
}

fn hls_url(server: &Server, name: &str, file: &str) -> String {
    format!("http://127.0.0.1:{}/{name}/{file}", server.hls)
}

/// GET until the stream is published and packaged (404 while ffmpeg connects).
fn get_when_ready(url: &str) -> Got {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let g = get(url);
        if g.status == 200 || Instant::now() > end {
            return g;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn media(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(Playlist::MediaPlaylist(m)) => m,
        other => panic!("not a media playlist: {other:?}\n{text}"),
    }
}

/// The `(msn, part)` of the preload hint.
fn preload_hint(text: &str) -> (u64, u64) {
    let line = text.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT")).expect("preload hint");
    let uri = line.split("URI=\"p").nth(1).expect("uri");
    let stem = uri.split(".m4s").next().expect("m4s");
    let (m, p) = stem.split_once('.').expect("msn.part");
    (m.parse().expect("msn"), p.parse().expect("part"))
}

#[test]
fn rtmp_stream_over_hls_and_ll_hls() {
    let server = Server::start();
    let _enc = Encoder::start(&server, "cam");

    // The WCS URL: the multivariant playlist.
    let mv = get_when_ready(&hls_url(&server, "cam", "cam.m3u8"));
    assert_eq!(mv.status, 200, "{}\n{}", mv.text(), server.log_text());
    assert_eq!(mv.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(mv.header("access-control-allow-origin"), Some("*"));
    assert_eq!(mv.header("cache-control"), Some("public, max-age=1"));
    let master = match m3u8_rs::parse_playlist_res(&mv.body) {
        Ok(Playlist::MasterPlaylist(m)) => m,
        other => panic!("not a multivariant playlist: {other:?}"),
    };
    let v = &master.variants[0];
    let codecs = v.codecs.clone().unwrap_or_default();
    assert!(codecs.starts_with("avc1.42") && codecs.ends_with(",opus"), "{codecs}");
    assert_eq!(v.resolution.map(|r| (r.width, r.height)), Some((640, 360)));
    assert_eq!(v.uri, "media.m3u8");
    // The AAC rendition for players without Opus.
    let a = &master.variants[1];
    assert!(a.codecs.as_deref().unwrap_or("").ends_with(",mp4a.40.2"), "{a:?}");
    assert_eq!(a.uri, "aac-media.m3u8");

    // Let a few segments build up.
    std::thread::sleep(Duration::from_secs(5));
    let ml = get(&hls_url(&server, "cam", "media.m3u8"));
    assert_eq!(ml.status, 200);
    let text = ml.text();
    let pl = media(&text);
    assert!(pl.segments.len() >= 4, "{text}");
    let target = pl.target_duration;
    for s in &pl.segments {
        assert!((s.duration.round() as u64) <= target, "EXTINF {} > target {target}\n{text}", s.duration);
        assert!((0.9..=2.1).contains(&s.duration), "segment of {} s: {text}", s.duration);
        assert!(s.program_date_time.is_some());
    }
    assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="), "{text}");
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.2"), "{text}");
    let parts: Vec<&str> = text.lines().filter(|l| l.starts_with("#EXT-X-PART:")).collect();
    assert!(parts.len() >= 5, "{text}");
    for p in &parts {
        let d: f64 = p.split("DURATION=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(d <= 0.25, "part of {d} s: {p}");
    }

    // init + segments: one file ffprobe reads as H.264 + Opus, as long as the EXTINFs say.
    let map = text.lines().find(|l| l.starts_with("#EXT-X-MAP")).unwrap();
    let init_name = map.split('"').nth(1).unwrap();
    let init = get(&hls_url(&server, "cam", init_name));
    assert_eq!(init.status, 200);
    assert!(init.header("cache-control").unwrap_or("").contains("immutable"));
    assert_eq!(&init.body[4..8], b"ftyp");
    let mut file = init.body.clone();
    let mut total = 0.0;
    for s in &pl.segments {
        let g = get(&hls_url(&server, "cam", &s.uri));
        assert_eq!(g.status, 200, "{}", s.uri);
        assert_eq!(&g.body[4..8], b"moof");
        file.extend_from_slice(&g.body);
        total += f64::from(s.duration);
    }
    let path = std::env::temp_dir().join(format!("sluice-hls-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of", "json"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let _ = std::fs::remove_file(&path);
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let names: Vec<&str> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(names, ["h264", "opus"], "{probe}");
    let d: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((d - total).abs() < 0.3, "ffprobe {d} s vs EXTINF sum {total} s");
    // A decodable picture: ffmpeg decodes every frame without error.
    let path = std::env::temp_dir().join(format!("sluice-hls-dec-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let dec = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let _ = std::fs::remove_file(&path);
    assert!(dec.status.success() && dec.stderr.is_empty(), "{}", String::from_utf8_lossy(&dec.stderr));

    // The AAC rendition: the same video with AAC-LC audio, which ffprobe reads.
    let aac = get_when_ready(&hls_url(&server, "cam", "aac-media.m3u8"));
    assert_eq!(aac.status, 200, "{}", aac.text());
    std::thread::sleep(Duration::from_secs(3));
    let aac_text = get(&hls_url(&server, "cam", "aac-media.m3u8")).text();
    let apl = media(&aac_text);
    assert!(apl.segments.len() >= 2, "{aac_text}");
    let amap = aac_text.lines().find(|l| l.starts_with("#EXT-X-MAP")).unwrap();
    let mut afile = get(&hls_url(&server, "cam", amap.split('"').nth(1).unwrap())).body;
    for s in &apl.segments {
        assert!(s.uri.starts_with("aac-s"), "{}", s.uri);
        afile.extend_from_slice(&get(&hls_url(&server, "cam", &s.uri)).body);
    }
    let path = std::env::temp_dir().join(format!("sluice-hls-aac-{}.mp4", std::process::id()));
    std::fs::write(&path, &afile).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,profile,sample_rate", "-of", "json"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let dec =
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&path).args(["-f", "null", "-"]).output();
    let _ = std::fs::remove_file(&path);
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let names: Vec<&str> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(names, ["h264", "aac"], "{probe}");
    assert_eq!(probe["streams"][1]["profile"], "LC", "{probe}");
    let dec = dec.expect("ffmpeg");
    assert!(dec.status.success() && dec.stderr.is_empty(), "{}", String::from_utf8_lossy(&dec.stderr));

    // A part (of a fresh playlist: parts are kept for the last segments only) is one CMAF
    // fragment.
    let fresh = get(&hls_url(&server, "cam", "media.m3u8")).text();
    let last_part = fresh.lines().rfind(|l| l.starts_with("#EXT-X-PART:")).expect("a part");
    let uri = last_part.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
    let part = get(&hls_url(&server, "cam", uri));
    assert_eq!(part.status, 200);
    assert_eq!(&part.body[4..8], b"moof");

    // Blocking reload: held until the preload-hinted part exists, then listed. A part made
    // between reading the hint and asking (parts come every 200 ms) is answered at once, so
    // up to three tries, of which one must have been held.
    let mut held = None;
    for _ in 0..3 {
        let now = get(&hls_url(&server, "cam", "media.m3u8"));
        let (m, p) = preload_hint(&now.text());
        let r = get(&hls_url(&server, "cam", &format!("media.m3u8?_HLS_msn={m}&_HLS_part={p}")));
        assert_eq!(r.status, 200);
        assert!(r.text().contains(&format!("URI=\"p{m}.{p}.m4s\"")), "{}", r.text());
        assert!(r.took < Duration::from_secs(2), "{:?}", r.took);
        if r.took >= Duration::from_millis(10) {
            held = Some(r);
            break;
        }
    }
    let held = held.expect("a blocking reload held until its part existed");
    println!("blocking reload held {:?}", held.took);
    // The preload-hinted part itself, asked before it exists, is held too.
    let (m, p) = preload_hint(&held.text());
    let hinted = get(&hls_url(&server, "cam", &format!("p{m}.{p}.m4s")));
    assert_eq!(hinted.status, 200, "{}", hinted.text());
    assert_eq!(&hinted.body[4..8], b"moof");
    // Too far ahead: 400.
    let far = get(&hls_url(&server, "cam", &format!("media.m3u8?_HLS_msn={}", m + 10)));
    assert_eq!(far.status, 400);

    // Unknown stream, unknown file, old segment: 404; preflight: 204 with CORS.
    assert_eq!(get(&hls_url(&server, "nosuch", "nosuch.m3u8")).status, 404);
    assert_eq!(get(&hls_url(&server, "cam", "other.m3u8")).status, 404);
    assert_eq!(get(&hls_url(&server, "cam", "s1.m4s")).status, 404);
    let pre = ureq::request("OPTIONS", &hls_url(&server, "cam", "cam.m3u8")).call().expect("preflight");
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
}

/// A WebRTC publisher (the test's own str0m peer) sends keyframes only when asked: the muxer
/// asks, and segments stay about a second long.
#[test]
fn webrtc_stream_gets_short_segments() {
    let server = Server::start();
    let mut ws = Wcs::connect(&server);
    let (_id, _peer) = publish(&mut ws, "webcam", Video::H264);
    let mv = get_when_ready(&hls_url(&server, "webcam", "webcam.m3u8"));
    assert_eq!(mv.status, 200, "{}", server.log_text());
    assert!(mv.text().contains("opus"), "{}", mv.text());
    std::thread::sleep(Duration::from_secs(4));
    let text = get(&hls_url(&server, "webcam", "media.m3u8")).text();
    let pl = media(&text);
    assert!(pl.segments.len() >= 2, "{text}");
    for s in &pl.segments {
        assert!(s.duration <= 2.1, "segment of {} s without keyframes asked: {text}", s.duration);
    }
}

/// Packaging stops 30 s after the last request (the next request starts it again), and at
/// once when the stream ends.
#[test]
fn packaging_stops_when_idle_and_with_the_stream() {
    let server = Server::start();
    let enc = Encoder::start(&server, "idle");
    assert_eq!(get_when_ready(&hls_url(&server, "idle", "idle.m3u8")).status, 200);
    let stopped = |s: &Server| s.log_text().matches("HLS packaging stopped").count();
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(stopped(&server), 0, "stopped before 30 s without requests");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(stopped(&server), 1, "still packaging 33 s after the last request");
    // Started again by the next request.
    let again = get(&hls_url(&server, "idle", "idle.m3u8"));
    assert_eq!(again.status, 200);
    drop(enc);
    let end = Instant::now() + Duration::from_secs(10);
    while stopped(&server) < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stopped(&server), 2, "packaging went on after the stream ended");
    assert_eq!(get(&hls_url(&server, "idle", "idle.m3u8")).status, 404);
}

fn mint(secret: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["token", "--secret", secret])
        .args(args)
        .output()
        .expect("sluice token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn tokens_are_checked_and_carried() {
    let secret = "hls-test-secret-0123456789";
    let server = Server::start_with(&["--jwt-secret", secret]);
    let publisher = mint(secret, &["--publish", "*"]);
    let _ = publisher; // RTMP ingest is not behind tokens: ffmpeg publishes as is.
    let _enc = Encoder::start(&server, "private");
    let good = mint(secret, &["--play", "private"]);
    let other = mint(secret, &["--play", "someone-else"]);
    let url = hls_url(&server, "private", "private.m3u8");
    let mv = get_when_ready(&format!("{url}?token={good}"));
    assert_eq!(mv.status, 200, "{}", mv.text());
    assert!(mv.text().contains(&format!("media.m3u8?token={good}")), "{}", mv.text());
    let ml = get(&hls_url(&server, "private", &format!("media.m3u8?token={good}")));
    assert!(ml.text().contains(&format!(".mp4?token={good}\"")), "{}", ml.text());
    assert_eq!(get(&url).status, 401);
    assert_eq!(get(&format!("{url}?token={other}")).status, 403);
    assert_eq!(get(&format!("{url}?token=garbage")).status, 403);
    let seg = hls_url(&server, "private", "media.m3u8");
    assert_eq!(get(&seg).status, 401);
}

/// Load: 1,000 HLS viewers of one stream (H.264 at `HLS_BITRATE`, default 600k, as the WebRTC
/// forwarding benchmark), each reloading the media playlist and fetching each new segment (as
/// a non-LL player does) about once a second, for `HLS_SECS` (20). Prints the server's CPU and
/// RSS. Keep-alive connections, one per viewer.
#[test]
#[ignore = "load run for BENCHMARKS.md: cargo test --release --test hls -- --ignored --nocapture hls_load"]
fn hls_load_1000_viewers() {
    let viewers: usize = std::env::var("HLS_VIEWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let secs: u64 = std::env::var("HLS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let bitrate = std::env::var("HLS_BITRATE").unwrap_or_else(|_| "600k".into());
    let threads = 50usize;
    let server = Server::start();
    let _enc = Encoder::start_file(&server, "load", &clip_at(&bitrate));
    assert_eq!(get_when_ready(&hls_url(&server, "load", "load.m3u8")).status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let cpu = |pid: u32| -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let t: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        t / 100.0
    };
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let (c0, t0, r0) = (cpu(server.pid()), Instant::now(), rss(server.pid()));
    let stop = Instant::now() + Duration::from_secs(secs);
    let media_url = hls_url(&server, "load", "media.m3u8");
    let base = format!("http://127.0.0.1:{}/load/", server.hls);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (media_url, base) = (media_url.clone(), base.clone());
            let mine = viewers / threads + usize::from(t < viewers % threads);
            std::thread::spawn(move || {
                // One keep-alive connection per viewer, as players have.
                let agents: Vec<ureq::Agent> = (0..mine).map(|_| ureq::AgentBuilder::new().build()).collect();
                let mut last: Vec<String> = vec![String::new(); mine];
                let (mut requests, mut bytes, mut errors) = (0u64, 0u64, 0u64);
                while Instant::now() < stop {
                    let round = Instant::now();
                    for (i, a) in agents.iter().enumerate() {
                        let Ok(r) = a.get(&media_url).call() else {
                            errors += 1;
                            continue;
                        };
                        requests += 1;
                        let text = r.into_string().unwrap_or_default();
                        bytes += text.len() as u64;
                        let Some(seg) =
                            text.lines().rev().find(|l| l.starts_with('s') && l.ends_with(".m4s"))
                        else {
                            continue;
                        };
                        if last[i] != seg {
                            last[i] = seg.to_string();
                            match a.get(&format!("{base}{seg}")).call() {
                                Ok(r) => {
                                    let mut b = Vec::new();
                                    let _ = std::io::Read::read_to_end(&mut r.into_reader(), &mut b);
                                    requests += 1;
                                    bytes += b.len() as u64;
                                }
                                Err(_) => errors += 1,
                            }
                        }
                    }
                    // Players reload the playlist about once per target duration (1 s).
                    let rest = Duration::from_secs(1).saturating_sub(round.elapsed());
                    std::thread::sleep(rest);
                }
                (requests, bytes, errors)
            })
        })
        .collect();
    let (mut requests, mut bytes, mut errors) = (0, 0, 0);
    for h in handles {
        let (r, b, e) = h.join().expect("viewer thread");
        requests += r;
        bytes += b;
        errors += e;
    }
    let wall = t0.elapsed().as_secs_f64();
    let used = cpu(server.pid()) - c0;
    let r1 = rss(server.pid());
    println!(
        "HLS load: {viewers} viewers of a {bitrate}bit/s stream, {wall:.1} s: {requests} requests ({:.0}/s), {:.1} Mbit/s, {errors} errors; server CPU {:.1} % of one core, RSS {} -> {} MiB",
        requests as f64 / wall,
        bytes as f64 * 8.0 / wall / 1e6,
        used / wall * 100.0,
        r0 / 1024,
        r1 / 1024
    );
    assert!(errors * 100 <= requests, "{errors} errors of {requests}");
}
