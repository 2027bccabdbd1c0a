//! Snapshots: a picture of any live stream, on request.
//!
//! [`SnapshotHub`] (one actor) answers [`TakeSnapshot`]. It asks the stream's source for its held
//! GOP ([`GetGop`]: keyframe + frames since, kept by every source's fan-out), has the
//! [`DecodeWorker`] decode the newest picture and encode it, and answers. Requests for one stream
//! that arrive while a snapshot is in progress join it: one decode serves them all. When the
//! source holds no keyframe yet, the hub asks it for one and polls until [`SNAPSHOT_TIMEOUT`].
//!
//! Decoding and image encoding run on the worker's own thread (a `SyncArbiter`), never on the
//! media arbiter, so forwarding never waits for a snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use image::RgbImage;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::media::Frame;
use crate::messages::{GetGop, RequestKeyframe};
use crate::picture::{self, Format, PictureError};
use crate::registry::Registry;

/// How long a snapshot may wait for a decodable picture (WCS's documented bound).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the hub looks again for a keyframe it has asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("{}", crate::protocol::info::STREAM_NOT_FOUND)]
    NotFound,
    #[error("Stream has no video")]
    NoVideo,
    #[error("No decodable video frame within 3 s")]
    Timeout,
    #[error("Failed to decode a picture: {0}")]
    Decode(String),
    #[error("Snapshot service unavailable")]
    Unavailable,
}

impl From<PictureError> for SnapshotError {
    fn from(e: PictureError) -> Self {
        SnapshotError::Decode(e.to_string())
    }
}

/// Take a snapshot of a published stream: the encoded image bytes.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<u8>, SnapshotError>")]
pub struct TakeSnapshot {
    pub stream: String,
    pub format: Format,
    /// Scale to this size; 0 keeps the stream's (both 0: its own resolution).
    pub width: u32,
    pub height: u32,
}

type Reply = oneshot::Sender<Result<Vec<u8>, SnapshotError>>;

struct Waiter {
    format: Format,
    width: u32,
    height: u32,
    reply: Reply,
}

/// The last picture decoded per stream, keyed by the GOP it came from (its newest frame).
struct Cached {
    newest: *const Frame,
    len: usize,
    image: Arc<RgbImage>,
}

// The raw pointer is an identity key only, never dereferenced.
unsafe impl Send for Cached {}

pub struct SnapshotHub {
    registry: Arc<Registry>,
    worker: Addr<DecodeWorker>,
    pending: HashMap<String, Vec<Waiter>>,
    cache: HashMap<String, Cached>,
}

impl SnapshotHub {
    pub fn new(registry: Arc<Registry>, worker: Addr<DecodeWorker>) -> Self {
        SnapshotHub { registry, worker, pending: HashMap::new(), cache: HashMap::new() }
    }

    /// Acquire a picture for `stream` and answer everyone waiting for it.
    fn run(&mut self, stream: String, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let started = Instant::now();
        let name = stream.clone();
        let acquire = async move {
            let mut asked = false;
            loop {
                let Some(published) = registry.lookup(&name) else {
                    return Err(SnapshotError::NotFound);
                };
                let gop = published.source.gop.send(GetGop).await.map_err(|_| SnapshotError::NotFound)?;
                if !gop.has_video {
                    return Err(SnapshotError::NoVideo);
                }
                if !gop.frames.is_empty() {
                    return Ok(gop.frames);
                }
                if !asked {
                    published.source.keyframe.do_send(RequestKeyframe(None));
                    asked = true;
                }
                if started.elapsed() >= SNAPSHOT_TIMEOUT {
                    return Err(SnapshotError::Timeout);
                }
                actix::clock::sleep(POLL_INTERVAL).await;
            }
        };
        acquire
            .into_actor(self)
            .then(move |res, act, _| {
                let worker = act.worker.clone();
                let cached = match &res {
                    Ok(frames) => act.cached(&stream, frames),
                    Err(_) => None,
                };
                let stream2 = stream.clone();
                async move {
                    let frames = res?;
                    let newest = frames.last().map(Arc::as_ptr).unwrap_or(std::ptr::null());
                    let len = frames.len();
                    let image = match cached {
                        Some(img) => img,
                        None => {
                            let img = worker
                                .send(Decode { frames })
                                .await
                                .map_err(|_| SnapshotError::Unavailable)??;
                            Arc::new(img)
                        }
                    };
                    Ok::<_, SnapshotError>((newest as usize, len, image))
                }
                .into_actor(act)
                .map(move |res, act, ctx| act.answer(stream2, res, started, ctx))
            })
            .spawn(ctx);
    }

