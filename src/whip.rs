//! WHIP (RFC 9725) and WHEP: publishing and playing with one HTTP request, as OBS 30+,
//! GStreamer's `whipclientsink`, ffmpeg's WHIP muxer and WHEP players do. Mounted on the web
//! ports (http and https) and on the REST ports:
//!
//! - `POST /whip/{name}` (and the WCS path `POST /rest-api/stream/publish/{name}`): the body is
//!   an SDP offer (`Content-Type: application/sdp`); `?record=true` records the stream.
//!   `POST /whep/{name}`: the offer of a player (recvonly), for any stream: WebRTC, RTMP,
//!   RTSP (`/whep/rtsp%3A%2F%2F...`), VOD (`/whep/vod%3A%2F%2Ffile.mp4`).
//!   201 with the SDP answer, `Location` (the session resource, `/whip/{name}/{id}`), `ETag`,
//!   `Accept-Patch`, and one `Link: <turn:...>; rel="ice-server"` per TURN URL with fresh
//!   credentials when the TURN server runs.
//! - `PATCH` of the resource, `Content-Type: application/trickle-ice-sdpfrag`: 204. The server is
//!   ICE-lite and learns the client's addresses from its checks (peer-reflexive), so trickled
//!   candidates are accepted and not needed. An ICE restart (`If-Match: *`, or a new
//!   `a=ice-ufrag`) is 405: sluice supports trickle but not restarts (RFC 9725 §4.3.1); the
//!   client starts a new session. An `If-Match` that is not the resource's `ETag` is 412.
//! - `DELETE` of the resource: 200, the stream ends (its viewers get STOPPED).
//! - `OPTIONS`: 204 with `Accept-Post: application/sdp` and the CORS preflight answer.
//!
//! Errors, with a plain-text reason: 400 a body that is no SDP offer, or an offer refused
//! (no common codecs); 401 no token where one is needed (`WWW-Authenticate: Bearer`); 403 a
//! token that does not grant it, or the application server's hook declined; 404 no such stream
//! (WHEP) or resource; 409 the name is published already (WHIP); 415 another content type;
//! 503 with `Retry-After` when a limit is hit (`--max-streams`, `--max-viewers-per-stream`,
//! `--max-sessions-per-ip`) or the server is stopping.
//!
//! Access is the stream's, never the management API's: a token (`Authorization: Bearer`, or
//! `?token=`) checked by [`Authorizer::check_token`] with `publish` / `play` (and `record` for
//! `?record=true`) of the name, then the WCS hook `publishStream` / `playStream` when hooks
//! are on, exactly as a WebSocket session's stream. CORS is open (`*`) and exposes `Location`,
//! `ETag`, `Link`, so a page on any origin can publish or play.
//!
//! The streams themselves are started by [`sluice_actors::whip`], with the WCS session's code.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use serde_json::Value;
use tracing::info;

use sluice_actors::auth::{Action, Authorizer, HookAnswer, TokenError};
use sluice_actors::error::RtspError;
use sluice_actors::start::{self, Opening, SourceError, StartError};
use sluice_actors::turn_core::CredentialIssuer;
use sluice_actors::vod::VodError;
use sluice_actors::whip::{self, Kind, Offer, WhipAnswer};
use sluice_actors::Core;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
/// What a client is told to wait before trying again after a limit or during shutdown (s).
const RETRY_AFTER_SECS: u32 = 10;
const ALLOW: &str = "OPTIONS, POST, PATCH, DELETE";
const EXPOSE: &str = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, WWW-Authenticate";

/// What the WHIP front needs besides the core: the TURN server's credential issuer, if it runs.
pub struct WhipFront {
    turn: Option<Arc<CredentialIssuer>>,
}

impl WhipFront {
    pub fn new(turn: Option<Arc<CredentialIssuer>>) -> Self {
        WhipFront { turn }
    }

    /// One `Link` value per TURN URL, with credentials minted now.
    fn ice_links(&self) -> Vec<String> {
        let Some(issuer) = &self.turn else { return Vec::new() };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let c = issuer.issue("whip", now);
        issuer
            .urls()
            .iter()
            .map(|u| {
                format!(
                    "<{u}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    c.username, c.credential
                )
            })
            .collect()
    }
}

