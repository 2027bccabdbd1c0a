//! Server CPU per RTMP ingest (FLV demux + AAC→Opus) and per RTSP pull (RTP depacketizing +
//! AAC→Opus), read from /proc/<pid>/stat (utime + stime) over a fixed window, minus the idle
//! server's CPU over the same window. No viewers during the window: this is the ingest cost
//! alone (a viewer's cost is the same as for any stream; see BENCHMARKS.md).
//!
//! In the normal test run (debug build) it checks a loose bound, so a regression that makes
//! ingest cost a whole core shows up. For the figures in BENCHMARKS.md run it on the release
//! build with a longer window:
//!
//! ```sh
//! SLUICE_BENCH_SECS=30 cargo test --release --test ingest_cpu -- --nocapture --test-threads=1
//! ```
//!
//! Needs ffmpeg and the GStreamer RTSP test camera (`Camera` of tests/common).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Ingests measured at once.
const STREAMS: usize = 2;

fn window() -> Duration {
    let secs = std::env::var("SLUICE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    Duration::from_secs(secs)
}

/// Server CPU over `window()`, in % of one core.
fn cpu_pct(pid: u32) -> f64 {
    cpu_share_during(pid, || std::thread::sleep(window())) * 100.0
}

fn clip() -> PathBuf {
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "2M",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "60",
            "-bf",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
        ],
        "ingest-cpu.mp4",
    )
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn encoder(clip: &Path, port: u16, name: &str) -> Kill {
    let url = format!("rtmp://127.0.0.1:{port}/live/{name}");
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    Kill(child)
}

fn report(what: &str, idle: f64, busy: f64) -> f64 {
    let per = (busy - idle) / STREAMS as f64;
    eprintln!(
        "{what}: server idle {idle:.1}% of a core, with {STREAMS} ingests {busy:.1}%: \
         {per:.1}% per ingest (window {:?}, {} build)",
        window(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    per
}

/// The figure is printed, never asserted: CPU timings are measurements (BENCHMARKS.md), and a
/// loaded CI machine must not fail the suite. Only a sane reading is required.
fn check(per: f64) {
    assert!(per.is_finite(), "no CPU reading");
}

#[test]
fn cpu_per_rtmp_ingest() {
    let clip = clip();
    let server = Server::start();
    let idle = cpu_pct(server.pid());
    let _encoders: Vec<Kill> = (0..STREAMS)
        .map(|i| {
            let name = format!("bench{i}");
            let e = encoder(&clip, server.rtmp, &name);
            wait_published(&server, &name);
            e
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let busy = cpu_pct(server.pid());
    check(report("RTMP ingest, 720p30 H.264 2 Mbit/s + AAC 44.1 kHz stereo -> Opus", idle, busy));
}

#[test]
fn cpu_per_rtsp_pull() {
    let cam = Camera::start();
    // The test camera is on loopback, which pulls may not reach unless allowed.
    let server = Server::start_with(&["--rtsp-allow", "127.0.0.1"]);
    let idle = cpu_pct(server.pid());
    let mut ws = Wcs::connect(&server);
    for i in 0..STREAMS {
        // Distinct URLs are distinct pulls (the camera ignores the query).
        let url = cam.url(&format!("/cam?pull={i}"));
        let (id, peer) = play(&mut ws, &url);
        peer.wait_until(STEP, "video", |s| s.video_frames.load(Ordering::Relaxed) >= 10);
        // The viewer leaves; the pull runs on for its 60 s idle grace: the window measures it alone.
        ws.send("stopStream", json!({"mediaSessionId": id, "name": url}));
        assert_eq!(ws.status(&id)["status"], "STOPPED");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(window() < Duration::from_secs(50), "the pulls stop 60 s after their last viewer");
    let busy = cpu_pct(server.pid());
    let (_, all) = server.rest("/rest-api/stream/find_all", None);
    let pulls = all.as_array().map(|a| a.iter().filter(|s| s["mediaProvider"] == "RTSP").count());
    assert_eq!(pulls, Some(STREAMS), "{all}");
    check(report("RTSP pull, 640x360p30 H.264 0.8 Mbit/s + AAC 48 kHz stereo -> Opus", idle, busy));
}
