//! `/pull/pull`, `/pull/find_all`, `/pull/terminate`: streams of other servers (sluice or WCS)
//! pulled over WebRTC and republished here, as WCS's console and scripts call them
//! (`{"uri": "ws://origin:8080/", "remoteStreamName": "cam1", "localStreamName": "cam1-edge"}`).
//! See [`sluice_actors::pull`].
//!
//! `pull` answers once the stream plays here (200, the pull object) or with why not: 400 bad
//! uri, 403 a host `--pull-allow` does not allow, 409 the local name is taken, 404 the remote
//! has no such stream, 502 the remote cannot be reached or played. `localStreamName` defaults
//! to the remote name; `token` (ours) is sent to the remote as `custom.token`. A pull object:
//! `{"uri", "remoteStreamName", "localStreamName", "localMediaSessionId", "status"}` (PENDING,
//! then PUBLISHING). WCS's `/pull/push` (publishing a local stream to another server) is not
//! served.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use sluice_actors::pull::PullRequest;
use sluice_actors::Core;

use super::{method, ApiError, ApiResult, Body};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullBody {
    uri: Option<String>,
    remote_stream_name: Option<String>,
    local_stream_name: Option<String>,
    token: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

async fn pull(core: web::Data<Arc<Core>>, Body(b): Body<PullBody>) -> ApiResult {
    let uri = non_empty(b.uri).ok_or(ApiError::Required("uri"))?;
    let remote_name = non_empty(b.remote_stream_name).ok_or(ApiError::Required("remoteStreamName"))?;
    let local_name = non_empty(b.local_stream_name).unwrap_or_else(|| remote_name.clone());
    let req = PullRequest { uri, remote_name, local_name: local_name.clone(), token: b.token };
    let info = core.pulls.start(req).await.map_err(|source| ApiError::Pull { name: local_name, source })?;
    Ok(HttpResponse::Ok().json(info))
}

async fn find_all(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(core.pulls.list()))
}

async fn terminate(core: web::Data<Arc<Core>>, Body(b): Body<PullBody>) -> ApiResult {
    let local = non_empty(b.local_stream_name).ok_or(ApiError::NoSelector("localStreamName"))?;
    if core.pulls.terminate(&local, b.remote_stream_name.as_deref()) {
        Ok(HttpResponse::Ok().finish())
    } else {
        Err(ApiError::StreamNotFound(local))
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/pull/pull", pull))
        .service(method("/pull/find_all", find_all))
        .service(method("/pull/terminate", terminate));
}
