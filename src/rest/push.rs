//! RTMP re-publishing, as WCS has it: `/push/startup`, `/push/find`, `/push/find_all`,
//! `/push/terminate`, through [`Pushes`](sluice_actors::push::pusher::Pushes).
//!
//! - `startup` `{"streamName", "rtmpUrl", "rtmpTransponderFullUrl"?, "options"?}`: pushes the
//!   published stream `streamName` to `rtmpUrl` as `rtmp_<streamName>` (with
//!   `rtmpTransponderFullUrl: true`, the URL's last path segment is the stream key). 200 with the
//!   push as `find_all` lists it; 400 for a missing or bad `rtmpUrl`, a host that does not
//!   resolve, a VP8 stream; 403 for a host `--rtmp-push-allow` refuses; 404 when no stream of
//!   that name is published; 409 when that stream already goes to that URL.
//! - `find_all`: 200 with `[{"mediaSessionId", "streamName", "rtmpUrl", "width", "height",
//!   "muted", "soundEnabled", "options", "status", "info", "sourceStreamName",
//!   "sourceMediaSessionId", "attempts", "startTime"}]`; `[]` when none (WCS answers 404 then;
//!   an empty list is what a client iterating it expects). `streamName` is the name on the RTMP
//!   server; `status` is `PENDING` (connecting), `PROCESSED_LOCAL` (publishing) or `FAILED`
//!   (retrying; `info` says why).
//! - `find` `{"streamName"?, "rtmpUrl"?, "mediaSessionId"?}`: the pushes matching every field
//!   given (`streamName` matches the pushed stream's name or the RTMP name); 404 when none.
//! - `terminate` `{"mediaSessionId"}`: ends that push (the stream goes on). 404 if there is none.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use sluice_actors::push::pusher::{PushError, PushUrl};
use sluice_actors::Core;

use super::{method, ApiError, ApiResult, Body};

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct StartupBody {
    stream_name: Option<String>,
    rtmp_url: Option<String>,
    #[serde(default)]
    rtmp_transponder_full_url: bool,
    #[serde(default)]
    #[allow(dead_code)]
    options: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct FindBody {
    stream_name: Option<String>,
    rtmp_url: Option<String>,
    media_session_id: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct TerminateBody {
    media_session_id: Option<String>,
}

/// The front's error for a push that did not start or stop.
fn api_error(e: PushError) -> ApiError {
    match e {
        PushError::StreamNotFound(name) => ApiError::StreamNotFound(name),
        PushError::NotFound(id) => ApiError::StreamNotFound(id),
        PushError::Restricted(_) => ApiError::Forbidden(e.to_string()),
        PushError::Exists { .. } => ApiError::NameInUse(e.to_string()),
        PushError::BadUrl { .. } | PushError::Resolve { .. } => {
            ApiError::InvalidValue { field: "rtmpUrl", value: e.to_string() }
        }
        PushError::Vp8(_) | PushError::NoMedia(_) => {
            ApiError::InvalidValue { field: "streamName", value: e.to_string() }
        }
    }
}

async fn startup(core: web::Data<Arc<Core>>, Body(b): Body<StartupBody>) -> ApiResult {
    let name = b.stream_name.filter(|n| !n.is_empty()).ok_or(ApiError::Required("streamName"))?;
    let url = b.rtmp_url.filter(|u| !u.trim().is_empty()).ok_or(ApiError::Required("rtmpUrl"))?;
    let url = PushUrl::parse(&url, &name, b.rtmp_transponder_full_url).map_err(api_error)?;
    let src = core.pushes.source(&name).map_err(api_error)?;
    let info = core.pushes.start(src, url, None).await.map_err(api_error)?;
    Ok(HttpResponse::Ok().json(info))
}

async fn find_all(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(core.pushes.list()))
}

async fn find(core: web::Data<Arc<Core>>, Body(b): Body<FindBody>) -> ApiResult {
    let found: Vec<_> = core
        .pushes
        .list()
        .into_iter()
        .filter(|p| {
            b.stream_name.as_ref().is_none_or(|n| *n == p.source_stream_name || *n == p.stream_name)
                && b.rtmp_url.as_ref().is_none_or(|u| *u == p.rtmp_url)
                && b.media_session_id.as_ref().is_none_or(|id| *id == p.media_session_id)
        })
        .collect();
    if found.is_empty() {
        return Err(ApiError::StreamNotFound(format!("{b:?}")));
    }
    Ok(HttpResponse::Ok().json(found))
}

async fn terminate(core: web::Data<Arc<Core>>, Body(b): Body<TerminateBody>) -> ApiResult {
    let id = b.media_session_id.filter(|i| !i.is_empty()).ok_or(ApiError::NoSelector("mediaSessionId"))?;
    core.pushes.stop(&id).map_err(api_error)?;
    Ok(HttpResponse::Ok().finish())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/push/startup", startup))
        .service(method("/push/find", find))
        .service(method("/push/find_all", find_all))
        .service(method("/push/terminate", terminate));
}
