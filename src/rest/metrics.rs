//! `GET /metrics`: Prometheus text format (0.0.4), behind the same gate as the management API
//! (the `metrics` grant, an API key, `--api-allow`, or a loopback client).
//!
//! Most values are read at scrape time from their owners (the registry, the media socket, the
//! TURN server, the authorizer and limits, the recordings table, `/proc/self`); events that
//! happen in the media actors (join times, peer failures, keyframe requests, snapshot times)
//! are counted where they happen ([`sluice_actors::metrics`]). Labels are bounded (kinds,
//! reasons, roles), except the stream name of `sluice_stream_viewers`, which
//! `--no-metrics-stream-names` turns off.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use sluice_actors::registry::Filter;
use sluice_actors::Core;

use super::turn::TurnRest;

/// Whether per-stream series carry the stream name (`--no-metrics-stream-names` turns it off).
#[derive(Clone, Copy)]
pub struct StreamNames(pub bool);

/// The kind of source a published stream comes from, by its WCS `mediaProvider`.
pub(super) fn source_kind(provider: &str) -> &'static str {
    match provider {
        "WebRTC" => "webrtc",
        "Flash" => "rtmp",
        "RTSP" => "rtsp",
        "VOD" => "vod",
        _ => "other",
    }
}

fn gauge(r: &Registry, name: &str, help: &str, v: i64) -> prometheus::Result<()> {
    let g = IntGauge::new(name, help)?;
    g.set(v);
    r.register(Box::new(g))
}

fn counter(r: &Registry, name: &str, help: &str, v: u64) -> prometheus::Result<()> {
    let c = IntCounter::new(name, help)?;
    c.inc_by(v);
    r.register(Box::new(c))
}

/// CPU seconds (user + system) and resident bytes of this process, from /proc/self.
pub(crate) fn process_stats() -> (f64, i64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rfind(')').map(|i| s[i + 2..].to_string())?;
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0) // USER_HZ is 100 on Linux
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        })
        .unwrap_or(0);
    (cpu, rss * 1024)
}

