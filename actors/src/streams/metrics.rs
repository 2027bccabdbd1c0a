//! Media metrics counted where things happen (the rest of `/metrics` is read at scrape time from
//! the registry, the sockets and the TURN server). Process-wide, like the process they describe;
//! the front registers them in each scrape's registry ([`MediaMetrics::register`]).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The media metrics (see the module docs).
pub struct MediaMetrics {
    /// From a viewer's `playStream` to its WebRTC peer being connected (ICE + DTLS).
    pub join_seconds: Histogram,
    /// From a snapshot request to its picture (REST and WebSocket).
    pub snapshot_seconds: Histogram,
    /// WebRTC peers that failed: `role` publisher/viewer, `reason` ice_timeout/ice_lost/error.
    pub peer_failures: IntCounterVec,
    /// Keyframe requests (PLI) sent to publishing browsers.
    pub keyframe_requests: IntCounter,
    /// Viewers moved to another simulcast layer (or rendition) by their bandwidth estimate:
    /// `direction` up/down.
    pub layer_switches: IntCounterVec,
    /// Times a viewer's video was shed because its link fell behind (its send queue held too
    /// much), until a keyframe once drained.
    pub video_shed: IntCounter,
    /// Lower renditions being re-encoded for viewers on slow links.
    pub lower_renditions: IntGauge,
    /// Actors alive, by kind ([`Live`]): what a soak checks for leaks.
    pub actors: IntGaugeVec,
}

static METRICS: LazyLock<MediaMetrics> = LazyLock::new(|| {
    let buckets = vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0];
    MediaMetrics {
        join_seconds: Histogram::with_opts(
            HistogramOpts::new(
                "sluice_viewer_join_seconds",
                "Time from playStream to a connected viewer peer",
            )
            .buckets(buckets.clone()),
        )
        .expect("valid histogram"),
        snapshot_seconds: Histogram::with_opts(
            HistogramOpts::new("sluice_snapshot_seconds", "Time to answer a snapshot request")
                .buckets(buckets),
        )
        .expect("valid histogram"),
        peer_failures: IntCounterVec::new(
            Opts::new("sluice_peer_failures_total", "WebRTC peers that failed, by role and reason"),
            &["role", "reason"],
        )
        .expect("valid counter"),
        keyframe_requests: IntCounter::new(
            "sluice_keyframe_requests_total",
            "Keyframe requests (PLI) sent to publishing browsers",
        )
        .expect("valid counter"),
        layer_switches: IntCounterVec::new(
            Opts::new(
                "sluice_viewer_layer_switches_total",
                "Viewers moved to another simulcast layer by their bandwidth estimate, by direction",
            ),
            &["direction"],
        )
        .expect("valid counter"),
        video_shed: IntCounter::new(
            "sluice_viewer_video_shed_total",
            "Times a viewer's video was shed until a keyframe because its link fell behind",
        )
        .expect("valid counter"),
        lower_renditions: IntGauge::new(
            "sluice_lower_renditions",
            "Lower renditions re-encoded for viewers on slow links (streams without simulcast)",
        )
        .expect("valid gauge"),
        actors: IntGaugeVec::new(Opts::new("sluice_actors", "Actors alive, by kind"), &["kind"])
            .expect("valid gauge"),
    }
});

/// Counts one actor in `sluice_actors{kind}` while it lives: a field of the actor, so the count
/// falls when the actor is dropped, however it stopped.
pub struct Live(&'static str);

impl Live {
    pub fn new(kind: &'static str) -> Live {
        METRICS.actors.with_label_values(&[kind]).inc();
        Live(kind)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        METRICS.actors.with_label_values(&[self.0]).dec();
    }
}

/// The process's media metrics.
pub fn metrics() -> &'static MediaMetrics {
    &METRICS
}

impl MediaMetrics {
    /// Add these metrics to `r` (a scrape's registry).
    pub fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.join_seconds.clone()))?;
        r.register(Box::new(self.snapshot_seconds.clone()))?;
        r.register(Box::new(self.peer_failures.clone()))?;
        r.register(Box::new(self.keyframe_requests.clone()))?;
        r.register(Box::new(self.layer_switches.clone()))?;
        r.register(Box::new(self.video_shed.clone()))?;
        r.register(Box::new(self.lower_renditions.clone()))?;
        r.register(Box::new(self.actors.clone()))
    }

    /// A peer ended failed with WCS `info` (the reason label is bounded: three values).
    pub fn peer_failed(&self, role: &'static str, info: &str) {
        let reason = match info {
            crate::protocol::info::ICE_TIMEOUT => "ice_timeout",
            crate::protocol::info::ICE_KEEP_ALIVE => "ice_lost",
            _ => "error",
        };
        self.peer_failures.with_label_values(&[role, reason]).inc();
    }
}
