//! `/rtsp/startup`, `/rtsp/find`, `/rtsp/find_all`, `/rtsp/terminate`: RTSP pulls started over
//! REST, as the WCS console and scripts do (`{"uri": "rtsp://camera/stream"}`).
//!
//! A pull started here is the same pull a viewer's `playStream` of that URL starts (and joins
//! if it runs already), under the same host policy (`--rtsp-allow`) and the same WCS errors;
//! the difference is that it stays up with no viewer until `/rtsp/terminate` or the camera ends
//! it. `startup` answers once the camera plays (200 with the pull object) or failed (the WCS
//! reason: 400 "Rtsp has wrong format", 403 "Restricted access", 404 "Rtsp stream not found",
//! 502 "Failed to connect to rtsp stream", 415 "No common codecs", 409 name in use).
//!
//! A pull object: `{"uri", "localStreamName", "localMediaSessionId", "status", "hasAudio",
//! "hasVideo"}` where `uri` is the URL without its credentials (the stream's name, what viewers
//! play) and `status` is "PUBLISHING" once the camera plays, "PENDING" while it connects.
//! WCS does not document this object; these names follow its `/vod/find` and stream objects.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use sluice_actors::protocol::info;
use sluice_actors::registry::Filter;
use sluice_actors::Core;

use super::{method, ApiError, ApiResult, Body};

#[derive(Deserialize)]
struct UriBody {
    uri: Option<String>,
    status: Option<String>,
}

/// The pull object of a stream name (see the module docs).
fn pull_object(core: &Core, name: &str, playing: bool) -> Value {
    let stream = core
        .registry
        .find(&Filter { name: Some(name.to_string()), published: Some(true), ..Filter::default() })
        .into_iter()
        .next();
    json!({
        "uri": name,
        "localStreamName": name,
        "localMediaSessionId": stream.as_ref().map(|s| s.media_session_id.clone()),
        "status": if playing { "PUBLISHING" } else { "PENDING" },
        "hasAudio": stream.as_ref().map(|s| s.has_audio),
        "hasVideo": stream.as_ref().map(|s| s.has_video),
    })
}

/// The stream name of a URL as a pull knows it: without credentials.
fn stream_name(core: &Core, uri: &str) -> Result<String, ApiError> {
    core.rtsp
        .check(uri)
        .map(|u| u.name().to_string())
        .map_err(|source| ApiError::Rtsp { uri: sluice_actors::rtsp::redact(uri), source })
}

async fn startup(core: web::Data<Arc<Core>>, Body(b): Body<UriBody>) -> ApiResult {
    let uri = b.uri.filter(|u| !u.is_empty()).ok_or(ApiError::Required("uri"))?;
    let url = core
        .rtsp
        .check(&uri)
        .map_err(|source| ApiError::Rtsp { uri: sluice_actors::rtsp::redact(&uri), source })?;
    let name = url.name().to_string();
    core.rtsp.startup(url).await.map_err(|source| ApiError::Rtsp { uri: name.clone(), source })?;
    Ok(HttpResponse::Ok().json(pull_object(&core, &name, true)))
}

fn listed(core: &Core, uri: Option<&str>, status: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let name = uri.map(|u| stream_name(core, u)).transpose()?;
    Ok(core
        .rtsp
        .list()
        .into_iter()
        .filter(|(n, _)| name.as_deref().is_none_or(|want| want == n))
        .map(|(n, playing)| pull_object(core, &n, playing))
        .filter(|o| status.is_none_or(|s| o["status"] == s))
        .collect())
}

async fn find(core: web::Data<Arc<Core>>, Body(b): Body<UriBody>) -> ApiResult {
    let found = listed(&core, b.uri.as_deref(), b.status.as_deref())?;
    if found.is_empty() {
        return Err(ApiError::StreamNotFound(b.uri.unwrap_or_default()));
    }
    Ok(HttpResponse::Ok().json(found))
}

async fn find_all(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(listed(&core, None, None)?))
}

async fn terminate(core: web::Data<Arc<Core>>, Body(b): Body<UriBody>) -> ApiResult {
    let uri = b.uri.filter(|u| !u.is_empty()).ok_or(ApiError::NoSelector("uri"))?;
    let name = stream_name(&core, &uri)?;
    let filter = Filter { name: Some(name.clone()), published: Some(true), ..Filter::default() };
    match core.registry.terminate(&filter, info::STOPPED_BY_REST_TERMINATE) {
        0 => Err(ApiError::StreamNotFound(name)),
        _ => Ok(HttpResponse::Ok().finish()),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/rtsp/startup", startup))
        .service(method("/rtsp/find", find))
        .service(method("/rtsp/find_all", find_all))
        .service(method("/rtsp/terminate", terminate));
}
