//! The VOD conversion cache: a file WebRTC viewers cannot play as it is (H.264 with B-frames, or
//! a phone's rotated picture) is converted once, in the background, and later plays come from
//! the converted copy at no CPU cost.
//!
//! The first play of such a file starts a conversion ([`VodCache::get_or_convert`]) and is
//! itself served by live re-encoding ([`crate::transcoder`]), as every play is until the copy is
//! ready. The conversion runs on a thread of its own, paused while any live re-encoding runs
//! (on a busy machine it waits for a quiet moment), niced and held to half a core ([`DUTY`];
//! at most [`MAX_CONVERSIONS`] at once, a file asked for beyond that is converted when asked
//! again): it reads the file in decode order,
//! re-encodes the video to constrained baseline upright ([`crate::video_transcode`]), turns AAC
//! into Opus once ([`crate::transcode`]), and writes a fragmented MP4 ([`crate::fmp4`]) that the
//! VOD reader plays like our recordings. It writes to a temporary name and renames when done, so
//! a copy that exists is complete; progress goes to the log every 10 % and to
//! `GET /rest-api/vod/cache`.
//!
//! A copy is named after the file and a hash of its path, size and modification time
//! (`<stem>-<hash>.mp4` in the cache folder, `<data dir>/vod-cache`): a changed file gets a new
//! copy, and the stale one is left for the operator to delete.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::fmp4::{Fmp4Writer, Output};
use crate::media::{Codec, Frame};
use crate::mp4_reader::{self, AudioSetup, Mp4Index, TrackKind, VideoSetup};
use crate::transcode::AacToOpus;
use crate::video_transcode::{Rotation, TranscodeSettings, VideoTranscoder};

/// Conversions running at once (each takes about a core for a 720p file).
pub const MAX_CONVERSIONS: usize = 1;
/// The conversion thread's nice value: below live work.
const NICE: i32 = 10;
/// The share of one core a conversion may take: it sleeps to stay under it, so a conversion
/// never starves the live streams and live re-encoding of a busy machine.
const DUTY: f64 = 0.5;
/// How often a paused conversion looks whether live re-encoding has stopped.
const LIVE_WAIT: Duration = Duration::from_millis(250);

/// Where a conversion stands.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// The file as played (`vod://<file>`).
    pub file: String,
    /// "converting", "ready" or "failed".
    pub state: &'static str,
    /// 0 to 1.
    pub progress: f32,
    /// The converted copy, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Job {
    file: String,
    /// Per mille.
    progress: AtomicU32,
    state: Mutex<(&'static str, Option<String>)>,
    target: PathBuf,
}

/// The cache folder and its conversions (see the module docs).
pub struct VodCache {
    dir: PathBuf,
    jobs: DashMap<PathBuf, Arc<Job>>,
}

impl VodCache {
    pub fn new(dir: PathBuf) -> Arc<Self> {
        Arc::new(VodCache { dir, jobs: DashMap::new() })
    }

