//! The WCS REST API on its own port, under `/rest-api`, one file per resource:
//! [`streams`] (`/stream/find`, `find_all`, `terminate`, `snapshot`), [`recording`]
//! (`/stream/startRecording`, `/recorder/...`), [`vod`] (`/vod/...`), [`rtsp`] (`/rtsp/...`), [`turn`]
//! (`/turn/credentials`, `/turn/stats`); plus `/health` here (also on the web port) and the
//! WCS console's node statistics, `/?action=stat` ([`stat`]).
//!
//! Shapes as WCS: POST with a JSON body (the SDK's REST client sends GET without a body when it
//! has nothing to send, so every method also takes GET). Every body goes through [`Body`]: an
//! empty body is `{}` (no fields: fine where every field is optional, a 400 where one is
//! required); a body that is not JSON or has fields of the wrong type is a 400 with serde's
//! message. Every error is an [`ApiError`], answered `{"error": "..."}` with the status decided
//! in one place (`error.rs`). WCS documents 500 for "bad parameters"; we answer 400: both are
//! non-200, which is all the SDK checks. CORS is open, as WCS's default.
//!
//! Every method answers GET and POST only (405 otherwise); `OPTIONS` on any path is a CORS
//! preflight answered 204 without running anything. A destructive call with no selector
//! (`terminate` with an empty body) is a 400, never "all streams". The access gate in front of
//! all of it is `crate::gate`.

mod cluster;
mod error;
pub mod metrics;
mod pull;
mod push;
mod recording;
mod rtsp;
pub mod stat;
mod streams;
mod turn;
mod vod;

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::json;

use sluice_actors::Core;

pub use error::ApiError;
pub use turn::TurnRest;

/// What every handler returns.
type ApiResult = Result<HttpResponse, ApiError>;

/// A method's JSON body, whatever the content type. An empty or whitespace-only body is read as
/// `{}`, so a method whose fields are all optional takes it as "no fields", and one with a
/// required field answers 400 naming it.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> Body<T> {
    fn parse(bytes: &[u8]) -> Result<T, ApiError> {
        let json = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
        Ok(serde_json::from_slice(json)?)
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move { Ok(Self(Self::parse(&bytes.await?)?)) })
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
/// a graceful shutdown has begun (load balancers stop sending clients). It is a report, never
/// an error: it cannot fail.
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
        "cluster": core.cluster.as_ref().map(|c| c.health()),
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

/// `/api/find_all`: WCS's SIP agents (its console's "api" view). sluice speaks no SIP, so
/// there are none: an empty list, not an error, so the console shows an empty table.
async fn sip_agents() -> HttpResponse {
    HttpResponse::Ok().json(json!([]))
}

async fn not_found(req: HttpRequest) -> ApiResult {
    Err(ApiError::NoSuchMethod(req.path().to_string()))
}

/// A CORS preflight (`OPTIONS` on any path): 204 with the CORS headers the front adds to every
/// answer. It never reaches a handler: a preflight of `terminate` ends nothing.
async fn preflight() -> HttpResponse {
    HttpResponse::NoContent().insert_header(("Access-Control-Max-Age", "600")).finish()
}

/// A REST method: answers GET and POST (the SDK's REST client sends GET when it has no body),
/// 405 to any other method.
fn method<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path).route(web::get().to(handler.clone())).route(web::post().to(handler))
}

/// Every route of the REST port. Needs `web::Data<Arc<Core>>` and `web::Data<TurnRest>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // First, so that every OPTIONS request is a preflight whatever its path.
    cfg.service(web::resource("/{any:.*}").guard(actix_web::guard::Options()).to(preflight))
        // Before `/rest-api`: the more specific scope.
        .configure(turn::routes)
        .service(
            web::scope("/rest-api")
                .configure(streams::routes)
                .configure(vod::routes)
                .configure(recording::routes)
                .configure(push::routes)
                .configure(pull::routes)
                .configure(rtsp::routes)
                .configure(cluster::routes)
                .service(method("/api/find_all", sip_agents))
                .route("/health", web::get().to(health)),
        )
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics::metrics))
        .service(method("/", stat::root))
        .default_service(web::to(not_found));
}
