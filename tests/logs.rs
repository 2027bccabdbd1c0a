//! One grep follows one viewer: every log line about a viewer's stream carries its
//! `mediaSessionId` (the session's `play` line, and the subscriber's span on every line it
//! writes: joined, ended), and the publisher's lines carry the stream name and its own id.

mod common;

use common::*;
use serde_json::json;

#[test]
fn a_viewers_id_finds_its_whole_story_in_the_log() {
    let server = Server::start();
    let mut pws = Wcs::connect(&server);
    let (pub_id, _publisher) = publish(&mut pws, "traced", Video::H264);
    let mut vws = Wcs::connect(&server);
    let (play_id, viewer) = play(&mut vws, "traced");
    viewer.wait_until(std::time::Duration::from_secs(10), "video", |s| {
        s.video_frames.load(std::sync::atomic::Ordering::Relaxed) > 5
    });
    vws.send("stopStream", json!({ "mediaSessionId": play_id, "name": "traced" }));
    assert_eq!(vws.status(&play_id)["status"], "STOPPED");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let log = server.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&play_id)).collect();
    let has = |what: &str| lines.iter().any(|l| l.contains(what));
    assert!(has("play stream=traced"), "the session's play line: {lines:#?}");
    assert!(has("subscriber{stream=traced") && has("playing"), "the viewer joining: {lines:#?}");
    assert!(has("subscriber ended"), "the viewer's end: {lines:#?}");
    // The session span (its WCS session id) is on the session's line too.
    assert!(lines.iter().any(|l| l.contains("session{id=/127.0.0.1:")), "{lines:#?}");
    // The publisher's lines: by its own id, with the stream name.
    let pub_lines: Vec<&str> = log.lines().filter(|l| l.contains(&pub_id)).collect();
    assert!(
        pub_lines.iter().any(|l| l.contains("publisher{stream=traced") && l.contains("publishing")),
        "{pub_lines:#?}"
    );
}
