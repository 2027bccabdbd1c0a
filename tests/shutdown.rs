//! Graceful shutdown: SIGTERM (what `docker stop` sends) during a recording and a live play.
//! Every client is told (the viewer gets STOPPED, the publisher UNPUBLISHED, both with info
//! "Server shutdown"), every WebSocket closes with 1001 Going Away, the recording file is
//! complete (ffprobe: codecs and duration) and the process exits 0 within 10 s.
//! Needs ffprobe (Debian package ffmpeg).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

/// Docker's default grace between SIGTERM and SIGKILL; the server must be gone by then.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
const SERVER_SHUTDOWN: &str = "Server shutdown";
/// WebSocket close code "Going Away".
const GOING_AWAY: u16 = 1001;

#[test]
fn sigterm_tells_clients_finishes_the_recording_and_exits_zero() {
    let records = TempDir::new("shutdown");
    let mut s = Server::start_with(&["--records-dir", records.0.to_str().expect("utf-8 temp path")]);
    let name = new_id("shutdown");

    let mut publisher_ws = Wcs::connect(&s);
    let (pub_id, publisher, st) = publish_recorded(&mut publisher_ws, &name, Video::H264);
    let recording_began = Instant::now();
    let file = st["recordName"].as_str().unwrap_or_else(|| panic!("no recordName in {st}")).to_string();

    let mut viewer_ws = Wcs::connect(&s);
    let (play_id, viewer) = play(&mut viewer_ws, &name);
    viewer.wait_until(STEP, "video reaches the viewer", |p| p.video_frames.load(Ordering::Relaxed) > 30);
    // A session with no stream at all is closed too.
    let mut idle_ws = Wcs::connect(&s);

    std::thread::sleep(Duration::from_secs(4).saturating_sub(recording_began.elapsed()));
    let recorded = recording_began.elapsed().as_secs_f64();
    s.signal("TERM");
    let signalled = Instant::now();

    let st = viewer_ws.status(&play_id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("STOPPED"), Some(SERVER_SHUTDOWN)),
        "{st}"
    );
    let st = publisher_ws.status(&pub_id);
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("UNPUBLISHED"), Some(SERVER_SHUTDOWN)),
        "{st}"
    );
    assert_eq!(st["recordName"].as_str(), Some(file.as_str()), "UNPUBLISHED names the finished file: {st}");
    for (who, ws) in [("viewer", &mut viewer_ws), ("publisher", &mut publisher_ws), ("idle", &mut idle_ws)] {
        let closed = ws.wait_closed(EXIT_WITHIN.saturating_sub(signalled.elapsed()));
        assert_eq!(closed, Some(Some(GOING_AWAY)), "{who} session closed with 1001");
    }

    let exit = s.wait_exit(EXIT_WITHIN.saturating_sub(signalled.elapsed()));
    let took = signalled.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    assert!(took < EXIT_WITHIN, "exit took {took:?}");
    eprintln!("exited 0 {took:?} after SIGTERM");
    drop((publisher, viewer));

    let path = records.0.join(&file);
    let p = ffprobe(&path);
    assert_eq!(p.codecs, vec!["h264", "opus"]);
    let duration = p.duration;
    assert!((duration - recorded).abs() <= 1.0, "file holds {duration:.2} s of {recorded:.2} s recorded");
    let bytes = std::fs::read(&path).expect("record file");
    assert_ne!(last_mp4_box(&bytes), Some(*b"free"), "the last fragment was finished, not cut");
    let log = s.log_text();
    assert!(log.contains("recording finished"), "the recorder finished its file:\n{log}");
}

#[test]
fn sigint_with_no_clients_exits_zero_at_once() {
    let mut s = Server::start();
    s.signal("INT");
    let exit = s.wait_exit(Duration::from_secs(3)).expect("exits within 3 s of Ctrl-C");
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
}