    /// Where the copy of `src` goes, from its path, size and modification time.
    fn target(&self, src: &Path) -> Option<PathBuf> {
        let meta = std::fs::metadata(src).ok()?;
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mut h = Sha256::new();
        h.update(src.as_os_str().as_encoded_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
        let hash: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        let stem: String = src
            .file_stem()
            .map(|s| {
                s.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
            })
            .unwrap_or_default();
        Some(self.dir.join(format!("{stem}-{hash}.mp4")))
    }

    /// The converted copy of `src` (played as `file`) if it is ready; otherwise a conversion
    /// is started (unless one runs for it, or too many run) and `None` is returned.
    pub fn get_or_convert(&self, src: &Path, file: &str) -> Option<PathBuf> {
        let target = self.target(src)?;
        if target.is_file() {
            return Some(target);
        }
        if let Some(j) = self.jobs.get(src) {
            if j.target == target {
                return None; // converting, or failed for this version of the file
            }
        }
        let running = self.jobs.iter().filter(|j| j.state.lock().is_ok_and(|s| s.0 == "converting")).count();
        if running >= MAX_CONVERSIONS {
            info!(file, "VOD conversion deferred: {running} running");
            return None;
        }
        let job = Arc::new(Job {
            file: file.to_string(),
            progress: AtomicU32::new(0),
            state: Mutex::new(("converting", None)),
            target: target.clone(),
        });
        self.jobs.insert(src.to_path_buf(), job.clone());
        let (key, src, dir) = (src.to_path_buf(), src.to_path_buf(), self.dir.clone());
        let spawned = std::thread::Builder::new().name("vod-convert".into()).spawn(move || {
            // Background work: live streams (and live re-encoding) come first. On Linux a
            // thread's nice value is its own.
            // SAFETY: nice() only changes this thread's scheduling priority.
            let _ = unsafe { libc::nice(NICE) };
            let started = Instant::now();
            info!(file = %job.file, to = %target.display(), "VOD conversion started");
            let res = std::fs::create_dir_all(&dir)
                .map_err(|e| e.to_string())
                .and_then(|_| convert(&src, &target, &job));
            let mut st = job.state.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(frames) => {
                    info!(file = %job.file, frames, secs = started.elapsed().as_secs_f32(),
                        "VOD conversion done: later plays come from the converted copy");
                    *st = ("ready", None);
                }
                Err(e) => {
                    warn!(file = %job.file, error = %e, "VOD conversion failed: plays keep re-encoding live");
                    *st = ("failed", Some(e));
                }
            }
        });
        if let Err(e) = spawned {
            warn!(error = %e, "VOD conversion thread not started");
            self.jobs.remove(key.as_path());
        }
        None
    }

    /// Every conversion of this run, by file.
    pub fn list(&self) -> Vec<CacheEntry> {
        let mut v: Vec<CacheEntry> = self
            .jobs
            .iter()
            .map(|j| {
                let (state, error) = j.state.lock().map(|s| s.clone()).unwrap_or(("failed", None));
                CacheEntry {
                    file: j.file.clone(),
                    state,
                    progress: if state == "ready" {
                        1.0
                    } else {
                        j.progress.load(Ordering::Relaxed) as f32 / 1000.0
                    },
                    cached: (state == "ready").then(|| j.target.display().to_string()),
                    error,
                }
            })
            .collect();
        v.sort_by(|a, b| a.file.cmp(&b.file));
        v
    }
}

