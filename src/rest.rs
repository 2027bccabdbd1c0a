//! The WCS REST API on its own port, under `/rest-api`: `/stream/find`, `/stream/find_all`,
//! `/stream/terminate`, plus `/health`.
//!
//! Shapes as WCS: POST with a JSON body (the SDK's REST client sends GET without a body when it
//! has nothing to send, so every endpoint also takes GET). `find` answers 200 with an array of
//! stream objects or 404 when nothing matches; `find_all` answers 200 with an array (empty when
//! nothing is published: WCS leaves this open, an empty array is what scripts expect);
//! `terminate` answers 200 when it stopped something, 404 otherwise. A body that is not JSON or
//! has fields of the wrong type gets 400 with `{"error": ...}` (WCS documents 500 for "bad
//! parameters"; both are non-200, which is all the SDK checks). CORS is open, as WCS's default.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use sluice_actors::protocol::{info, StreamStatus};
use sluice_actors::registry::Filter;
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
    match core.registry.terminate(&filter, info::STOPPED_BY_REST_TERMINATE) {
        0 => HttpResponse::NotFound().json(json!({ "error": info::STREAM_NOT_FOUND })),
        _ => HttpResponse::Ok().finish(),
    }
}

pub async fn health(core: web::Data<Arc<Core>>) -> HttpResponse {
    let (published, playing) = core.registry.counts();
    let s = &core.socket.stats;
    use std::sync::atomic::Ordering::Relaxed;
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": sluice_actors::VERSION,
        "published": published,
        "playing": playing,
        "peers": core.socket.peers(),
        "mediaPort": core.socket.local_addr().port(),
        "packets": { "received": s.received.load(Relaxed), "sent": s.sent.load(Relaxed),
                     "unrouted": s.unrouted.load(Relaxed), "sendDropped": s.send_dropped.load(Relaxed) },
    }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::build(StatusCode::NOT_FOUND).json(json!({ "error": "no such REST method" }))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/rest-api")
            .route("/stream/find", web::to(find))
            .route("/stream/find_all", web::to(find_all))
            .route("/stream/terminate", web::to(terminate))
            .route("/health", web::get().to(health)),
    )
    .route("/health", web::get().to(health))
    .default_service(web::to(not_found));
}
