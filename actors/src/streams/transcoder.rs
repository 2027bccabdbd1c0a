//! Video re-encoding for a source whose H.264 WebRTC viewers cannot play smoothly (B-frames),
//! off every arbiter.
//!
//! [`VideoPath`] sits in a source actor (VOD, RTMP) between its frames and its [`FanOut`]: it
//! watches the video in decode order ([`ReorderDetector`]) and, once B-frames are found (or the
//! source knows from its file index), hands the video to a [`TranscoderThread`]: one dedicated
//! OS thread per source running the pure [`VideoTranscoder`] (openh264 decode and encode). The
//! thread sends the re-encoded frames back to the source actor as [`Transcoded`] messages, and
//! the source forwards them to its fan-out, so every viewer, recording and snapshot of that
//! source gets the same re-encoded frames: the work is done once per source, not per viewer.
//!
//! Backpressure: the thread's queue holds [`QUEUE_FRAMES`] frames and the actor never blocks.
//! When the machine cannot re-encode in real time, the frame rate gives first, then the picture:
//! past [`THIN_AT`] queued frames the thread encodes every other picture; past [`DROP_AT`] the
//! source drops disposable frames (non-reference B-frames) before queueing them; a full queue
//! drops frames until the source's next keyframe. Each step is logged once per episode.
//!
//! A source that forwarded its first frames as they were (RTMP: B-frames are seen only in the
//! first frames) replays the frames since its last keyframe into the transcoder, which decodes
//! them but encodes only pictures after what viewers already got, starting with an IDR.
//!
//! [`FanOut`]: crate::fanout::FanOut

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use crate::h264;
use crate::media::Frame;
use crate::video_transcode::{Reorder, ReorderDetector, TranscodeSettings, VideoTranscoder, NOTE_B_FRAMES};

/// Frames waiting for the transcoding thread, at most: about a second of video, the most delay a
/// slow machine adds before frames are dropped.
pub const QUEUE_FRAMES: usize = 32;
/// Queued frames past which the thread encodes every other picture.
pub const THIN_AT: usize = QUEUE_FRAMES / 4;
/// Queued frames past which the source drops disposable frames (nothing refers to them).
pub const DROP_AT: usize = QUEUE_FRAMES / 2;
/// Frames held since the last keyframe while no B-frames have been found (for the replay).
const MAX_HELD: usize = 600;

/// Frames the transcoding thread made, for the source to forward.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Transcoded(pub Vec<Frame>);

enum Job {
    Frame(Frame),
    SkipThrough(u64),
}

/// One source's transcoding thread. Dropping it ends the thread (after the frames queued).
pub struct TranscoderThread {
    tx: SyncSender<Job>,
    /// Frames queued and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
    /// Frames are being dropped until the next keyframe.
    dropping: bool,
    /// Disposable frames are being dropped.
    thinning: bool,
    dropped: u64,
    /// A viewer wants a keyframe: the thread's next picture is one (or the first after the
    /// encoder's gap, `KEYFRAME_REQUEST_GAP`). A flag, not a queued job: requests never fill
    /// the frames' queue, and none is lost while it is full.
    keyframe_wanted: Arc<AtomicBool>,
    stream: String,
}

impl TranscoderThread {
    /// Start the thread; its frames go to `out`.
    pub fn spawn(
        stream: &str,
        settings: TranscodeSettings,
        out: Recipient<Transcoded>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE_FRAMES);
        let name = stream.to_string();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let wanted = keyframe_wanted.clone();
        std::thread::Builder::new()
            .name("transcode".into())
            .spawn(move || run(rx, q, wanted, settings, out, name))?;
        Ok(TranscoderThread {
            tx,
            queued,
            dropping: false,
            thinning: false,
            dropped: 0,
            keyframe_wanted,
            stream: stream.to_string(),
        })
    }

    /// Queue a video frame (decode order); never blocks.
    pub fn push(&mut self, frame: Frame) {
        if self.dropping && !frame.keyframe {
            self.dropped += 1;
            return;
        }
        let depth = self.queued.load(Ordering::Relaxed);
        if depth >= DROP_AT && h264::is_disposable(&frame.data) {
            self.dropped += 1;
            if !self.thinning {
                warn!(stream = %self.stream, queued = depth, "video transcoding falls behind: disposable frames dropped");
            }
            self.thinning = true;
            return;
        }
        self.thinning = depth >= DROP_AT;
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Job::Frame(frame)) {
            Ok(()) => {
                if self.dropping {
                    info!(stream = %self.stream, dropped = self.dropped, "transcoding caught up");
                }
                self.dropping = false;
            }
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.dropped += 1;
                if !self.dropping {
                    warn!(stream = %self.stream, queue = QUEUE_FRAMES, dropped = self.dropped,
                        "video transcoding cannot keep up: frames dropped until the next keyframe");
                }
                self.dropping = true;
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.dropping = true;
            }
        }
    }

    /// A viewer wants a keyframe: the next picture encoded is an IDR, or the first after the
    /// encoder's gap since its last one (`KEYFRAME_REQUEST_GAP`: held, not dropped).
    pub fn request_keyframe(&mut self) {
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    fn skip_through(&mut self, pts: u64) {
        let _ = self.tx.try_send(Job::SkipThrough(pts));
    }
}

/// Live transcoding threads running now: background work (the VOD conversion cache) waits
/// while there are any.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many live transcoding threads run now.
pub fn live_transcodes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Counts a running transcoding thread for as long as it lives.
struct Live;

