//! The recorder actor: one per recorded stream, writing it into a crash-safe fragmented MP4
//! ([`crate::fmp4`]) in the records directory; and [`Recordings`], the table of them that
//! sessions and REST use to start, stop and list recordings.
//!
//! A recorder is one more sink of the stream's source ([`StreamSource`]): it joins like a viewer,
//! gets every frame by [`Forward`] (video from a keyframe on) and [`SourceEnded`] when the source
//! goes away. It answers [`Forward`], [`SourceEnded`] and [`Finish`]. Lifecycle ([`State`]):
//! `Idle` (file created, waiting for the first video keyframe: it asks the source for one every
//! [`KEYFRAME_RETRY`], and records audio alone if none came within [`KEYFRAME_WAIT`]),
//! `Recording`, `Finalizing` (last fragment written, file synced, renamed if the name template
//! uses the end time; then the actor stops).
//!
//! ## Threads
//! Every recorder runs on one *recording arbiter*, a thread of its own. File writes are blocking
//! system calls: on the media arbiter a slow or full disk would stall every publisher and
//! viewer. Here it can only delay recordings: a recorder that falls behind fills its mailbox
//! ([`RECORD_QUEUE`]) and the fan-out drops frames for it alone (the recording resumes at the
//! next keyframe), exactly as for a slow viewer. One shared thread rather than one per
//! recorder: muxing is a copy and writes land in the page cache, so one thread keeps up with
//! many streams; a `SyncArbiter` pool would reorder the writes of one file.
//! The file is *created* by whoever starts the recording (a WebSocket or REST worker thread): the
//! name must be known before PUBLISHING goes out, and an unwritable directory is reported to the
//! caller at once. That is one metadata operation, never on the media arbiter.
//!
//! ## Crash safety
//! A fragment goes to the file as soon as it is complete (at each keyframe, at most every 1 s),
//! so after a SIGKILL the file holds every fragment written before: the writes are in the page
//! cache. `fdatasync` runs every [`SYNC_INTERVAL`] and at the end, bounding the loss on power
//! failure.
//!
//! ## Names
//! From a template ([`DEFAULT_TEMPLATE`], `--record-template`), with the WCS placeholders (see
//! [`render_name`]), then made safe by [`sanitize`]: nothing but `[A-Za-z0-9._-]`, no leading
//! dot, at most [`MAX_NAME`] bytes, `.mp4` appended if missing, `-1`, `-2`... before the
//! extension if taken. A template using `{endTime}`, `{endTimeMillis}` or `{duration}` is
//! rendered with the start values while recording, and the file renamed when it is finished;
//! the final name is the one UNPUBLISHED carries.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use dashmap::DashMap;
use serde::Serialize;
use tracing::{debug, error, info, info_span, warn};

use crate::error::RecordError;
use crate::fmp4::{Fmp4Writer, Output, Pushed, Stats};
use crate::media::Codec;
use crate::messages::{Forward, RemoveSubscriber, RequestKeyframe, SourceEnded, StreamSource};
use crate::protocol::StreamInfo;
use crate::registry::{Filter, Registry};

/// The file name template WCS users know, with our container's extension.
pub const DEFAULT_TEMPLATE: &str = "{streamName}-{startTimeMillis}.mp4";
/// Longest file name, in bytes (as WCS, and most file systems).
pub const MAX_NAME: usize = 255;
/// Frames queued for a recorder before the fan-out drops for it (about 10 s of 30 fps video
/// plus audio: a disk hiccup of that length loses nothing).
pub const RECORD_QUEUE: usize = 1024;
/// How often a recorder still waiting for its first keyframe asks the source again.
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// A stream that has sent no usable video keyframe by then is recorded as audio alone.
pub const KEYFRAME_WAIT: Duration = Duration::from_secs(5);
/// Data is flushed to the disk (fdatasync) this often, and at the end.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for a recorder to finish its file before a final status goes out anyway.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Final names of finished recordings, for a late [`Recordings::finished_name`] (a recording
/// stopped over REST long before its stream ends): kept this long once more than
/// [`FINISHED_MAX`] are held.
const FINISHED_KEEP: Duration = Duration::from_secs(3600);
const FINISHED_MAX: usize = 1000;

/// Sink ids of recorders, in a range apart from viewers' ids (which count up from 1).
static NEXT_SINK_ID: AtomicU64 = AtomicU64::new(1 << 62);