/// Every refusal of the WHIP/WHEP front; the one place a refusal becomes a status code is the
/// [`ResponseError`] impl below.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("Content-Type must be {0}")]
    ContentType(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("Restricted access: {0}")]
    Unauthenticated(TokenError),
    #[error("Restricted access: {0}")]
    Forbidden(String),
    #[error("no such session")]
    NoSession,
    #[error("ICE restarts are not supported: start a new session")]
    IceRestart,
    #[error("If-Match does not match the session's ETag {0}")]
    Precondition(String),
    #[error("{0}")]
    Start(StartError),
    #[error("{0}")]
    Source(SourceError),
    #[error("{0} not allowed here")]
    Method(Method),
}

impl ResponseError for WhipError {
    fn status_code(&self) -> StatusCode {
        use WhipError as E;
        match self {
            E::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::BadRequest(_) => StatusCode::BAD_REQUEST,
            E::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::NoSession => StatusCode::NOT_FOUND,
            E::IceRestart | E::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            E::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            E::Start(s) => match s {
                StartError::TooManySessions
                | StartError::TooManyStreams
                | StartError::TooManyViewers
                | StartError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
                StartError::NameInUse
                | StartError::LostNameRace
                | StartError::MediaSessionIdInUse
                | StartError::Claim(_) => StatusCode::CONFLICT,
                StartError::Offer(sluice_actors::error::EngineError::BadSdp(_))
                | StartError::Offer(sluice_actors::error::EngineError::NoCommonCodecs) => {
                    StatusCode::BAD_REQUEST
                }
                StartError::Offer(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            E::Source(s) => match s {
                SourceError::NotFound | SourceError::FileNotFound => StatusCode::NOT_FOUND,
                SourceError::Rtsp(r) => match r {
                    RtspError::WrongFormat => StatusCode::BAD_REQUEST,
                    RtspError::Restricted => StatusCode::FORBIDDEN,
                    RtspError::NotFound => StatusCode::NOT_FOUND,
                    RtspError::NameInUse => StatusCode::CONFLICT,
                    RtspError::NoCodecs(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    RtspError::Connect(_) => StatusCode::BAD_GATEWAY,
                },
                SourceError::Vod(VodError::NotFound) => StatusCode::NOT_FOUND,
                SourceError::Vod(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        tracing::debug!(error = ?self, %status, "WHIP/WHEP refused");
        let mut r = HttpResponse::build(status);
        cors(&mut r);
        match self {
            WhipError::Unauthenticated(_) => {
                r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            WhipError::IceRestart | WhipError::Method(_) => {
                r.insert_header((header::ALLOW, ALLOW));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            _ => {}
        }
        r.content_type("text/plain; charset=utf-8").body(self.to_string())
    }
}

/// CORS for pages on any origin (the front's `cors()` allows fewer methods and exposes nothing).
fn cors(r: &mut HttpResponseBuilder) {
    r.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type, authorization, if-match"))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE));
}

/// The media type of the request, lower case, without parameters.
fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Percent-decoding of a path segment (`%2F` and the rest); None if it is not UTF-8 then.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encoding of a stream name as one path segment.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// The path after the endpoint's prefix, as sent (still percent-encoded).
fn tail<'a>(req: &'a HttpRequest, prefix: &str) -> &'a str {
    req.path().strip_prefix(prefix).map(|t| t.trim_start_matches('/')).unwrap_or("")
}

/// The stream token: `Authorization: Bearer`, else `?token=`.
fn bearer(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim().to_string());
        }
    }
    query(req, "token")
}

fn query(req: &HttpRequest, key: &str) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get(key).cloned())
}

/// The token and hook decision on a stream, as a WCS session makes it; the hook may rename the
/// stream or switch recording.
async fn authorize(
    auth: &Authorizer,
    kind: Kind,
    offer: &mut Offer,
    token: Option<&str>,
) -> Result<(), WhipError> {
    if !auth.streams_restricted() {
        return Ok(());
    }
    let check = |offer: &Offer| -> Result<(), WhipError> {
        let action = if kind == Kind::Whip { Action::Publish } else { Action::Play };
        let mut res = auth.check_token(token, action, Some(&offer.name));
        if res.is_ok() && kind == Kind::Whip && offer.record {
            res = auth.check_token(token, Action::Record, Some(&offer.name));
        }
        match res {
            Ok(_) => Ok(()),
            Err(TokenError::Missing) => Err(WhipError::Unauthenticated(TokenError::Missing)),
            Err(e) => Err(WhipError::Forbidden(e.to_string())),
        }
    };
    check(offer)?;
    if !auth.hooks_on() {
        return Ok(());
    }
    let published = kind == Kind::Whip;
    let info = offer.to_request().to_info(published, kind.as_str(), whip::APP_KEY, 0);
    let mut body = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut body {
        o.insert("custom".into(), Value::Null);
        o.insert("clientIp".into(), offer.client_ip.map(|i| i.to_string()).into());
    }
    let method = if published { "publishStream" } else { "playStream" };
    match auth.hook(method, &body).await {
        HookAnswer::Deny(reason) => {
            info!(stream = %offer.name, %reason, "{} {method} declined by the application server", kind.as_str());
            Err(WhipError::Forbidden(reason))
        }
        HookAnswer::Allow(over) => {
            if let Some(n) = over.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                if n != offer.name {
                    offer.name = n.to_string();
                    check(offer)?;
                }
            }
            if let Some(r) = over.get("record").and_then(Value::as_bool) {
                offer.record = r && published;
            }
            Ok(())
        }
    }
}

