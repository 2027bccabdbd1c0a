//! The front's access gates ([`sluice_actors::auth`]): the management REST API (API keys, CIDR
//! allow-list, tokens with the `api` grant; by default loopback clients only), TURN credentials,
//! and record downloads. A refusal is 401 (no credential) or 403 (a credential that does not
//! do), with `{"error": "..."}` saying what to configure or send.
//!
//! Credentials: `Authorization: Bearer <key or token>`, `X-Api-Key: <key>`, or `?token=` (for
//! plain links such as a record's download). The client address is the TCP peer's: headers
//! such as X-Forwarded-For are not trusted.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use sluice_actors::auth::{Action, ApiRefusal};
use sluice_actors::Core;

/// Paths of the REST port anyone may call: health checks, and WHIP/WHEP (which check stream
/// tokens themselves, as WebSocket sessions do). TURN credentials have a gate of their own.
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/rest-api/health") || crate::whip::is_whip_path(path)
}

/// The credential a request carries, if any.
pub fn credential(req: &ServiceRequest) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(t.trim().to_string());
        }
    }
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
}

fn peer(req: &ServiceRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// The refusal as the front answers every error ([`crate::rest::ApiError`]).
fn refusal(e: ApiRefusal) -> HttpResponse {
    actix_web::ResponseError::error_response(&crate::rest::ApiError::from(e))
}

fn core_of(req: &ServiceRequest) -> Option<Arc<Core>> {
    req.app_data::<web::Data<Arc<Core>>>().map(|d| d.get_ref().clone())
}

/// The REST port's gate.
pub async fn rest_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let path = req.path().to_string();
    let decision = match core_of(&req) {
        _ if req.method() == Method::OPTIONS || is_open(&path) => Ok(()),
        None => Ok(()),
        Some(core) => {
            let cred = credential(&req);
            if path.starts_with("/rest-api/turn/credentials") {
                core.auth.turn_credentials_access(cred.as_deref())
            } else if path == "/metrics" || path == "/" {
                // `/metrics` and the WCS console's `/?action=stat`: figures, no control.
                core.auth.api_access(peer(&req), cred.as_deref(), Action::Metrics)
            } else {
                core.auth.api_access(peer(&req), cred.as_deref(), Action::Api)
            }
        }
    };
    match decision {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(e) => {
            tracing::info!(peer = ?peer(&req), %path, reason = e.message(), "REST request refused");
            Ok(req.into_response(refusal(e)).map_into_right_body())
        }
    }
}

/// The gate of `/client/records/` on the web ports.
pub async fn records_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let decision = match core_of(&req) {
        Some(core) if req.path().starts_with("/client/records") => {
            core.auth.records_access(peer(&req), credential(&req).as_deref())
        }
        _ => Ok(()),
    };
    match decision {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(e) => Ok(req.into_response(refusal(e)).map_into_right_body()),
    }
}