/// What a file name template may use, as WCS names them.
#[derive(Debug, Clone, Default)]
pub struct NameVars {
    pub stream_name: String,
    pub media_session_id: String,
    pub session_id: String,
    pub login: String,
    pub audio_codec: String,
    pub video_codec: String,
    /// Unix time in milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Fill a template's placeholders: `{streamName}`, `{mediaSessionId}`, `{sessionId}`, `{login}`
/// (empty: no authentication), `{audioCodec}`, `{videoCodec}`, `{startTime}`/`{endTime}` (Unix
/// time, seconds), `{startTimeMillis}`/`{endTimeMillis}` (Unix time, ms) and `{duration}` (ms).
/// Unknown placeholders stay as written. The result is not yet safe: see [`sanitize`].
pub fn render_name(template: &str, v: &NameVars) -> String {
    let end_ms = v.end_ms.max(v.start_ms);
    let pairs: [(&str, String); 11] = [
        ("{streamName}", v.stream_name.clone()),
        ("{mediaSessionId}", v.media_session_id.clone()),
        ("{sessionId}", v.session_id.clone()),
        ("{login}", v.login.clone()),
        ("{audioCodec}", v.audio_codec.clone()),
        ("{videoCodec}", v.video_codec.clone()),
        ("{startTimeMillis}", v.start_ms.to_string()),
        ("{endTimeMillis}", end_ms.to_string()),
        ("{startTime}", (v.start_ms / 1000).to_string()),
        ("{endTime}", (end_ms / 1000).to_string()),
        ("{duration}", (end_ms - v.start_ms).to_string()),
    ];
    // One pass, so a stream name containing "{startTime}" is not expanded again.
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'outer: while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        for (k, val) in &pairs {
            if let Some(after) = rest.strip_prefix(k) {
                out.push_str(val);
                rest = after;
                continue 'outer;
            }
        }
        out.push('{');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

/// True if the template needs values known only at the end (the file is renamed then).
pub fn uses_end_time(template: &str) -> bool {
    ["{endTime}", "{endTimeMillis}", "{duration}"].iter().any(|p| template.contains(p))
}

/// A file name that stays in the records directory and in a URL as is: every byte outside
/// `[A-Za-z0-9._-]` becomes `_` (so `/`, `\`, NUL and `..` path tricks cannot survive), a
/// leading dot becomes `_`, `.mp4` is appended when missing, and the stem is cut so the whole
/// name has at most [`MAX_NAME`] bytes.
pub fn sanitize(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    let stem_len = if s.to_ascii_lowercase().ends_with(".mp4") { s.len() - 4 } else { s.len() };
    let mut stem = s[..stem_len].to_string();
    if stem.is_empty() {
        stem = "record".into();
    }
    stem.truncate(MAX_NAME - 4);
    format!("{stem}.mp4")
}

/// `name` with `-n` before the extension (for n > 0), still within [`MAX_NAME`].
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    let stem = name.strip_suffix(".mp4").unwrap_or(name);
    let suffix = format!("-{n}.mp4");
    let keep = stem.len().min(MAX_NAME - suffix.len());
    format!("{}{suffix}", &stem[..keep])
}

/// Create `dir/name` without replacing any file; on a clash try `name-1.mp4`, `name-2.mp4`...
fn create_unique(dir: &Path, name: &str) -> Result<(File, String), RecordError> {
    for n in 0..1000 {
        let candidate = numbered(name, n);
        let path = dir.join(&candidate);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, candidate)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let dir_ok = std::fs::metadata(dir).map(|m| m.is_dir()).unwrap_or(false);
                return Err(if dir_ok {
                    RecordError::Create { path, source: e }
                } else {
                    RecordError::Directory { dir: dir.to_path_buf(), source: e }
                });
            }
        }
    }
    Err(RecordError::Create {
        path: dir.join(name),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "1000 files of that name exist"),
    })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A recording failed while the stream goes on: the publishing client is told with a `fail`
/// notice (the SDK's WARN), the stream keeps flowing.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RecordingFailed {
    pub media_session_id: String,
    pub reason: String,
}

/// Finish the file now (final fragment, sync, rename); answers the final file name, or `None`
/// when no media was ever recorded (the empty file is removed). `leave`: also detach from the
/// source, which goes on (a REST stop).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<String>")]
pub struct Finish {
    pub leave: bool,
}

/// What is needed to record one stream.
#[derive(Clone)]
pub struct RecordTarget {
    pub info: StreamInfo,
    pub source: StreamSource,
    pub video: Option<Codec>,
    pub has_audio: bool,
}