/// `POST /whip/{name}`, `POST /whep/{name}`.
async fn post(
    kind: Kind,
    prefix: &'static str,
    req: HttpRequest,
    body: web::Bytes,
    core: web::Data<Arc<Core>>,
    front: web::Data<WhipFront>,
) -> Result<HttpResponse, WhipError> {
    if content_type(&req) != SDP {
        return Err(WhipError::ContentType(SDP));
    }
    let name = percent_decode(tail(&req, prefix))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| WhipError::BadRequest("a stream name is required: POST .../{name}".into()))?;
    let sdp = String::from_utf8(body.to_vec())
        .ok()
        .filter(|s| s.trim_start().starts_with("v=0"))
        .ok_or_else(|| WhipError::BadRequest("the body is not an SDP offer".into()))?;
    let record = kind == Kind::Whip && query(&req, "record").is_some_and(|r| r == "true" || r == "1");
    let client_ip = req.peer_addr().map(|a| a.ip().to_canonical());
    let mut offer = Offer::new(name, sdp, record, client_ip);
    let core = core.get_ref().clone();
    if core.shutdown.is_stopping() {
        return Err(WhipError::Start(StartError::Shutdown));
    }
    authorize(&core.auth, kind, &mut offer, bearer(&req).as_deref()).await?;
    let answer = match kind {
        Kind::Whip => whip::publish(&core, &offer).map_err(WhipError::Start)?,
        Kind::Whep => {
            let source = match start::open_source(&core, &mut offer.name).map_err(WhipError::Source)? {
                Opening::Ready(s) => s,
                Opening::Later(f) => f.await.map_err(WhipError::Source)?,
            };
            whip::view(&core, &offer, source).map_err(WhipError::Start)?
        }
    };
    Ok(created(kind, &answer, &front))
}

/// 201 with the answer and the session resource.
fn created(kind: Kind, a: &WhipAnswer, front: &WhipFront) -> HttpResponse {
    let location = format!("/{}/{}/{}", kind.as_str(), percent_encode(&a.resource.name), a.id);
    let mut r = HttpResponse::Created();
    cors(&mut r);
    r.insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, a.resource.etag()))
        .insert_header(("Accept-Patch", SDPFRAG))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for link in front.ice_links() {
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.append_header((header::LINK, v));
        }
    }
    r.content_type(SDP).body(a.answer_sdp.clone())
}

/// The resource a PATCH or DELETE names (the path's last segment), if it is of this kind.
fn resource(
    kind: Kind,
    prefix: &str,
    req: &HttpRequest,
    core: &Core,
) -> Result<(String, whip::Resource), WhipError> {
    let t = tail(req, prefix);
    let id = t.rsplit_once('/').map(|(_, id)| id).ok_or(WhipError::NoSession)?;
    match core.whip.get(id) {
        Some(r) if r.kind == kind => Ok((id.to_string(), r)),
        _ => Err(WhipError::NoSession),
    }
}

