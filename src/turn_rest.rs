//! REST endpoints of the embedded TURN server, under `/rest-api/turn`:
//!
//! - `/credentials[?user=NAME]` (GET or POST): 200 `{urls, username, credential, ttl,
//!   iceServers}`, time-limited credentials from the TURN secret (TURN REST API scheme), ready
//!   for `RTCPeerConnection`'s `iceServers`; 404 when TURN is off. Anyone who can reach the REST
//!   port can take credentials, as anyone can use the WCS REST API itself: keep the REST port
//!   behind your application where that matters.
//! - `/stats` (GET): allocation, rejection and relay counters.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use sluice_actors::turn::{TurnHandle, TurnStats};
use sluice_actors::turn_core::CredentialIssuer;

/// What the REST handlers need of the TURN server (None: TURN is off).
pub struct TurnRest(Option<(Arc<CredentialIssuer>, Arc<TurnStats>)>);

impl TurnRest {
    pub fn new(turn: Option<&TurnHandle>) -> Self {
        TurnRest(turn.map(|t| (t.issuer.clone(), t.stats.clone())))
    }
}

fn disabled() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "TURN is disabled on this server" }))
}

#[derive(Deserialize)]
struct CredentialsQuery {
    user: Option<String>,
}

async fn credentials(turn: web::Data<TurnRest>, query: web::Query<CredentialsQuery>) -> HttpResponse {
    let Some((issuer, _)) = &turn.0 else { return disabled() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let c = issuer.issue(query.user.as_deref().unwrap_or(""), now);
    let urls = issuer.urls();
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({
        "urls": urls,
        "username": c.username,
        "credential": c.credential,
        "ttl": c.ttl,
        "iceServers": [{ "urls": urls, "username": c.username, "credential": c.credential }],
    }))
}

async fn stats(turn: web::Data<TurnRest>) -> HttpResponse {
    match &turn.0 {
        Some((_, stats)) => HttpResponse::Ok().json(stats.to_json()),
        None => disabled(),
    }
}

/// Registered before the main REST routes (a more specific scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/rest-api/turn")
            .route("/credentials", web::get().to(credentials))
            .route("/credentials", web::post().to(credentials))
            .route("/stats", web::get().to(stats)),
    );
}