/// Convert `src` into `target` (through a temporary file); the number of video frames written.
fn convert(src: &Path, target: &Path, job: &Job) -> Result<u64, String> {
    let (index, mut file) = mp4_reader::open(src).map_err(|e| e.to_string())?;
    let Some(VideoSetup::H264 { sps, pps, length_size }) = index.video.clone() else {
        return Err("not H.264 video".into());
    };
    let mut aac = match &index.audio {
        Some(AudioSetup::Aac { asc, .. }) => Some(AacToOpus::new(asc).map_err(|e| e.to_string())?),
        _ => None,
    };
    let aac_rate = match &index.audio {
        Some(AudioSetup::Aac { sample_rate, .. }) => (*sample_rate).max(1) as u64,
        _ => 48_000,
    };
    let rotation = Rotation::from_degrees(index.rotation as i32).unwrap_or(Rotation::None);
    let settings = TranscodeSettings { fps: fps_of(&index), rotation, ..Default::default() };
    let mut video = VideoTranscoder::new(settings).map_err(|e| e.to_string())?;
    let mut writer = Fmp4Writer::new(Some(Codec::H264), index.audio.is_some());
    let tmp = target.with_extension("mp4.part");
    let mut out = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let res = (|| {
        let t0 = Instant::now();
        let mut busy = Duration::ZERO;
        let mut paused = Duration::ZERO;
        let mut frames = Vec::new();
        let mut written = 0u64;
        let total = index.samples.len().max(1);
        let mut last_decile = 0;
        for (i, s) in index.samples.iter().enumerate() {
            // Live re-encoding (the very play that started this conversion, among others) comes
            // first: the conversion waits while any runs.
            let mut waited = false;
            while crate::transcoder::live_transcodes() > 0 {
                if !waited {
                    debug!(file = %job.file, "VOD conversion paused while live re-encoding runs");
                    waited = true;
                }
                std::thread::sleep(LIVE_WAIT);
                paused += LIVE_WAIT;
            }
            let work = Instant::now();
            let data = mp4_reader::read_sample(&mut file, s).map_err(|e| e.to_string())?;
            let at = t0 + Duration::from_micros(s.dts_us);
            match s.track {
                TrackKind::Video => {
                    let au = crate::h264::avcc_to_annexb(&data, length_size, s.sync, &sps, &pps);
                    let keyframe = s.sync && crate::media::is_keyframe(&au, true);
                    let f = Frame {
                        codec: Codec::H264,
                        keyframe,
                        rtp_time: s.pts_us * 9 / 100,
                        captured: at,
                        data: au.into(),
                    };
                    video.push(&f, &mut frames).map_err(|e| e.to_string())?;
                }
                TrackKind::Audio => match (&index.audio, aac.as_mut()) {
                    (Some(AudioSetup::Aac { .. }), Some(t)) => {
                        let (opus, res) = t.frames(&data, s.pts_us * aac_rate / 1_000_000, at);
                        if let Err(e) = res {
                            debug!(file = %job.file, error = %e, "AAC frame dropped");
                        }
                        frames.extend(opus);
                    }
                    _ => frames.push(Frame {
                        codec: Codec::Opus,
                        keyframe: false,
                        rtp_time: s.pts_us * 48 / 1000,
                        captured: at,
                        data: data.into(),
                    }),
                },
            }
            for f in frames.drain(..) {
                written += u64::from(f.codec == Codec::H264);
                writer.push(&f).map_err(|e| e.to_string())?;
            }
            write_out(&mut writer, &mut out)?;
            busy += work.elapsed();
            let allowed = t0.elapsed().saturating_sub(paused).as_secs_f64() * DUTY;
            if busy.as_secs_f64() > allowed {
                std::thread::sleep(Duration::from_secs_f64((busy.as_secs_f64() - allowed) / DUTY));
            }
            let decile = (i + 1) * 10 / total;
            job.progress.store(((i + 1) * 1000 / total) as u32, Ordering::Relaxed);
            if decile > last_decile {
                last_decile = decile;
                info!(file = %job.file, percent = decile * 10, "VOD conversion progress");
            }
        }
        video.flush(&mut frames).map_err(|e| e.to_string())?;
        for f in frames.drain(..) {
            written += 1;
            writer.push(&f).map_err(|e| e.to_string())?;
        }
        writer.finish().map_err(|e| e.to_string())?;
        write_out(&mut writer, &mut out)?;
        out.sync_all().map_err(|e| e.to_string())?;
        Ok(written)
    })();
    match res {
        Ok(n) if n > 0 => {
            std::fs::rename(&tmp, target).map_err(|e| e.to_string())?;
            Ok(n)
        }
        Ok(_) => {
            let _ = std::fs::remove_file(&tmp);
            Err("no video frame came out".into())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_out(writer: &mut Fmp4Writer, out: &mut File) -> Result<(), String> {
    for o in writer.drain() {
        match o {
            Output::Append(bytes) => out.write_all(&bytes).map_err(|e| e.to_string())?,
            Output::Patch { at, bytes } => out.write_all_at(&bytes, at).map_err(|e| e.to_string())?,
        }
    }
    Ok(())
}

/// The video frame rate from the index's decode times.
pub fn fps_of(index: &Mp4Index) -> Option<f32> {
    let mut v = index.samples.iter().filter(|s| s.track == TrackKind::Video);
    let first = v.next()?.dts_us;
    let (n, last) = v.fold((1u64, first), |(n, _), s| (n + 1, s.dts_us));
    let span = last.checked_sub(first).filter(|d| *d > 0)?;
    Some(((n - 1) as f64 * 1_000_000.0 / span as f64) as f32)
}
