//! `GET /?action=stat` on the REST port: the node statistics the WCS web console polls every
//! few seconds (its node turns red when they do not come), behind the same gate as `/metrics`.
//!
//! The text format is WCS's: a header line of dashes and a group name (`-----Connection-----`),
//! then `key=value` lines, group after group. The console's parser takes the first word after
//! the dashes as the group (lower-cased) and splits every other line at `=`, so the answer must
//! start with a header and carry nothing else. `&format=json` answers the same figures as one
//! JSON object of groups (`{"connection": {"connections": 3, ...}, ...}`); `&groups=a,b` keeps
//! only those groups (by their name, or by `<name>_stats` as WCS spells them in that
//! parameter); an unknown group is simply absent.
//!
//! Every figure is measured, none is a placeholder: counts come from the registry, sessions
//! and recordings tables; CPU and memory from `/proc`. Protocols sluice has no part of (RTMFP)
//! count 0, which is what they are. The same figures, with more detail, are on `/metrics`.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};

use sluice_actors::registry::Filter;
use sluice_actors::Core;

use super::metrics::{process_stats, source_kind};

/// One group of figures, in the order the text format prints them.
type Group = (&'static str, Vec<(&'static str, Value)>);

/// When the process started, for `core_uptime` (set on the first call of [`started`]).
static STARTED: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();

/// Note the start time (called at startup; the first stat call would otherwise set it).
pub fn started() -> (Instant, u64) {
    *STARTED.get_or_init(|| {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        (Instant::now(), ms)
    })
}

/// The process's CPU use in percent of one core since the previous call (since the start on
/// the first), as WCS's `system_java_cpu_usage`.
fn cpu_percent() -> f64 {
    static LAST: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
    let now = Instant::now();
    let (cpu, _) = process_stats();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let (t0, c0) = last.unwrap_or((started().0, 0.0));
    *last = Some((now, cpu));
    let wall = now.duration_since(t0).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    ((cpu - c0) / wall * 1000.0).round() / 10.0
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

fn groups(core: &Core) -> Vec<Group> {
    let all = core.registry.find(&Filter::default());
    let published =
        |kind: &str| all.iter().filter(|s| s.published && source_kind(&s.media_provider) == kind).count();
    let viewers = all.iter().filter(|s| !s.published).count();
    let rtmp_in = published("rtmp");
    let ws = core.limits.open_sessions();
    let (total, available) = memory();
    let (_, rss) = process_stats();
    let (t0, start_ms) = started();
    let n = |v: usize| Value::from(v as u64);
    vec![
        (
            "Connection",
            vec![
                ("connections", n(ws + rtmp_in)),
                ("connections_websocket", n(ws)),
                ("connections_rtmp", n(rtmp_in)),
                ("connections_rtmfp", n(0)),
                ("webrtc_peers", n(core.socket.peers())),
            ],
        ),
        (
            "Stream",
            vec![
                ("streams_webrtc_in", n(published("webrtc"))),
                ("streams_webrtc_out", n(viewers)),
                ("streams_rtmp_in", n(rtmp_in)),
                ("streams_rtmp_out", n(0)),
                ("streams_rtsp_in", n(published("rtsp"))),
                ("streams_rtsp_out", n(0)),
                ("streams_rtmfp_in", n(0)),
                ("streams_rtmfp_out", n(0)),
                ("streams_vod_in", n(published("vod"))),
                ("streams_viewers", n(viewers)),
                ("streams_recording", n(core.recordings.list().len())),
            ],
        ),
        (
            "System",
            vec![
                ("system_java_cpu_usage", Value::from(cpu_percent())),
                ("system_memory_total", Value::from(total)),
                ("system_memory_free", Value::from(available)),
                ("system_memory_process_rss", Value::from(rss.max(0) as u64)),
                ("system_cpu_count", n(std::thread::available_parallelism().map_or(1, |c| c.get()))),
            ],
        ),
        (
            "Core",
            vec![
                ("core_version", Value::from(sluice_actors::VERSION)),
                ("core_start_time", Value::from(start_ms)),
                ("core_uptime", Value::from(t0.elapsed().as_secs())),
                ("core_threads", n(threads())),
            ],
        ),
    ]
}

#[derive(serde::Deserialize)]
pub struct StatQuery {
    action: Option<String>,
    format: Option<String>,
    groups: Option<String>,
}

/// Whether `group` (e.g. "Stream") was asked for in `groups` ("stream_stats,core").
fn wanted(groups: &Option<String>, group: &str) -> bool {
    let Some(list) = groups else { return true };
    list.split(',').map(str::trim).any(|g| {
        let g = g.strip_suffix("_stats").unwrap_or(g);
        g.eq_ignore_ascii_case(group)
    })
}

/// `/` on the REST port: the stats with `action=stat`, 404 otherwise (as any unknown path).
pub async fn root(core: web::Data<Arc<Core>>, q: web::Query<StatQuery>) -> HttpResponse {
    if q.action.as_deref() != Some("stat") {
        return actix_web::ResponseError::error_response(&super::ApiError::NoSuchMethod(
            "/ (only /?action=stat is served here)".into(),
        ));
    }
    let groups: Vec<Group> = groups(&core).into_iter().filter(|(g, _)| wanted(&q.groups, g)).collect();
    if q.format.as_deref() == Some("json") {
        let obj: Map<String, Value> = groups
            .into_iter()
            .map(|(g, fields)| {
                let f: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                (g.to_lowercase(), Value::Object(f))
            })
            .collect();
        return HttpResponse::Ok().json(obj);
    }
    let mut text = String::new();
    for (g, fields) in groups {
        text.push_str(&format!("-----{g}-----\n"));
        for (k, v) in fields {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    // No trailing newline: the console's parser would read an empty last line as a field.
    text.pop();
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(text)
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn groups_by_name_or_stats_suffix() {
        assert!(wanted(&None, "Stream"));
        let g = Some("stream_stats, core".to_string());
        assert!(wanted(&g, "Stream"));
        assert!(wanted(&g, "Core"));
        assert!(!wanted(&g, "System"));
        assert!(!wanted(&Some("transcoding_stats".into()), "Connection"));
    }
}
