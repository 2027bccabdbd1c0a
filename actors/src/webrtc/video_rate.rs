//! Video rate reports: what the server measures of each WebRTC peer's video, once a second.
//!
//! The WCS protocol sends them to the client as `inboundVideoRate` (to a publisher: what the
//! server receives from it) and `outboundVideoRate` (to a viewer: what the server sends it),
//! `{mediaSessionId, videoRate, fps, nack, pli, lostPackets, width, height}`; the official SDK
//! compares `videoRate` with its own byte counters for its connection-quality display (the
//! Media Devices Manager page's charts). The same report is the `metrics` of the stream object
//! in `/stream/find` and `find_all`.
//!
//! The counters are str0m's (bytes and packets including retransmissions, NACKs and PLIs sent
//! to a publisher or received from a viewer, the viewer's reported cumulative loss); frames are
//! counted by the actor. [`RateMeter`] turns two successive samples into rates.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often str0m reports the counters (and so how often a report goes out).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// One sample of a peer's video counters, as the engine reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VideoStats {
    pub bytes: u64,
    pub packets: u64,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    /// Cumulative packets lost, when the far end reported it (a viewer's receiver reports).
    pub lost: Option<u64>,
    /// Fraction lost in the last report interval (0..1), when known.
    pub loss: Option<f32>,
    pub rtt: Option<Duration>,
    /// A viewer: its NACK history is the full one (it has asked for a resend, and a keyframe
    /// has been sent since: `engine::Peer::bound_nack_history`).
    pub nack_history_full: bool,
}

/// The report (see the module docs), as it goes on the wire and into the stream object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoRate {
    /// Bits per second over the last interval.
    pub video_rate: u64,
    /// Frames per second over the last interval.
    pub fps: f64,
    /// NACKs so far (sent to a publisher, received from a viewer).
    pub nack: u64,
    /// PLIs and FIRs so far.
    pub pli: u64,
    /// Packets lost so far (a viewer's own reports; for a publisher, estimated from the loss
    /// fraction of the receiver reports we send).
    pub lost_packets: u64,
    pub width: u32,
    pub height: u32,
    /// Round-trip time, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    /// Audio bits per second over the last interval of the audio counters.
    pub audio_rate: u64,
    /// A viewer's send-side bandwidth estimate, bit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_estimate: Option<u64>,
    /// The layer a viewer gets: 0 the best (or only) one, 1 and up the smaller simulcast layers or the lower rendition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// A viewer's NACK history is the full one ([`VideoStats::nack_history_full`]): counted
    /// on /metrics, not sent to clients.
    #[serde(skip)]
    pub nack_history_full: bool,
}

/// Turns successive [`VideoStats`] samples and counted frames into [`VideoRate`]s.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: Option<(Instant, VideoStats)>,
    frames: u64,
    lost_estimate: f64,
    /// The previous audio byte count, and the rate it gave.
    audio_last: Option<(Instant, u64)>,
    audio_rate: u64,
}

impl RateMeter {
    /// A video frame went through.
    pub fn frame(&mut self) {
        self.frames += 1;
    }

    /// A sample of the audio counters (bytes so far, the engine's audio stats).
    pub fn audio(&mut self, bytes: u64, now: Instant) {
        if let Some((t0, b0)) = self.audio_last.replace((now, bytes)) {
            let secs = now.duration_since(t0).as_secs_f64();
            if secs > 0.0 {
                self.audio_rate = (bytes.saturating_sub(b0) as f64 * 8.0 / secs).round() as u64;
            }
        }
    }

    /// A new sample at `now`; a report once there is a previous sample to compare with.
    pub fn sample(&mut self, s: VideoStats, now: Instant, width: u32, height: u32) -> Option<VideoRate> {
        let prev = self.last.replace((now, s));
        let frames = std::mem::take(&mut self.frames);
        let (t0, p) = prev?;
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let packets = s.packets.saturating_sub(p.packets);
        if s.lost.is_none() {
            self.lost_estimate += f64::from(s.loss.unwrap_or(0.0).clamp(0.0, 1.0)) * packets as f64;
        }
        Some(VideoRate {
            video_rate: (s.bytes.saturating_sub(p.bytes) as f64 * 8.0 / secs).round() as u64,
            fps: (frames as f64 / secs * 10.0).round() / 10.0,
            nack: s.nacks,
            pli: s.plis + s.firs,
            lost_packets: s.lost.unwrap_or(self.lost_estimate.round() as u64),
            width,
            height,
            rtt_ms: s.rtt.map(|d| d.as_millis() as u64),
            audio_rate: self.audio_rate,
            bandwidth_estimate: None,
            layer: None,
            nack_history_full: s.nack_history_full,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_two_samples() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        let s0 = VideoStats { bytes: 1000, packets: 10, ..Default::default() };
        assert_eq!(m.sample(s0, t0, 640, 480), None);
        for _ in 0..30 {
            m.frame();
        }
        let s1 =
            VideoStats { bytes: 126_000, packets: 110, nacks: 3, plis: 1, firs: 1, loss: Some(0.1), ..s0 };
        let r = m.sample(s1, t0 + Duration::from_secs(2), 640, 480).unwrap();
        assert_eq!(r.video_rate, 500_000);
        assert_eq!(r.fps, 15.0);
        assert_eq!((r.nack, r.pli, r.lost_packets), (3, 2, 10));
        assert_eq!((r.width, r.height), (640, 480));
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["videoRate"], 500_000);
        assert_eq!(json["lostPackets"], 10);
        m.audio(1000, t0);
        m.audio(9000, t0 + Duration::from_secs(1));
        // A viewer's own cumulative loss wins over the estimate; the audio rate rides along.
        assert_eq!(m.sample(s1, t0 + Duration::from_millis(2500), 0, 0).unwrap().audio_rate, 64_000);
        let s2 = VideoStats { lost: Some(4), ..s1 };
        assert_eq!(m.sample(s2, t0 + Duration::from_secs(3), 0, 0).unwrap().lost_packets, 4);
    }
}
