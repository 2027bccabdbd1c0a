//! The WCS REST API on its own port, under `/rest-api`: `/stream/find`, `/stream/find_all`,
//! `/stream/terminate`, plus `/health` (also on the web port).
//!
//! Shapes as WCS: POST with a JSON body (the SDK's REST client sends GET without a body when it
//! has nothing to send, so every endpoint also takes GET). `find` answers 200 with an array of
//! stream objects or 404 when nothing matches; `find_all` answers 200 with an array (empty when
//! nothing is published: WCS leaves this open, an empty array is what scripts expect);
//! `terminate` answers 200 when it stopped something, 404 otherwise. A body that is not JSON or
//! has fields of the wrong type gets 400 with `{"error": ...}` (WCS documents 500 for "bad
//! parameters"; both are non-200, which is all the SDK checks). CORS is open, as WCS's default.
//!
//! Every method answers GET and POST only (405 otherwise); `OPTIONS` on any path is a CORS
//! preflight answered 204 without running anything. A destructive call with no selector
//! (`terminate` with an empty body) is a 400, never "all streams".

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sluice_actors::messages::Stop;
use sluice_actors::picture::Format;
use sluice_actors::protocol::{info, StreamStatus};
use sluice_actors::registry::Filter;
use sluice_actors::snapshot::{SnapshotError, TakeSnapshot};
use sluice_actors::vod::{self, VodError, VodUri};
use sluice_actors::Core;

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct FilterBody {
    name: Option<String>,
    media_session_id: Option<String>,
    media_session_ids: Option<Vec<String>>,
    published: Option<BoolLike>,
    status: Option<String>,
    #[allow(dead_code)]
    display: Option<serde_json::Value>,
}

/// WCS clients send `published` as a boolean or as "true"/"false".
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum BoolLike {
    Bool(bool),
    Str(String),
}

/// The 400 of a destructive call with nothing to select what it acts on.
const NO_SELECTOR: &str = "a selector is required: name, mediaSessionId, published or status";

fn bad_request(msg: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": msg }))
}

fn parse_filter(body: &[u8]) -> Result<Filter, HttpResponse> {
    let text = std::str::from_utf8(body).map_err(|_| bad_request("body is not UTF-8".into()))?;
    let b: FilterBody = if text.trim().is_empty() {
        FilterBody::default()
    } else {
        serde_json::from_str(text).map_err(|e| bad_request(format!("invalid JSON body: {e}")))?
    };
    let published = match b.published {
        None => None,
        Some(BoolLike::Bool(v)) => Some(v),
        Some(BoolLike::Str(s)) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => return Err(bad_request(format!("invalid published: {s}"))),
        },
    };
    let status = match b.status {
        None => None,
        Some(s) => Some(StreamStatus::parse(&s).ok_or_else(|| bad_request(format!("invalid status: {s}")))?),
    };
    let mut ids = b.media_session_ids;
    if let Some(id) = b.media_session_id {
        ids.get_or_insert_with(Vec::new).push(id);
    }
    Ok(Filter { name: b.name, media_session_ids: ids, published, status })
}