/// A recording in progress, as `/recorder/find_all` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordingInfo {
    pub file_name: String,
    pub media_session_id: String,
    pub stream_name: String,
    /// Unix time, ms.
    pub start_time: u64,
}

#[derive(Clone)]
struct Active {
    addr: Addr<Recorder>,
    sink_id: u64,
    info: RecordingInfo,
}

/// Every recording in progress, by `mediaSessionId`, and where they go.
pub struct Recordings {
    dir: PathBuf,
    template: String,
    arbiter: ArbiterHandle,
    registry: Arc<Registry>,
    active: DashMap<String, Active>,
    finished: DashMap<String, (Option<String>, Instant)>,
}

impl Recordings {
    /// Recordings into `dir`, named by `template`, their actors on `arbiter` (see the module
    /// docs: not the media arbiter).
    pub fn new(dir: PathBuf, template: String, arbiter: ArbiterHandle, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Recordings {
            dir,
            template,
            arbiter,
            registry,
            active: DashMap::new(),
            finished: DashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The published stream with this `mediaSessionId`, ready to record.
    pub fn target(&self, media_session_id: &str) -> Result<RecordTarget, RecordError> {
        let not_found = || RecordError::StreamNotFound(media_session_id.to_string());
        let filter =
            Filter { media_session_ids: Some(vec![media_session_id.to_string()]), ..Default::default() };
        let info = self.registry.find(&filter).into_iter().find(|i| i.published).ok_or_else(not_found)?;
        let published = self
            .registry
            .lookup(&info.name)
            .filter(|p| p.media_session_id == media_session_id)
            .ok_or_else(not_found)?;
        Ok(RecordTarget {
            info,
            source: published.source,
            video: published.video,
            has_audio: published.has_audio,
        })
    }

    pub fn is_recording(&self, media_session_id: &str) -> bool {
        self.active.contains_key(media_session_id)
    }

    pub fn list(&self) -> Vec<RecordingInfo> {
        let mut v: Vec<RecordingInfo> = self.active.iter().map(|a| a.info.clone()).collect();
        v.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.file_name.cmp(&b.file_name)));
        v
    }

    /// Start recording a stream (no-op answering the current file if it already is). Creates
    /// the file now; returns its name. `template` overrides the configured one; `notify` hears
    /// of a later failure.
    pub fn start(
        self: &Arc<Self>,
        target: RecordTarget,
        template: Option<&str>,
        notify: Option<Recipient<RecordingFailed>>,
    ) -> Result<String, RecordError> {
        let id = target.info.media_session_id.clone();
        if let Some(a) = self.active.get(&id) {
            return Ok(a.info.file_name.clone());
        }
        let template = template.unwrap_or(&self.template).to_string();
        let start_ms = now_ms();
        let vars = NameVars {
            stream_name: target.info.name.clone(),
            media_session_id: id.clone(),
            session_id: target.info.session_id.clone(),
            login: String::new(),
            audio_codec: if target.has_audio { Codec::Opus.wcs_name().to_string() } else { String::new() },
            video_codec: target.video.map(|c| c.wcs_name().to_string()).unwrap_or_default(),
            start_ms,
            end_ms: start_ms,
        };
        let (file, name) = create_unique(&self.dir, &sanitize(&render_name(&template, &vars)))?;
        let sink_id = NEXT_SINK_ID.fetch_add(1, Ordering::Relaxed);
        let rename = uses_end_time(&template).then(|| (template.clone(), vars));
        let recorder = Recorder {
            sink_id,
            media_session_id: id.clone(),
            source: target.source,
            state: State::Idle,
            writer: Fmp4Writer::new(target.video, target.has_audio),
            file: Some(file),
            path: self.dir.join(&name),
            name: name.clone(),
            rename,
            began: Instant::now(),
            last_sync: Instant::now(),
            gave_up_video: false,
            notify,
            recordings: self.clone(),
            final_name: None,
            _live: crate::metrics::Live::new("recorder"),
            span: info_span!("recorder", stream = %target.info.name, id = %id, file = %name),
        };
        let addr = Recorder::start_in_arbiter(&self.arbiter, move |_| recorder);
        let info = RecordingInfo {
            file_name: name.clone(),
            media_session_id: id.clone(),
            stream_name: target.info.name.clone(),
            start_time: start_ms,
        };
        self.active.insert(id.clone(), Active { addr, sink_id, info });
        self.registry.update(&id, |i| {
            i.record = true;
            i.record_name = Some(name.clone());
        });
        info!(stream = %target.info.name, id = %id, file = %name, "recording started");
        Ok(name)
    }

