//! Edge mode (`--edge URL --edge-pid PID`, repeatable): the publisher publishes on the origin
//! (the spawned server, or `--ws`/`--pid`), the subscribers play the stream on the edges of a
//! sluice cluster, round-robin, and the tool reports each node's CPU and viewers per step and,
//! at the end, the delay an edge hop adds.
//!
//! The delay: one probe subscriber on the origin and the first subscriber of each edge note
//! when each video frame completes (the RTP packet with the marker bit; the synthetic frames'
//! payloads differ frame to frame, so the last packet's payload names the frame on every hop,
//! as the server forwards payloads unchanged). The edge's arrival minus the origin's, over the
//! frames both saw, gives p50 and p99.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Instant;

/// Frames kept per probe (about 30 s at 30 fps).
const MAX_FRAMES: usize = 1000;

/// When a probe subscriber saw each frame complete, by the frame's payload fingerprint.
#[derive(Default)]
pub struct FrameTimes(Mutex<HashMap<u64, Instant>>);

impl FrameTimes {
    /// Note the last packet of a video frame (marker bit set; audio packets are skipped by size).
    pub fn note(&self, marker: bool, payload: &[u8], at: Instant) {
        if !marker || payload.len() < 100 {
            return;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        payload.hash(&mut h);
        if let Ok(mut m) = self.0.lock() {
            if m.len() < MAX_FRAMES {
                m.entry(h.finish()).or_insert(at);
            }
        }
    }
}

/// The delay `edge` adds over `origin`, in ms: p50, p99 and the number of frames compared
/// (frames further apart than a second are another frame with the same payload, skipped).
pub fn hop_delay(origin: &FrameTimes, edge: &FrameTimes) -> (f64, f64, usize) {
    let (Ok(o), Ok(e)) = (origin.0.lock(), edge.0.lock()) else { return (f64::NAN, f64::NAN, 0) };
    let mut d: Vec<f64> = e
        .iter()
        .filter_map(|(k, te)| {
            let to = o.get(k)?;
            let ms = if te >= to {
                te.duration_since(*to).as_secs_f64() * 1000.0
            } else {
                -(to.duration_since(*te).as_secs_f64() * 1000.0)
            };
            (ms.abs() < 1000.0).then_some(ms)
        })
        .collect();
    let n = d.len();
    (super::percentile(&mut d, 0.5), super::percentile(&mut d, 0.99), n)
}
