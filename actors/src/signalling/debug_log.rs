//! Session debug logs: what the Stream Diagnostic page downloads.
//!
//! The SDK's `session.startDebug()` sends `sessionDebug {command: "start"}` and from then on
//! pushes its own log lines (`pushLogs {logs}`); `stopDebug()` sends `sessionDebug {command:
//! "stop"}`. While a session debugs, it keeps one [`DebugLog`]: the client's lines and the
//! server's side of the conversation (every frame in and out, and stream status changes), each
//! line stamped with the time since the start. On stop the log is written to the session-logs
//! folder under a name nobody can guess, and the session answers
//! `notifySessionDebugEvent {status: "STOPPED", file: "client/session-logs/<name>"}`: the page
//! links `<its origin>/<file>`, which the web port serves. `start` answers `{status:
//! "STARTED"}`.
//!
//! Bounds: a log keeps at most [`MAX_LOG_BYTES`] (then notes that it was cut); the folder keeps
//! the newest [`MAX_LOG_FILES`] files, and files older than [`LOG_FILE_TTL`] are removed when a
//! new one is written. A session that closes while debugging writes its log too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest log kept in memory and written, in bytes.
pub const MAX_LOG_BYTES: usize = 4 * 1024 * 1024;
/// Most files the session-logs folder keeps.
pub const MAX_LOG_FILES: usize = 200;
/// Age after which a written log is removed.
pub const LOG_FILE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The URL path (on the web ports) the folder is served under, without leading slash.
pub const URL_PATH: &str = "client/session-logs";

/// One session's debug log while it runs.
pub struct DebugLog {
    started: Instant,
    text: String,
    cut: bool,
}

impl DebugLog {
    pub fn start(session_id: &str) -> Self {
        let mut log = DebugLog { started: Instant::now(), text: String::new(), cut: false };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        log.line("server", &format!("debug log of session {session_id}, started at Unix ms {now}"));
        log
    }

    /// Add one line (`who`: "client" for the SDK's own lines, "in"/"out" for frames, "server").
    pub fn line(&mut self, who: &str, text: &str) {
        if self.cut {
            return;
        }
        let ms = self.started.elapsed().as_millis();
        let text = text.trim_end();
        if self.text.len() + text.len() + 32 > MAX_LOG_BYTES {
            self.cut = true;
            let _ = writeln!(self.text, "[{ms:>8} ms] server: log cut at {MAX_LOG_BYTES} bytes");
            return;
        }
        let _ = writeln!(self.text, "[{ms:>8} ms] {who}: {text}");
    }

    /// Write the log into `dir` (made if missing) and tidy the folder; the file's name.
    pub fn write(self, dir: &Path) -> std::io::Result<String> {
        std::fs::create_dir_all(dir)?;
        tidy(dir);
        let name = format!("session-{}-{:032x}.log", unix_secs(), rand::random::<u128>());
        std::fs::write(dir.join(&name), self.text.as_bytes())?;
        Ok(name)
    }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Remove logs older than [`LOG_FILE_TTL`], and the oldest beyond [`MAX_LOG_FILES`] - 1.
fn tidy(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let now = SystemTime::now();
    let excess = files.len().saturating_sub(MAX_LOG_FILES - 1);
    for (i, (modified, path)) in files.iter().enumerate() {
        let old = now.duration_since(*modified).is_ok_and(|age| age > LOG_FILE_TTL);
        if i < excess || old {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_and_the_log_is_bounded() {
        let mut log = DebugLog::start("/1.2.3.4:5/6.7.8.9:10");
        log.line("client", "hello\n");
        assert!(log.text.contains("client: hello\n"));
        let big = "x".repeat(MAX_LOG_BYTES / 2);
        log.line("in", &big);
        log.line("in", &big);
        log.line("in", "after the cut");
        assert!(log.text.len() <= MAX_LOG_BYTES);
        assert!(log.text.contains("log cut"));
        assert!(!log.text.contains("after the cut"));
    }

    #[test]
    fn written_under_an_unguessable_name_and_the_folder_is_bounded() {
        let dir = std::env::temp_dir().join(format!("sluice-debug-log-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = DebugLog::start("s").write(&dir).unwrap();
        let b = DebugLog::start("s").write(&dir).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("session-") && a.ends_with(".log") && a.len() > 40);
        let text = std::fs::read_to_string(dir.join(&a)).unwrap();
        assert!(text.contains("debug log of session s"));
        for _ in 0..MAX_LOG_FILES + 5 {
            DebugLog::start("s").write(&dir).unwrap();
        }
        assert!(std::fs::read_dir(&dir).unwrap().count() <= MAX_LOG_FILES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