    /// Stop recording a stream that goes on; resolves to the final file name.
    pub fn stop(&self, media_session_id: &str) -> Result<impl Future<Output = Option<String>>, RecordError> {
        let a = self
            .active
            .get(media_session_id)
            .map(|a| a.addr.clone())
            .ok_or_else(|| RecordError::NotRecording(media_session_id.to_string()))?;
        self.registry.update(media_session_id, |i| i.record = false);
        Ok(async move { a.send(Finish { leave: true }).await.ok().flatten() })
    }

    /// The final file name of a stream's recording once it is finished: waits (at most
    /// [`FINISH_TIMEOUT`], then answers the current name) for a recording in progress to finish
    /// its file, or answers the name of one finished before. `None` if there is no file (none
    /// was recorded, or it had no media).
    pub fn finished_name(self: &Arc<Self>, media_session_id: &str) -> impl Future<Output = Option<String>> {
        let me = self.clone();
        let id = media_session_id.to_string();
        let active = self.active.get(&id).map(|a| (a.addr.clone(), a.info.file_name.clone()));
        async move {
            if let Some((addr, current)) = active {
                match tokio::time::timeout(FINISH_TIMEOUT, addr.send(Finish { leave: false })).await {
                    Ok(Ok(name)) => return name,
                    Err(_) => return Some(current), // still finishing: the file is there
                    Ok(Err(_)) => {}                // stopped before the request reached it
                }
            }
            me.finished.get(&id).and_then(|f| f.0.clone())
        }
    }

    /// Finish every recording in progress (server shutdown); resolves once each file is
    /// finished. A recorder already finishing or gone counts as finished.
    pub fn finish_all(&self) -> impl Future<Output = ()> {
        let addrs: Vec<Addr<Recorder>> = self.active.iter().map(|a| a.addr.clone()).collect();
        async move {
            for a in addrs {
                let _ = a.send(Finish { leave: true }).await;
            }
        }
    }

    /// The arbiter recorders run on (`/health` checks that it answers).
    pub fn arbiter(&self) -> &ArbiterHandle {
        &self.arbiter
    }

    /// A recorder is done: forget it, remember its final name for a while.
    fn done(&self, media_session_id: &str, sink_id: u64, final_name: Option<String>) {
        self.active.remove_if(media_session_id, |_, a| a.sink_id == sink_id);
        if self.finished.len() > FINISHED_MAX {
            self.finished.retain(|_, (_, at)| at.elapsed() < FINISHED_KEEP);
        }
        self.finished.insert(media_session_id.to_string(), (final_name, Instant::now()));
    }
}

/// Lifecycle of a recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// File created, waiting for the first video keyframe.
    Idle,
    Recording,
    /// Writing the end of the file; then the actor stops.
    Finalizing,
}

pub struct Recorder {
    sink_id: u64,
    media_session_id: String,
    source: StreamSource,
    state: State,
    writer: Fmp4Writer,
    file: Option<File>,
    path: PathBuf,
    name: String,
    /// Template and values to rename the file with at the end.
    rename: Option<(String, NameVars)>,
    began: Instant,
    last_sync: Instant,
    gave_up_video: bool,
    notify: Option<Recipient<RecordingFailed>>,
    recordings: Arc<Recordings>,
    final_name: Option<String>,
    /// Counted in `sluice_actors` while alive.
    _live: crate::metrics::Live,
    span: tracing::Span,
}

