//! HLS and Low-Latency HLS of every stream: one [`muxer::HlsMuxer`] per stream played over HLS,
//! started by the first request and stopped [`HLS_IDLE`] after the last, and
//! [`HlsStreams`], the table the HTTP front (`src/hls.rs`) finds them in.
//!
//! Reads through the table, writes through the actor: the muxer is the only writer of its
//! stream's [`HlsStream`] (the packager: segments, parts, playlists, pure code in
//! [`sluice_codecs::hls`]); HTTP workers read it under a short read lock, with no mailbox round
//! trip, so a thousand viewers polling playlists cost a lock each. A blocking playlist request
//! (`_HLS_msn`, `_HLS_part`) waits on a `watch` channel the muxer bumps at each new part
//! ([`HlsStream::wait_for`]).

pub mod muxer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
pub use sluice_codecs::hls::{AacRendition, HlsConfig, Packager, Ready, Wanted};

use crate::registry::Registry;

/// A stream's packaging stops this long after its last HLS request.
pub const HLS_IDLE: Duration = Duration::from_secs(30);

/// One stream's HLS state, shared by its muxer (the writer) and the HTTP front (readers).
pub struct HlsStream {
    pub name: String,
    /// The AAC rendition (audio transcoded for players without Opus).
    pub aac: bool,
    packager: RwLock<Packager>,
    /// Parts published so far: bumped by the muxer, watched by blocking requests.
    progress: tokio::sync::watch::Sender<u64>,
    created: Instant,
    /// Milliseconds since `created` of the last request.
    last_request: AtomicU64,
    ended: AtomicBool,
}

impl HlsStream {
    fn new(name: &str, aac: bool, packager: Packager) -> Self {
        HlsStream {
            name: name.to_string(),
            aac,
            packager: RwLock::new(packager),
            progress: tokio::sync::watch::channel(0).0,
            created: Instant::now(),
            last_request: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    /// A request came: the muxer keeps running for [`HLS_IDLE`] more.
    pub fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request.store(ms, Ordering::Relaxed);
    }

    /// Time since the last request.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_request.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }

    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Read the packager (playlists, segments) under its lock.
    pub fn read<R>(&self, f: impl FnOnce(&Packager) -> R) -> R {
        let guard = self.packager.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write<R>(&self, f: impl FnOnce(&mut Packager) -> R) -> R {
        let mut guard = self.packager.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn published_part(&self) {
        self.progress.send_modify(|n| *n += 1);
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        self.progress.send_modify(|n| *n += 1);
    }

    /// Wait until `ready` holds for the packager (checked at each new part), at most `timeout`.
    /// Returns false on timeout or when the stream ended first.
    pub async fn wait_for(&self, timeout: Duration, ready: impl Fn(&Packager) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.progress.subscribe();
        loop {
            if self.read(&ready) {
                return true;
            }
            if self.ended() {
                return false;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }
}

/// The streams being packaged, by name.
pub struct HlsStreams {
    registry: Arc<Registry>,
    arbiter: ArbiterHandle,
    cfg: HlsConfig,
    /// By stream name and rendition (true: AAC).
    streams: DashMap<(String, bool), Arc<HlsStream>>,
}

impl HlsStreams {
    /// Muxers run on `arbiter` (muxing a frame is a copy into memory: cheap, but kept off the
    /// media arbiter anyway).
    pub fn new(registry: Arc<Registry>, arbiter: ArbiterHandle) -> Arc<Self> {
        Arc::new(HlsStreams { registry, arbiter, cfg: HlsConfig::default(), streams: DashMap::new() })
    }

    /// The HLS state of a published stream, its muxer started on the first request; `None`
    /// when no stream of that name is published. `aac`: the AAC rendition (its own muxer,
    /// started only when asked for: it decodes and encodes the audio).
    pub fn get(self: &Arc<Self>, name: &str, aac: bool) -> Option<Arc<HlsStream>> {
        let key = (name.to_string(), aac);
        if let Some(s) = self.streams.get(&key).map(|s| s.clone()) {
            if !s.ended() {
                s.touch();
                return Some(s);
            }
        }
        let published = self.registry.lookup(name)?;
        if aac && !published.has_audio {
            return None;
        }
        let stream = match self.streams.entry(key) {
            Entry::Occupied(e) if !e.get().ended() => return Some(e.get().clone()),
            e => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                // Segment numbers start at the Unix time in seconds: a stream packaged again
                // later never reuses a URL a CDN may have cached (segments last >= 1 s).
                let (first, clock) = (now_ms / 1000, (Instant::now(), now_ms));
                let (packager, rendition) = if aac {
                    let r = match AacRendition::new() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(stream = name, error = %e, "no AAC rendition");
                            return None;
                        }
                    };
                    let asc = r.audio_specific_config();
                    (Packager::new_aac(published.video, asc, self.cfg, first, clock), Some(r))
                } else {
                    (Packager::new(published.video, published.has_audio, self.cfg, first, clock), None)
                };
                let stream = Arc::new(HlsStream::new(name, aac, packager));
                stream.touch();
                match e {
                    Entry::Occupied(mut o) => {
                        o.insert(stream.clone());
                    }
                    Entry::Vacant(v) => {
                        v.insert(stream.clone());
                    }
                }
                (stream, rendition)
            }
        };
        let (stream, rendition) = stream;
        let (table, s, source) = (self.clone(), stream.clone(), published.source);
        muxer::HlsMuxer::start_in_arbiter(&self.arbiter, move |_| {
            muxer::HlsMuxer::new(s, source, table, rendition)
        });
        Some(stream)
    }

    /// Streams being packaged.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// A muxer stopped: forget its stream (unless a newer one took the name).
    fn done(&self, stream: &Arc<HlsStream>) {
        self.streams.remove_if(&(stream.name.clone(), stream.aac), |_, s| Arc::ptr_eq(s, stream));
    }
}
