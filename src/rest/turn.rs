//! The embedded TURN server's methods, under `/rest-api/turn`:
//!
//! - `/credentials[?user=NAME]` (GET or POST): 200 `{urls, username, credential, ttl,
//!   iceServers}`, time-limited credentials from the TURN secret (TURN REST API scheme), ready
//!   for `RTCPeerConnection`'s `iceServers`; 404 when TURN is off. Reachable from any address
//!   (the Firewall Traversal demo page fetches it from the visitor's browser), so it is
//!   rate-limited per client address: [`CREDENTIAL_BURST`](sluice_actors::turn_core::CREDENTIAL_BURST)
//!   at once, then `--turn-credential-rate` a minute
//!   ([`DEFAULT_CREDENTIAL_RATE`](sluice_actors::turn_core::DEFAULT_CREDENTIAL_RATE)); beyond that, 429 with `{"error": ...}` and a
//!   `Retry-After` header (seconds). The client address is the TCP peer's (`X-Forwarded-For` is
//!   not trusted: behind a reverse proxy every client shares the proxy's allowance).
//! - `/stats` (GET): allocation, rejection and relay counters.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use sluice_actors::turn::{TurnHandle, TurnStats};
use sluice_actors::turn_core::{CredentialIssuer, CredentialRateLimiter};

use super::{ApiError, ApiResult};

/// What the REST handlers need of the TURN server (None: TURN is off).
pub struct TurnRest(Option<(Arc<CredentialIssuer>, Arc<TurnStats>, Mutex<CredentialRateLimiter>)>);

impl TurnRest {
    /// The TURN server's counters (None: TURN is off).
    pub fn stats(&self) -> Option<&TurnStats> {
        self.0.as_ref().map(|(_, s, _)| s.as_ref())
    }

    pub fn new(turn: Option<&TurnHandle>) -> Self {
        TurnRest(turn.map(|t| {
            let limiter = CredentialRateLimiter::new(t.issuer.rate_per_minute);
            (t.issuer.clone(), t.stats.clone(), Mutex::new(limiter))
        }))
    }
}

#[derive(Deserialize)]
struct CredentialsQuery {
    user: Option<String>,
}

async fn credentials(
    turn: web::Data<TurnRest>,
    req: HttpRequest,
    query: web::Query<CredentialsQuery>,
) -> ApiResult {
    let (issuer, _, limiter) = turn.0.as_ref().ok_or(ApiError::TurnDisabled)?;
    if let Some(client) = req.peer_addr().map(|a| a.ip()) {
        let verdict = limiter.lock().unwrap_or_else(|p| p.into_inner()).check(client, Instant::now());
        if let Err(limited) = verdict {
            let secs = limited.retry_after.as_secs();
            if limited.first {
                info!(%client, retry_after = secs, "TURN credentials refused: rate limit");
            }
            return Err(ApiError::TooManyCredentialRequests {
                per_minute: issuer.rate_per_minute,
                retry_after_secs: secs,
            });
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let c = issuer.issue(query.user.as_deref().unwrap_or(""), now);
    let urls = issuer.urls();
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({
        "urls": urls,
        "username": c.username,
        "credential": c.credential,
        "ttl": c.ttl,
        "iceServers": [{ "urls": urls, "username": c.username, "credential": c.credential }],
    })))
}

async fn stats(turn: web::Data<TurnRest>) -> ApiResult {
    let (_, stats, _) = turn.0.as_ref().ok_or(ApiError::TurnDisabled)?;
    Ok(HttpResponse::Ok().json(stats.to_json()))
}

/// Registered before the `/rest-api` scope (a more specific one).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/rest-api/turn")
            .route("/credentials", web::get().to(credentials))
            .route("/credentials", web::post().to(credentials))
            .route("/stats", web::get().to(stats)),
    );
}