impl Recorder {
    /// Apply the writer's output to the file; fdatasync when due.
    fn write_out(&mut self, sync: bool) -> Result<(), RecordError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let err = |source| RecordError::Write { path: self.path.clone(), source };
        for o in self.writer.drain() {
            match o {
                Output::Append(bytes) => file.write_all(&bytes).map_err(err)?,
                Output::Patch { at, bytes } => file.write_all_at(&bytes, at).map_err(err)?,
            }
        }
        if sync || self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.last_sync = Instant::now();
            file.sync_data().map_err(err)?;
        }
        Ok(())
    }

    /// The recording cannot go on; the stream does. The file keeps what was written (whole
    /// fragments: it stays playable).
    fn fail(&mut self, e: RecordError, ctx: &mut Context<Self>) {
        if self.state == State::Finalizing {
            return;
        }
        error!(parent: &self.span, error = %e, "recording failed");
        self.state = State::Finalizing;
        self.file = None;
        self.source.leave.do_send(RemoveSubscriber { id: self.sink_id });
        self.recordings.registry.update(&self.media_session_id, |i| i.record = false);
        if let Some(n) = &self.notify {
            n.do_send(RecordingFailed {
                media_session_id: self.media_session_id.clone(),
                reason: format!("Recording failed: {e}"),
            });
        }
        let name = self.writer.started().then(|| self.name.clone());
        self.final_name = name.clone();
        self.recordings.done(&self.media_session_id, self.sink_id, name);
        ctx.stop();
    }

    /// Write the end of the file and stop. Returns the final name.
    fn finalize(&mut self, leave: bool, ctx: &mut Context<Self>) -> Option<String> {
        if self.state == State::Finalizing {
            return self.final_name.clone();
        }
        self.state = State::Finalizing;
        if leave {
            self.source.leave.do_send(RemoveSubscriber { id: self.sink_id });
        }
        let written = self
            .writer
            .finish()
            .map_err(|source| RecordError::Mux { path: self.path.clone(), source })
            .and_then(|_| self.write_out(true));
        if let Err(e) = written {
            error!(parent: &self.span, error = %e, "cannot finish the record file");
        }
        self.file = None;
        let stats = self.writer.stats();
        let final_name = if !self.writer.started() {
            // No media ever came: an empty file would only be an unplayable entry.
            if let Err(e) = std::fs::remove_file(&self.path) {
                warn!(parent: &self.span, error = %e, "cannot remove empty record file");
            }
            info!(parent: &self.span, "recording ended without media, file removed");
            None
        } else {
            Some(self.rename_final())
        };
        if let Some(name) = &final_name {
            log_stats(&self.span, name, &stats, self.began.elapsed());
        }
        let n = final_name.clone();
        self.recordings.registry.update(&self.media_session_id, |i| i.record_name = n);
        self.final_name = final_name.clone();
        self.recordings.done(&self.media_session_id, self.sink_id, final_name.clone());
        ctx.stop();
        final_name
    }

    /// Rename the file if its template uses the end time; returns the name it has now.
    fn rename_final(&mut self) -> String {
        let Some((template, mut vars)) = self.rename.take() else {
            return self.name.clone();
        };
        vars.end_ms = now_ms();
        let wanted = sanitize(&render_name(&template, &vars));
        for n in 0..1000 {
            let candidate = numbered(&wanted, n);
            let to = self.recordings.dir.join(&candidate);
            // hard_link + remove: never replaces an existing file (rename would).
            match std::fs::hard_link(&self.path, &to) {
                Ok(()) => {
                    if let Err(e) = std::fs::remove_file(&self.path) {
                        warn!(parent: &self.span, error = %e, "cannot remove the old name after renaming");
                    }
                    self.path = to;
                    self.name = candidate;
                    return self.name.clone();
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    warn!(parent: &self.span, error = %e, to = %candidate, "cannot rename the record file");
                    break;
                }
            }
        }
        self.name.clone()
    }
}

fn log_stats(span: &tracing::Span, name: &str, s: &Stats, wall: Duration) {
    info!(
        parent: span, file = %name, duration = format_args!("{:.2}s", s.duration_secs),
        video = format_args!("{:.2}s/{} samples", s.video_secs, s.video_samples),
        audio = format_args!("{:.2}s/{} samples", s.audio_secs, s.audio_samples),
        fragments = s.fragments, bytes = s.bytes, discontinuities = s.discontinuities,
        wall = format_args!("{:.2}s", wall.as_secs_f64()), "recording finished"
    );
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(RECORD_QUEUE);
        self.source.attach(self.sink_id, None, ctx, |act: &mut Self, ctx| {
            debug!(parent: &act.span, "source gone before the recorder joined");
            act.finalize(false, ctx);
        });
        self.source.keyframe.do_send(RequestKeyframe(None));
        ctx.run_interval(KEYFRAME_RETRY, |act, _| {
            if act.state != State::Idle {
                return;
            }
            if act.began.elapsed() >= KEYFRAME_WAIT && !act.gave_up_video {
                act.gave_up_video = true;
                warn!(parent: &act.span, "no video keyframe within {KEYFRAME_WAIT:?}: recording audio only");
                act.writer.start_without_video();
            } else {
                act.source.keyframe.do_send(RequestKeyframe(None));
            }
        });
    }
}