impl Live {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The thread: frames in, re-encoded frames back to the source.
fn run(
    rx: Receiver<Job>,
    queued: Arc<AtomicUsize>,
    keyframe_wanted: Arc<AtomicBool>,
    settings: TranscodeSettings,
    out: Recipient<Transcoded>,
    stream: String,
) {
    let _live = Live::new();
    let mut t = match VideoTranscoder::new(settings) {
        Ok(t) => t,
        Err(e) => {
            warn!(stream = %stream, error = %e, "video transcoder failed to start");
            return;
        }
    };
    let mut errors = 0u64;
    let mut frames = Vec::new();
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    while let Ok(job) = rx.recv() {
        match job {
            Job::Frame(f) => {
                let depth = queued.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
                t.set_thin(depth >= THIN_AT);
                if keyframe_wanted.swap(false, Ordering::Relaxed) {
                    t.request_keyframe();
                }
                let t0 = Instant::now();
                if let Err(e) = t.push(&f, &mut frames) {
                    errors += 1;
                    if errors <= 5 || errors.is_multiple_of(1000) {
                        warn!(stream = %stream, error = %e, count = errors, "video frame not transcoded");
                    }
                }
                busy += t0.elapsed();
                if !frames.is_empty() {
                    // Bounded by the input queue: at most a few frames per frame in.
                    out.do_send(Transcoded(std::mem::take(&mut frames)));
                }
            }
            Job::SkipThrough(pts) => t.skip_through(pts),
        }
    }
    let s = t.stats();
    let load = busy.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-3) * 100.0;
    info!(stream = %stream, frames_in = s.frames_in, frames_out = s.frames_out, keyframes = s.keyframes_out,
        not_encoded = s.skipped, errors = s.decode_errors, load_pct = format!("{load:.0}"), "video transcoding ended");
}

/// The video of one source on its way to the fan-out: as it is, or through a transcoding thread.
pub struct VideoPath {
    detector: ReorderDetector,
    /// Frames since the last keyframe while undecided (replayed when B-frames are found).
    held: Vec<Frame>,
    /// Presentation time of the latest frame forwarded as is.
    last_forwarded: Option<u64>,
    thread: Option<TranscoderThread>,
    /// Why the video is re-encoded, once it is (the stream object's note).
    found: Option<&'static str>,
    settings: TranscodeSettings,
    out: Recipient<Transcoded>,
    stream: String,
}

impl VideoPath {
    pub fn new(stream: &str, settings: TranscodeSettings, out: Recipient<Transcoded>) -> Self {
        VideoPath {
            detector: ReorderDetector::default(),
            held: Vec::new(),
            last_forwarded: None,
            thread: None,
            found: None,
            settings,
            out,
            stream: stream.to_string(),
        }
    }

    /// Why the video is re-encoded, once it is: the note for the stream object.
    pub fn note(&self) -> Option<&'static str> {
        self.found
    }

    pub fn transcoding(&self) -> bool {
        self.thread.is_some()
    }

    /// The source's frame rate, once known (before transcoding starts; ignored after).
    pub fn set_fps(&mut self, fps: f32) {
        if self.thread.is_none() {
            self.settings.fps = Some(fps);
        }
    }

    /// Re-encode from the first frame on (the source knows already, e.g. from a file's index:
    /// B-frames, a rotation), `note` saying why.
    pub fn start(&mut self, note: &'static str) {
        self.found = Some(note);
        self.spawn();
    }

    fn spawn(&mut self) {
        match TranscoderThread::spawn(&self.stream, self.settings, self.out.clone()) {
            Ok(t) => self.thread = Some(t),
            Err(e) => warn!(stream = %self.stream, error = %e, "no transcoding thread: video goes as it is"),
        }
    }

    /// The next video frame in decode order. Returns the frame to forward as it is, or `None`
    /// when it went to the transcoder (its output arrives as [`Transcoded`]); `found` is set the
    /// one time B-frames are found, for the source to log and note in its stream object.
    pub fn video(&mut self, frame: Frame, found: &mut Option<Reorder>) -> Option<Frame> {
        if let Some(t) = self.thread.as_mut() {
            t.push(frame);
            return None;
        }
        if self.found.is_some() {
            return Some(frame); // the thread could not start
        }
        if let Some(why) = self.detector.observe(&frame) {
            self.found = Some(NOTE_B_FRAMES);
            *found = Some(why);
            self.spawn();
            let held = std::mem::take(&mut self.held);
            if let Some(t) = self.thread.as_mut() {
                if let Some(last) = self.last_forwarded {
                    t.skip_through(last);
                }
                // The GOP so far (from its keyframe), then this frame: the decoder's references.
                for f in held {
                    t.push(f);
                }
                t.push(frame);
                return None;
            }
            return Some(frame);
        }
        if frame.keyframe {
            self.held.clear();
        }
        if self.held.len() < MAX_HELD && (frame.keyframe || !self.held.is_empty()) {
            self.held.push(frame.clone());
        } else if !frame.keyframe {
            self.held.clear();
        }
        self.last_forwarded = Some(self.last_forwarded.map_or(frame.rtp_time, |l| l.max(frame.rtp_time)));
        Some(frame)
    }

    /// A viewer wants a keyframe: only a re-encoded stream can make one.
    pub fn request_keyframe(&mut self) {
        if let Some(t) = self.thread.as_mut() {
            t.request_keyframe();
        }
    }
}
