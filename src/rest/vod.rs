//! `/vod/startup`, `/vod/find`, `/vod/find_all`, `/vod/terminate`: VOD sources, read from and
//! stopped through the [`VodCatalog`](sluice_actors::vod::VodCatalog), opened with
//! [`vod::open`].
//!
//! Bodies: `{"uri": "vod-live://a.mp4", "localStreamName": "a", "loop": false}`; `find` and
//! `terminate` select by `localStreamName` and/or `uri`. `find` answers 200 with
//! `[{localMediaSessionId, localStreamName, uri, status, hasAudio, hasVideo, record, loop}]` or
//! 404; `find_all` 200 with an array, `[]` when none; `terminate` 200 when it stopped something,
//! 404 otherwise, 400 without a selector.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use sluice_actors::protocol::info;
use sluice_actors::vod::{self, VodFilter, VodUri};
use sluice_actors::Core;

use super::{method, ApiError, ApiResult, Body};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VodBody {
    uri: Option<String>,
    local_stream_name: Option<String>,
    #[serde(rename = "loop")]
    looping: Option<bool>,
}

impl VodBody {
    fn filter(self) -> VodFilter {
        VodFilter { local_stream_name: self.local_stream_name, uri: self.uri }
    }
}

/// `/vod/startup`: start a shared VOD stream now, under `localStreamName` (default: the uri).
/// 200, 404 file not found, 409 name in use, 500 unusable file.
async fn startup(core: web::Data<Arc<Core>>, Body(b): Body<VodBody>) -> ApiResult {
    let mut uri = b.uri.as_deref().and_then(VodUri::parse).ok_or(ApiError::BadVodUri(b.uri.clone()))?;
    uri.shared = true; // startup only makes shared streams, as WCS
    let name = b.local_stream_name.filter(|n| !n.is_empty()).unwrap_or_else(|| uri.as_name());
    if core.registry.name_published(&name) {
        return Err(ApiError::NameInUse(name));
    }
    let path = vod::resolve(&core.media_dir, &uri.path).map_err(|why| {
        tracing::warn!(uri = %uri.as_name(), %why, "VOD file refused");
        ApiError::FileNotFound(uri.as_name())
    })?;
    let open =
        vod::OpenVod { uri, path, name: name.clone(), looping: b.looping.unwrap_or(false), start_now: true };
    vod::open(open, &core.vod_arbiter, core.registry.clone(), core.vod.clone())
        .await
        .map_err(|_| ApiError::Unavailable("VOD"))?
        .map_err(|e| ApiError::vod(name, e))?;
    Ok(HttpResponse::Ok().finish())
}

async fn find(core: web::Data<Arc<Core>>, Body(b): Body<VodBody>) -> ApiResult {
    let filter = b.filter();
    let found = core.vod.find(&filter);
    if found.is_empty() {
        return Err(ApiError::StreamNotFound(format!("{filter:?}")));
    }
    Ok(HttpResponse::Ok().json(found))
}

async fn find_all(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(core.vod.find(&VodFilter::default())))
}

async fn terminate(core: web::Data<Arc<Core>>, Body(b): Body<VodBody>) -> ApiResult {
    let filter = b.filter();
    if filter.is_empty() {
        return Err(ApiError::Required("localStreamName or uri"));
    }
    match core.vod.terminate(&filter, info::STOPPED_BY_REST_TERMINATE) {
        0 => Err(ApiError::StreamNotFound(format!("{filter:?}"))),
        _ => Ok(HttpResponse::Ok().finish()),
    }
}

/// `/vod/cache`: the conversions of files that need re-encoding (B-frames, rotation), with
/// their progress: `[{"file", "state": "converting"|"ready"|"failed", "progress", "cached"?,
/// "error"?}]` ([`sluice_actors::vod_cache`]).
async fn cache(core: web::Data<Arc<Core>>) -> ApiResult {
    Ok(HttpResponse::Ok().json(core.vod.cache().map(|c| c.list()).unwrap_or_default()))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(method("/vod/cache", cache))
        .service(method("/vod/startup", startup))
        .service(method("/vod/find", find))
        .service(method("/vod/find_all", find_all))
        .service(method("/vod/terminate", terminate));
}