    fn cached(&self, stream: &str, frames: &[Arc<Frame>]) -> Option<Arc<RgbImage>> {
        let c = self.cache.get(stream)?;
        let newest = frames.last().map(Arc::as_ptr)?;
        (c.newest == newest && c.len == frames.len()).then(|| c.image.clone())
    }

    fn answer(
        &mut self,
        stream: String,
        res: Result<(usize, usize, Arc<RgbImage>), SnapshotError>,
        started: Instant,
        _ctx: &mut Context<Self>,
    ) {
        let waiters = self.pending.remove(&stream).unwrap_or_default();
        match res {
            Err(e) => {
                info!(%stream, error = %e, waiters = waiters.len(), "snapshot failed");
                for w in waiters {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
            Ok((newest, len, image)) => {
                debug!(%stream, ms = started.elapsed().as_millis() as u64, waiters = waiters.len(), "snapshot decoded");
                self.cache.insert(
                    stream.clone(),
                    Cached { newest: newest as *const Frame, len, image: image.clone() },
                );
                // One encode per distinct output format among the waiters.
                let mut groups: HashMap<(Format, u32, u32), Vec<Reply>> = HashMap::new();
                for w in waiters {
                    groups.entry((w.format, w.width, w.height)).or_default().push(w.reply);
                }
                for ((format, width, height), replies) in groups {
                    let worker = self.worker.clone();
                    let image = image.clone();
                    actix::spawn(async move {
                        let res = match worker.send(Encode { image, format, width, height }).await {
                            Ok(r) => r.map_err(SnapshotError::from),
                            Err(_) => Err(SnapshotError::Unavailable),
                        };
                        for r in replies {
                            let _ = r.send(res.clone());
                        }
                    });
                }
            }
        }
    }
}

impl Actor for SnapshotHub {
    type Context = Context<Self>;
}

impl Handler<TakeSnapshot> for SnapshotHub {
    type Result = ResponseFuture<Result<Vec<u8>, SnapshotError>>;

    fn handle(&mut self, m: TakeSnapshot, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter { format: m.format, width: m.width, height: m.height, reply: tx };
        match self.pending.get_mut(&m.stream) {
            Some(ws) => ws.push(waiter),
            None => {
                self.pending.insert(m.stream.clone(), vec![waiter]);
                self.run(m.stream, ctx);
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(SnapshotError::Unavailable)) })
    }
}

/// Decodes and encodes pictures on a thread of its own (`SyncArbiter`).
pub struct DecodeWorker;

impl Actor for DecodeWorker {
    type Context = SyncContext<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<RgbImage, SnapshotError>")]
struct Decode {
    frames: Vec<Arc<Frame>>,
}

impl Handler<Decode> for DecodeWorker {
    type Result = Result<RgbImage, SnapshotError>;
    fn handle(&mut self, m: Decode, _: &mut SyncContext<Self>) -> Self::Result {
        Ok(picture::decode_latest(&m.frames)?)
    }
}

#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, PictureError>")]
struct Encode {
    image: Arc<RgbImage>,
    format: Format,
    width: u32,
    height: u32,
}

impl Handler<Encode> for DecodeWorker {
    type Result = Result<Vec<u8>, PictureError>;
    fn handle(&mut self, m: Encode, _: &mut SyncContext<Self>) -> Self::Result {
        picture::encode(&m.image, m.format, m.width, m.height)
    }
}

/// Start the snapshot service: the decode worker thread and the hub on `arbiter`.
pub fn start(registry: Arc<Registry>, arbiter: &ArbiterHandle) -> Addr<SnapshotHub> {
    let worker = SyncArbiter::start(1, || DecodeWorker);
    SnapshotHub::start_in_arbiter(arbiter, move |_| SnapshotHub::new(registry, worker))
}