/// `PATCH` of a session resource: trickle ICE (accepted, not needed), ICE restart (refused).
async fn patch(
    kind: Kind,
    prefix: &'static str,
    req: HttpRequest,
    body: web::Bytes,
    core: web::Data<Arc<Core>>,
) -> Result<HttpResponse, WhipError> {
    let (_, r) = resource(kind, prefix, &req, &core)?;
    if content_type(&req) != SDPFRAG {
        return Err(WhipError::ContentType(SDPFRAG));
    }
    let frag = String::from_utf8_lossy(&body);
    match req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::trim) {
        Some("*") => return Err(WhipError::IceRestart),
        Some(tag) if tag != r.etag() => return Err(WhipError::Precondition(r.etag())),
        _ => {}
    }
    if let (Some(new), Some(old)) = (whip::ice_ufrag(&frag), r.client_ufrag.as_deref()) {
        if new != old {
            return Err(WhipError::IceRestart);
        }
    }
    let mut ok = HttpResponse::NoContent();
    cors(&mut ok);
    Ok(ok.finish())
}

/// `DELETE` of a session resource: the stream ends.
async fn delete(
    kind: Kind,
    prefix: &'static str,
    req: HttpRequest,
    core: web::Data<Arc<Core>>,
) -> Result<HttpResponse, WhipError> {
    let (id, _) = resource(kind, prefix, &req, &core)?;
    let r = core.whip.remove(&id).ok_or(WhipError::NoSession)?;
    r.session.do_send(whip::End);
    info!(kind = kind.as_str(), stream = %r.name, resource = %id, "session deleted by the client");
    let mut ok = HttpResponse::Ok();
    cors(&mut ok);
    Ok(ok.finish())
}

/// `OPTIONS`: what the endpoint accepts, and the CORS preflight.
async fn options() -> HttpResponse {
    let mut r = HttpResponse::NoContent();
    cors(&mut r);
    r.insert_header(("Accept-Post", SDP))
        .insert_header(("Accept-Patch", SDPFRAG))
        .insert_header((header::ALLOW, ALLOW))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish()
}

async fn not_allowed(req: HttpRequest) -> Result<HttpResponse, WhipError> {
    Err(WhipError::Method(req.method().clone()))
}

/// The WHIP and WHEP endpoints and their resources, for the web and REST apps. Register before
/// any catch-all (the REST port's preflight route, the web port's files). Needs
/// `web::Data<Arc<Core>>` and `web::Data<WhipFront>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let endpoints: [(&'static str, Kind); 3] =
        [("/whip", Kind::Whip), ("/whep", Kind::Whep), ("/rest-api/stream/publish", Kind::Whip)];
    for (prefix, kind) in endpoints {
        cfg.service(
            web::resource(format!("{prefix}/{{tail:.+}}"))
                .route(
                    web::post().to(move |req, body, core, front| post(kind, prefix, req, body, core, front)),
                )
                .route(web::patch().to(move |req, body, core| patch(kind, prefix, req, body, core)))
                .route(web::delete().to(move |req, core| delete(kind, prefix, req, core)))
                .route(web::route().method(Method::OPTIONS).to(options))
                .default_service(web::to(not_allowed)),
        );
    }
}

/// Whether a path is a WHIP/WHEP endpoint or resource: the REST port's access gate lets these
/// through to their own (stream token) checks.
pub fn is_whip_path(path: &str) -> bool {
    ["/whip/", "/whep/", "/rest-api/stream/publish/"].iter().any(|p| path.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_path() {
        for name in ["cam1", "rtsp://user:pw@host:554/live?x=1", "vod://a b.mp4", "ünï"] {
            assert_eq!(percent_decode(&percent_encode(name)).as_deref(), Some(name));
        }
        assert_eq!(percent_decode("a%2Fb%zz%4").as_deref(), Some("a/b%zz%4"));
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn whip_paths_bypass_the_api_gate() {
        assert!(is_whip_path("/whip/cam"));
        assert!(is_whip_path("/whep/cam/0123"));
        assert!(is_whip_path("/rest-api/stream/publish/cam"));
        assert!(!is_whip_path("/rest-api/stream/find"));
        assert!(!is_whip_path("/whipx"));
    }
}