fn collect(core: &Core, turn: &TurnRest, names: StreamNames) -> prometheus::Result<Registry> {
    let r = Registry::new();
    let all = core.registry.find(&Filter::default());

    let streams =
        IntGaugeVec::new(Opts::new("sluice_streams", "Published streams by source kind"), &["kind"])?;
    for kind in ["webrtc", "rtmp", "rtsp", "vod"] {
        streams.with_label_values(&[kind]).set(0);
    }
    let mut viewers_by_stream = std::collections::BTreeMap::<&str, i64>::new();
    for s in &all {
        if s.published {
            streams.with_label_values(&[source_kind(&s.media_provider)]).inc();
        } else {
            *viewers_by_stream.entry(s.name.as_str()).or_default() += 1;
        }
    }
    r.register(Box::new(streams))?;
    let viewers: i64 = viewers_by_stream.values().sum();
    // Measured video of the WebRTC peers (their once-a-second reports, `crate::video_rate`).
    let (mut nacks, mut lost, mut full_history) = (0u64, 0u64, 0i64);
    for m in all.iter().filter(|s| !s.published).filter_map(|s| s.metrics.as_ref()) {
        nacks += m.nack;
        lost += m.lost_packets;
        full_history += i64::from(m.nack_history_full);
    }
    gauge(&r, "sluice_viewers_video_nacks", "NACKs received from the current viewers", nacks as i64)?;
    gauge(
        &r,
        "sluice_viewers_full_nack_history",
        "Current viewers that keep the full NACK history (they asked for a resend; the others keep 500 ms)",
        full_history,
    )?;
    gauge(&r, "sluice_viewers_video_lost_packets", "Packets the current viewers reported lost", lost as i64)?;
    if names.0 {
        let opts = |n: &str, h: &str| Opts::new(n, h);
        let bitrate = IntGaugeVec::new(
            opts("sluice_stream_video_bitrate", "Video bits per second received from a WebRTC publisher"),
            &["stream"],
        )?;
        let fps = prometheus::GaugeVec::new(
            opts("sluice_stream_video_fps", "Video frames per second received from a WebRTC publisher"),
            &["stream"],
        )?;
        let lost = IntGaugeVec::new(
            opts(
                "sluice_stream_video_lost_packets",
                "Video packets lost from a WebRTC publisher (estimated)",
            ),
            &["stream"],
        )?;
        for s in all.iter().filter(|s| s.published) {
            if let Some(m) = &s.metrics {
                bitrate.with_label_values(&[&s.name]).set(m.video_rate as i64);
                fps.with_label_values(&[&s.name]).set(m.fps);
                lost.with_label_values(&[&s.name]).set(m.lost_packets as i64);
            }
        }
        r.register(Box::new(bitrate))?;
        r.register(Box::new(fps))?;
        r.register(Box::new(lost))?;
    }
    gauge(&r, "sluice_viewers", "Viewers playing a stream", viewers)?;
    if names.0 {
        let per =
            IntGaugeVec::new(Opts::new("sluice_stream_viewers", "Viewers by stream name"), &["stream"])?;
        for (name, n) in &viewers_by_stream {
            per.with_label_values(&[name]).set(*n);
        }
        r.register(Box::new(per))?;
    }

    let sessions =
        IntGaugeVec::new(Opts::new("sluice_sessions", "Client sessions by protocol"), &["protocol"])?;
    sessions.with_label_values(&["wcs"]).set(core.limits.open_sessions() as i64);
    let rtmp = all.iter().filter(|s| s.published && s.media_provider == "Flash").count();
    sessions.with_label_values(&["rtmp"]).set(rtmp as i64);
    r.register(Box::new(sessions))?;

    let s = &core.socket.stats;
    let packets = IntCounterVec::new(
        Opts::new("sluice_media_packets_total", "Datagrams on the media port, by direction"),
        &["direction"],
    )?;
    packets.with_label_values(&["in"]).inc_by(s.received.load(Relaxed));
    packets.with_label_values(&["out"]).inc_by(s.sent.load(Relaxed));
    r.register(Box::new(packets))?;
    let bytes = IntCounterVec::new(
        Opts::new("sluice_media_bytes_total", "Bytes on the media port, by direction"),
        &["direction"],
    )?;
    bytes.with_label_values(&["in"]).inc_by(s.received_bytes.load(Relaxed));
    bytes.with_label_values(&["out"]).inc_by(s.sent_bytes.load(Relaxed));
    r.register(Box::new(bytes))?;
    counter(&r, "sluice_media_unrouted_total", "Datagrams for no known peer", s.unrouted.load(Relaxed))?;
    counter(
        &r,
        "sluice_media_send_dropped_total",
        "Datagrams dropped on a full socket",
        s.send_dropped.load(Relaxed),
    )?;
    counter(
        &r,
        "sluice_media_over_rate_dropped_total",
        "Datagrams dropped because their client sent over the per-peer bitrate limit",
        s.over_rate.load(Relaxed),
    )?;
    gauge(&r, "sluice_webrtc_peers", "WebRTC peers on the media port", core.socket.peers() as i64)?;
    let (routes, tcp) = core.socket.routes();
    gauge(&r, "sluice_media_routes", "Client addresses routed to a peer on the media port", routes as i64)?;
    gauge(&r, "sluice_ice_tcp_connections", "ICE-TCP connections open", tcp as i64)?;

    let recordings = core.recordings.list();
    gauge(&r, "sluice_recordings", "Recordings running", recordings.len() as i64)?;
    let written: u64 = recordings
        .iter()
        .filter_map(|rec| std::fs::metadata(core.recordings.dir().join(&rec.file_name)).ok())
        .map(|m| m.len())
        .sum();
    gauge(&r, "sluice_recording_bytes", "Bytes written so far by the running recordings", written as i64)?;

    let refusals =
        IntCounterVec::new(Opts::new("sluice_refusals_total", "Requests refused, by reason"), &["reason"])?;
    let (a, l) = (&core.auth.stats, &core.limits.stats);
    for (reason, v) in [
        ("token", a.token_refusals.load(Relaxed)),
        ("hook", a.hook_refusals.load(Relaxed)),
        ("api", a.api_refusals.load(Relaxed)),
        ("sessions_per_ip", l.sessions.load(Relaxed)),
        ("streams", l.streams.load(Relaxed)),
        ("viewers", l.viewers.load(Relaxed)),
        ("messages", l.messages.load(Relaxed)),
    ] {
        refusals.with_label_values(&[reason]).inc_by(v);
    }
    r.register(Box::new(refusals))?;

    if let Some(t) = turn.stats() {
        gauge(&r, "sluice_turn_allocations", "TURN allocations", t.allocations.load(Relaxed) as i64)?;
        counter(
            &r,
            "sluice_turn_allocations_created_total",
            "TURN allocations made",
            t.allocations_total.load(Relaxed),
        )?;
        let relayed = IntCounterVec::new(
            Opts::new("sluice_turn_relayed_bytes_total", "Bytes relayed by TURN, by direction"),
            &["direction"],
        )?;
        relayed.with_label_values(&["to_peer"]).inc_by(t.to_peer_bytes.load(Relaxed));
        relayed.with_label_values(&["to_client"]).inc_by(t.to_client_bytes.load(Relaxed));
        r.register(Box::new(relayed))?;
        counter(
            &r,
            "sluice_turn_auth_failures_total",
            "TURN requests with bad credentials",
            t.auth_failures.load(Relaxed),
        )?;
        counter(&r, "sluice_turn_dropped_total", "TURN datagrams dropped", t.dropped.load(Relaxed))?;
    }

    sluice_actors::metrics::metrics().register(&r)?;
    let (cpu, rss) = process_stats();
    let cpu_c =
        prometheus::Counter::new("process_cpu_seconds_total", "CPU time of the process (user + system)")?;
    cpu_c.inc_by(cpu);
    r.register(Box::new(cpu_c))?;
    gauge(&r, "process_resident_memory_bytes", "Resident memory of the process", rss)?;
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    gauge(&r, "process_open_fds", "Open file descriptors of the process", fds as i64)?;
    Ok(r)
}

/// `GET /metrics`.
pub async fn metrics(
    core: web::Data<Arc<Core>>,
    turn: web::Data<TurnRest>,
    names: web::Data<StreamNames>,
) -> HttpResponse {
    let mut out = Vec::new();
    let res = collect(&core, &turn, **names).and_then(|r| TextEncoder::new().encode(&r.gather(), &mut out));
    match res {
        Ok(()) => HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out),
        Err(e) => {
            tracing::warn!(error = %e, "metrics could not be collected");
            HttpResponse::InternalServerError().body(format!("metrics: {e}"))
        }
    }
}
