//! `/stream/find`, `/stream/find_all`, `/stream/terminate` and `/stream/snapshot`: published
//! and played streams, read from the [`Registry`](sluice_actors::registry::Registry) and stopped
//! through it.
//!
//! `find` answers 200 with an array of stream objects or 404 when nothing matches; `find_all`
//! answers 200 with an array (empty when nothing is published: WCS leaves this open, an empty
//! array is what scripts expect); `terminate` answers 200 when it stopped something, 404
//! otherwise, 400 without a selector.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use sluice_actors::picture::Format;
use sluice_actors::protocol::{info, StreamStatus};
use sluice_actors::registry::Filter;
use sluice_actors::snapshot::TakeSnapshot;
use sluice_actors::Core;

use super::{method, ApiError, ApiResult, Body};

#[derive(Deserialize, Debug)]
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

impl TryFrom<FilterBody> for Filter {
    type Error = ApiError;

    fn try_from(b: FilterBody) -> Result<Filter, ApiError> {
        let published = match b.published {
            None => None,
            Some(BoolLike::Bool(v)) => Some(v),
            Some(BoolLike::Str(s)) => match s.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => return Err(ApiError::InvalidValue { field: "published", value: s }),
            },
        };
        let status = b
            .status
            .map(|s| StreamStatus::parse(&s).ok_or(ApiError::InvalidValue { field: "status", value: s }))
            .transpose()?;
        let mut ids = b.media_session_ids;
        if let Some(id) = b.media_session_id {
            ids.get_or_insert_with(Vec::new).push(id);
        }
        Ok(Filter { name: b.name, media_session_ids: ids, published, status })
    }
}

async fn find(core: web::Data<Arc<Core>>, Body(b): Body<FilterBody>) -> ApiResult {
    let filter = Filter::try_from(b)?;
    let found = core.registry.find(&filter);
    if found.is_empty() {
        return Err(ApiError::StreamNotFound(format!("{filter:?}")));
    }
    Ok(HttpResponse::Ok().json(found))
}

async fn find_all(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(core.registry.find(&Filter::default())))
}

async fn terminate(core: web::Data<Arc<Core>>, Body(b): Body<FilterBody>) -> ApiResult {
    let filter = Filter::try_from(b)?;
    // An empty body (a stray POST, a body lost on the way) must never mean "every stream".
    if filter.name.is_none()
        && filter.media_session_ids.is_none()
        && filter.published.is_none()
        && filter.status.is_none()
    {
        return Err(ApiError::NoSelector("name, mediaSessionId, published or status"));
    }
    match core.registry.terminate(&filter, info::STOPPED_BY_REST_TERMINATE) {
        0 => Err(ApiError::StreamNotFound(format!("{filter:?}"))),
        _ => Ok(HttpResponse::Ok().finish()),
    }
}

#[derive(Deserialize)]
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
    Body(b): Body<SnapshotBody>,
) -> ApiResult {
    let stream =
        b.stream_name.or(b.name).filter(|n| !n.is_empty()).ok_or(ApiError::Required("streamName"))?;
    let format = match query.format.as_deref() {
        None => Format::Png,
        Some(f) => Format::parse(f).ok_or_else(|| ApiError::UnsupportedFormat(f.to_string()))?,
    };
    if let (Some(c), false) = (&core.cluster, core.registry.name_published(&stream)) {
        // Published on another node of the cluster: pulled here (an edge pull, dropped once
        // idle) and pictured from its GOP.
        c.edge_source(&stream).await;
    }
    let req = TakeSnapshot {
        stream: stream.clone(),
        format,
        width: query.width.unwrap_or(0),
        height: query.height.unwrap_or(0),
    };
    let started = std::time::Instant::now();
    let img = core
        .snapshots
        .send(req)
        .await
        .map_err(|_| ApiError::Unavailable("snapshot"))?
        .map_err(|e| ApiError::snapshot(stream, e))?;
    sluice_actors::metrics::metrics().snapshot_seconds.observe(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(json!({ "data": BASE64.encode(img) })))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/stream/find", find))
        .service(method("/stream/find_all", find_all))
        .service(method("/stream/terminate", terminate))
        .service(method("/stream/snapshot", snapshot));
}