impl Handler<Forward> for Recorder {
    type Result = ();
    fn handle(&mut self, Forward(frame, _): Forward, ctx: &mut Context<Self>) {
        if self.state == State::Finalizing {
            return;
        }
        match self.writer.push(&frame) {
            Ok(Pushed::Written) if self.state == State::Idle => {
                self.state = State::Recording;
                debug!(parent: &self.span, "first frame written");
            }
            Ok(_) => {}
            Err(source) => return self.fail(RecordError::Mux { path: self.path.clone(), source }, ctx),
        }
        if let Err(e) = self.write_out(false) {
            self.fail(e, ctx);
        }
    }
}

impl Handler<SourceEnded> for Recorder {
    type Result = ();
    fn handle(&mut self, m: SourceEnded, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, reason = m.reason, "source ended");
        self.finalize(false, ctx);
    }
}

impl Handler<Finish> for Recorder {
    type Result = Option<String>;
    fn handle(&mut self, m: Finish, ctx: &mut Context<Self>) -> Option<String> {
        self.finalize(m.leave, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> NameVars {
        NameVars {
            stream_name: name.into(),
            media_session_id: "ms-1".into(),
            session_id: "/127.0.0.1:5000/127.0.0.1:8080".into(),
            audio_codec: "opus".into(),
            video_codec: "H264".into(),
            start_ms: 1_700_000_000_123,
            end_ms: 1_700_000_010_456,
            ..Default::default()
        }
    }

    #[test]
    fn default_template() {
        assert_eq!(sanitize(&render_name(DEFAULT_TEMPLATE, &vars("cam1"))), "cam1-1700000000123.mp4");
    }

    #[test]
    fn every_placeholder() {
        let t = "{streamName}|{mediaSessionId}|{sessionId}|{login}|{audioCodec}|{videoCodec}|{startTime}|{endTime}|{startTimeMillis}|{endTimeMillis}|{duration}|{other}";
        assert_eq!(
            render_name(t, &vars("s")),
            "s|ms-1|/127.0.0.1:5000/127.0.0.1:8080||opus|H264|1700000000|1700000010|1700000000123|1700000010456|10333|{other}"
        );
        assert!(uses_end_time("{streamName}-{duration}") && !uses_end_time(DEFAULT_TEMPLATE));
        // A stream name that looks like a placeholder is not expanded again.
        assert_eq!(render_name("{streamName}", &vars("{startTime}")), "{startTime}");
    }

    #[test]
    fn path_tricks_stay_in_the_directory() {
        for evil in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "..",
            ".",
            "",
            "a\0b",
            "..\\..\\x",
            "\u{202e}gpj.exe",
        ] {
            let name = sanitize(&render_name(DEFAULT_TEMPLATE, &vars(evil)));
            assert!(!name.contains('/') && !name.contains('\\') && !name.contains('\0'), "{name}");
            assert!(!name.starts_with('.'), "{name}");
            assert!(name.ends_with(".mp4"), "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{name}");
            assert_eq!(Path::new(&name).components().count(), 1, "{name}");
        }
        assert_eq!(sanitize("../x"), "_._x.mp4");
        assert_eq!(sanitize(""), "record.mp4");
        assert_eq!(sanitize(".mp4"), "_mp4.mp4");
        assert_eq!(sanitize("a.MP4"), "a.mp4");
        // A template can't escape either.
        assert_eq!(sanitize(&render_name("../{streamName}", &vars("x"))), "_._x.mp4");
    }

    #[test]
    fn long_names_are_capped() {
        let long = "x".repeat(1000);
        let name = sanitize(&render_name(DEFAULT_TEMPLATE, &vars(&long)));
        assert_eq!(name.len(), MAX_NAME);
        assert!(name.ends_with(".mp4"));
        let n = numbered(&name, 12);
        assert_eq!(n.len(), MAX_NAME);
        assert!(n.ends_with("-12.mp4"));
        // Multi-byte characters become one '_' each, so the cut is on a char boundary.
        let name = sanitize(&"é".repeat(1000));
        assert_eq!(name.len(), MAX_NAME);
    }

    #[test]
    fn unique_files() {
        let dir = std::env::temp_dir().join(format!("sluice-rec-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, a) = create_unique(&dir, "same.mp4").unwrap();
        let (_, b) = create_unique(&dir, "same.mp4").unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("same.mp4", "same-1.mp4"));
        let missing = dir.join("missing");
        assert!(matches!(create_unique(&missing, "x.mp4"), Err(RecordError::Directory { .. })));
        // A records "directory" that is a file: even root cannot write there.
        let file = dir.join("a-file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(create_unique(&file, "x.mp4"), Err(RecordError::Directory { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