async fn find(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    let filter = match parse_filter(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let found = core.registry.find(&filter);
    if found.is_empty() {
        return HttpResponse::NotFound().json(json!({ "error": info::STREAM_NOT_FOUND }));
    }
    HttpResponse::Ok().json(found)
}

async fn find_all(core: web::Data<Arc<Core>>) -> HttpResponse {
    HttpResponse::Ok().json(core.registry.find(&Filter::default()))
}

async fn terminate(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    let filter = match parse_filter(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    // An empty body (a stray POST, a body lost on the way) must never mean "every stream".
    if filter.name.is_none()
        && filter.media_session_ids.is_none()
        && filter.published.is_none()
        && filter.status.is_none()
    {
        return bad_request(NO_SELECTOR.into());
    }
    match core.registry.terminate(&filter, info::STOPPED_BY_REST_TERMINATE) {
        0 => HttpResponse::NotFound().json(json!({ "error": info::STREAM_NOT_FOUND })),
        _ => HttpResponse::Ok().finish(),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SnapshotBody {
    stream_name: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct SnapshotQuery {
    format: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
}

/// `/stream/snapshot {"streamName": "..."}` (or `"name"`): 200 `{"data": "<base64 PNG>"}`,
/// 404 unknown stream, 500 nothing decodable within 3 s or no video, 400 bad request.
/// `?format=jpeg` and `?width=`/`?height=` (scale, aspect kept when one is 0) are extras.
async fn snapshot(
    core: web::Data<Arc<Core>>,
    query: web::Query<SnapshotQuery>,
    body: web::Bytes,
) -> HttpResponse {
    let b: SnapshotBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => SnapshotBody::default(),
        Err(e) => return bad_request(format!("invalid JSON body: {e}")),
    };
    let Some(stream) = b.stream_name.or(b.name).filter(|n| !n.is_empty()) else {
        return bad_request("streamName is required".into());
    };
    let format = match query.format.as_deref() {
        None => Format::Png,
        Some(f) => match Format::parse(f) {
            Some(f) => f,
            None => return bad_request(format!("unsupported format: {f} (png, jpeg)")),
        },
    };
    let req =
        TakeSnapshot { stream, format, width: query.width.unwrap_or(0), height: query.height.unwrap_or(0) };
    match core.snapshots.send(req).await {
        Ok(Ok(img)) => HttpResponse::Ok().json(json!({ "data": BASE64.encode(img) })),
        Ok(Err(SnapshotError::NotFound)) => {
            HttpResponse::NotFound().json(json!({ "error": info::STREAM_NOT_FOUND }))
        }
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({ "error": e.to_string() })),
        Err(_) => {
            HttpResponse::InternalServerError().json(json!({ "error": "snapshot service unavailable" }))
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VodBody {
    uri: Option<String>,
    local_stream_name: Option<String>,
    #[serde(rename = "loop")]
    looping: Option<bool>,
}

fn vod_body(body: &[u8]) -> Result<VodBody, HttpResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(VodBody::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// `/vod/startup {"uri": "vod-live://a.mp4", "localStreamName": "a", "loop": false}`: start a
/// shared VOD stream now, under `localStreamName` (default: the uri). 200, 404 file not found,
/// 409 name in use, 500 unusable file.
async fn vod_startup(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    let b = match vod_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(mut uri) = b.uri.as_deref().and_then(VodUri::parse) else {
        return bad_request("uri must be vod-live://<file> or vod://<file>".into());
    };
    uri.shared = true; // startup only makes shared streams, as WCS
    let name = b.local_stream_name.filter(|n| !n.is_empty()).unwrap_or_else(|| uri.as_name());
    if core.registry.name_published(&name) {
        return HttpResponse::Conflict().json(json!({ "error": info::NAME_IN_USE }));
    }
    let path = match vod::resolve(&core.media_dir, &uri.path) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(uri = %uri.as_name(), %why, "VOD file refused");
            return HttpResponse::NotFound().json(json!({ "error": vod::FILE_NOT_FOUND }));
        }
    };
    let open = vod::OpenVod { uri, path, name, looping: b.looping.unwrap_or(false), start_now: true };
    match vod::open(open, &core.vod_arbiter, core.registry.clone(), core.vod.clone()).await {
        Ok(Ok(_)) => HttpResponse::Ok().finish(),
        Ok(Err(VodError::NameInUse)) => HttpResponse::Conflict().json(json!({ "error": info::NAME_IN_USE })),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({ "error": e.to_string() })),
        Err(_) => HttpResponse::InternalServerError().json(json!({ "error": "VOD service unavailable" })),
    }
}

fn vod_matching(core: &Core, b: &VodBody) -> Vec<vod::VodEntry> {
    let mut v: Vec<vod::VodEntry> = core
        .vod
        .iter()
        .filter(|e| b.local_stream_name.as_ref().is_none_or(|n| *n == e.local_stream_name))
        .filter(|e| b.uri.as_ref().is_none_or(|u| *u == e.uri))
        .map(|e| e.clone())
        .collect();
    v.sort_by(|a, b| a.local_media_session_id.cmp(&b.local_media_session_id));
    v
}

async fn vod_find(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    let b = match vod_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let found = vod_matching(&core, &b);
    if found.is_empty() {
        return HttpResponse::NotFound().json(json!({ "error": info::STREAM_NOT_FOUND }));
    }
    HttpResponse::Ok().json(found)
}

async fn vod_find_all(core: web::Data<Arc<Core>>) -> HttpResponse {
    HttpResponse::Ok().json(vod_matching(&core, &VodBody::default()))
}

async fn vod_terminate(core: web::Data<Arc<Core>>, body: web::Bytes) -> HttpResponse {
    let b = match vod_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.local_stream_name.is_none() && b.uri.is_none() {
        return bad_request("localStreamName or uri is required".into());
    }
    let found = vod_matching(&core, &b);
    for e in &found {
        if let Some(c) = &e.control {
            c.do_send(Stop { reason: info::STOPPED_BY_REST_TERMINATE });
        }
    }
    match found.len() {
        0 => HttpResponse::NotFound().json(json!({ "error": info::STREAM_NOT_FOUND })),
        _ => HttpResponse::Ok().finish(),
    }
}

/// How long `/health` waits for an arbiter to run a task before calling it stuck.
const HEALTH_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// True if the arbiter's thread runs a task within [`HEALTH_PROBE_TIMEOUT`]: it is alive and its
/// event loop is not blocked.
async fn arbiter_answers(arbiter: &actix::ArbiterHandle) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !arbiter.spawn(async move {
        let _ = tx.send(());
    }) {
        return false;
    }
    matches!(tokio::time::timeout(HEALTH_PROBE_TIMEOUT, rx).await, Ok(Ok(())))
}

/// `/health` (REST and web ports): 200 `{"status": "ok", ...}` when the media socket is bound
/// and the media, recording and VOD arbiters and the snapshot service answer; 503 with
/// `"status": "unavailable"` and the failing `checks` otherwise, or `"status": "stopping"` once
/// a graceful shutdown has begun (load balancers stop sending clients).
pub async fn health(core: web::Data<Arc<Core>>) -> HttpResponse {
    // Every media thread: the viewers' arbiters include the media arbiter.
    let media_threads = futures_util::future::join_all(core.viewer_arbiters.iter().map(arbiter_answers));
    let (media, recording, vod) = tokio::join!(
        async { media_threads.await.into_iter().all(|ok| ok) },
        arbiter_answers(core.recordings.arbiter()),
        arbiter_answers(&core.vod_arbiter),
    );
    let snapshots = core.snapshots.connected();
    let stopping = core.shutdown.is_stopping();
    let status = match (stopping, media && recording && vod && snapshots) {
        (true, _) => "stopping",
        (false, true) => "ok",
        (false, false) => "unavailable",
    };
    let (published, playing) = core.registry.counts();
    let s = &core.socket.stats;
    use std::sync::atomic::Ordering::Relaxed;
    let code = if status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    HttpResponse::build(code).json(json!({
        "status": status,
        "version": sluice_actors::VERSION,
        "checks": { "mediaArbiter": media, "recordingArbiter": recording, "vodArbiter": vod,
                    "snapshots": snapshots },
        "published": published,
        "playing": playing,
        "recording": core.recordings.list().len(),
        "peers": core.socket.peers(),
        "mediaPort": core.socket.local_addr().port(),
        "packets": { "received": s.received.load(Relaxed), "sent": s.sent.load(Relaxed),
                     "unrouted": s.unrouted.load(Relaxed), "sendDropped": s.send_dropped.load(Relaxed) },
        "refused": {
            "token": core.auth.stats.token_refusals.load(Relaxed),
            "hook": core.auth.stats.hook_refusals.load(Relaxed),
            "api": core.auth.stats.api_refusals.load(Relaxed),
            "sessions": core.limits.stats.sessions.load(Relaxed),
            "streams": core.limits.stats.streams.load(Relaxed),
            "viewers": core.limits.stats.viewers.load(Relaxed),
            "messages": core.limits.stats.messages.load(Relaxed),
        },
    }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::build(StatusCode::NOT_FOUND).json(json!({ "error": "no such REST method" }))
}

/// A CORS preflight (`OPTIONS` on any path): 204 with the CORS headers the front adds to every
/// answer. It never reaches a handler: a preflight of `terminate` ends nothing.
async fn preflight() -> HttpResponse {
    HttpResponse::NoContent().insert_header(("Access-Control-Max-Age", "600")).finish()
}

/// A REST method: answers GET and POST (the SDK's REST client sends GET when it has no body),
/// 405 to any other method.
pub fn method<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path).route(web::get().to(handler.clone())).route(web::post().to(handler))
}

/// Registered first on the REST port, so that every OPTIONS request is a preflight whatever
/// its path.
pub fn preflights(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/{any:.*}").guard(actix_web::guard::Options()).to(preflight));
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/rest-api")
            .service(method("/stream/find", find))
            .service(method("/stream/find_all", find_all))
            .service(method("/stream/terminate", terminate))
            .service(method("/stream/snapshot", snapshot))
            .service(method("/vod/startup", vod_startup))
            .service(method("/vod/find", vod_find))
            .service(method("/vod/find_all", vod_find_all))
            .service(method("/vod/terminate", vod_terminate))
            .route("/health", web::get().to(health))
            .configure(crate::rest_recording::routes),
    )
    .route("/health", web::get().to(health))
    .default_service(web::to(not_found));
}
