//! The HLS front: every published stream over HLS and Low-Latency HLS on `--hls-port` (8082, as
//! WCS), at the WCS URL `http://host:8082/{name}/{name}.m3u8`.
//!
//! Routes, all under `/{name}/` (relative URIs in the playlists, so any prefix a CDN adds works):
//! - `{name}.m3u8`: the multivariant playlist (one variant, its `CODECS` and `RESOLUTION`);
//! - `media.m3u8`: the media playlist, with LL-HLS parts; `_HLS_msn` / `_HLS_part` make it a
//!   blocking reload, held until that part exists (at most [`BLOCK_TIMEOUT`]);
//! - `init{n}.mp4`, `s{msn}.m4s` (segments), `p{msn}.{i}.m4s` (parts; the part named by the
//!   preload hint is held until it exists, as for a blocking reload);
//! - the same names prefixed `aac-` (`aac-media.m3u8`...): the AAC rendition, the second
//!   variant of the multivariant playlist, for players without Opus (Safari, iOS): its own
//!   muxer, started by its first request, transcodes the stream's Opus to AAC-LC.
//!
//! The first request of a stream starts its packaging ([`HlsStreams::get`]) and waits (at most
//! [`START_TIMEOUT`]) for its first segment. A name no stream is published under is a 404.
//! Access: a token (`?token=` or `Authorization: Bearer`) checked with `play` of the name, as a
//! WebSocket or WHEP viewer's; the token is carried into every URI of the playlists. CORS is
//! open (`*`). Cache headers a CDN honours: playlists `max-age=1` (a blocking reload, whose URL
//! names its part, 10 s), init, segments and parts a day (`immutable`: their names are never
//! reused, see [`sluice_actors::hls`]), errors `no-store`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use sluice_actors::auth::{Action, Authorizer, TokenError};
use sluice_actors::hls::{HlsStream, HlsStreams, Ready, Wanted};

/// The WCS HLS port.
pub const DEFAULT_PORT: u16 = 8082;
/// Longest wait for a new stream's first segment.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest hold of a blocking playlist reload or a preload-hinted part (the spec asks for at
/// least three target durations).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(6);

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";

/// Why a request is refused; the status code of each in one place.
#[derive(Debug, thiserror::Error)]
pub enum HlsError {
    #[error("stream not found")]
    NotFound,
    #[error("not found")]
    NoSuchFile,
    #[error("token required")]
    Unauthenticated,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("stream not ready yet")]
    NotReady,
}

impl ResponseError for HlsError {
    fn status_code(&self) -> StatusCode {
        match self {
            HlsError::NotFound | HlsError::NoSuchFile => StatusCode::NOT_FOUND,
            HlsError::Unauthenticated => StatusCode::UNAUTHORIZED,
            HlsError::Forbidden(_) => StatusCode::FORBIDDEN,
            HlsError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HlsError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        r.insert_header((header::CACHE_CONTROL, "no-store"));
        if matches!(self, HlsError::NotReady) {
            r.insert_header((header::RETRY_AFTER, "1"));
        }
        r.content_type("text/plain; charset=utf-8").body(format!("{self}\n"))
    }
}

/// The routes of the HLS port.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/{name}/{file}", web::get().to(serve))
        .route("/{name}/{file}", web::head().to(serve))
        .default_service(web::to(|req: HttpRequest| async move {
            if req.method() == actix_web::http::Method::OPTIONS {
                HttpResponse::NoContent().insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400")).finish()
            } else {
                HlsError::NoSuchFile.error_response()
            }
        }));
}

/// CORS for every answer, preflights included.
pub fn cors() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("Access-Control-Allow-Origin", "*"))
        .add(("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"))
        .add(("Access-Control-Allow-Headers", "authorization, range"))
}

/// What a file name under `/{name}/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum File {
    Multivariant,
    Media,
    Init(u64),
    Segment(u64),
    Part(u64, u64),
}

/// A file name: what it asks for, and whether of the AAC rendition (`aac-` prefix).
fn parse(name: &str, file: &str) -> Option<(File, bool)> {
    match file.strip_prefix("aac-") {
        Some(rest) => parse_file(name, rest).filter(|f| *f != File::Multivariant).map(|f| (f, true)),
        None => parse_file(name, file).map(|f| (f, false)),
    }
}

fn parse_file(name: &str, file: &str) -> Option<File> {
    if file == "media.m3u8" {
        return Some(File::Media);
    }
    if file.strip_suffix(".m3u8") == Some(name) || file == "index.m3u8" || file == "playlist.m3u8" {
        return Some(File::Multivariant);
    }
    if let Some(n) = file.strip_prefix("init").and_then(|f| f.strip_suffix(".mp4")) {
        return n.parse().ok().map(File::Init);
    }
    let stem = file.strip_suffix(".m4s")?;
    if let Some(n) = stem.strip_prefix('s') {
        return n.parse().ok().map(File::Segment);
    }
    let (m, p) = stem.strip_prefix('p')?.split_once('.')?;
    Some(File::Part(m.parse().ok()?, p.parse().ok()?))
}

/// The token of a request: `?token=`, else `Authorization: Bearer`.
fn token<'a>(req: &'a HttpRequest, query: &'a HashMap<String, String>) -> Option<&'a str> {
    query.get("token").map(String::as_str).or_else(|| {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    })
}

/// `token=...` percent-encoded, to append to the playlists' URIs ("" without a query token).
fn token_query(query: &HashMap<String, String>) -> String {
    let Some(t) = query.get("token") else { return String::new() };
    let mut out = String::from("token=");
    for b in t.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reply(
    content_type: &'static str,
    cache: &'static str,
    body: impl actix_web::body::MessageBody + 'static,
) -> HttpResponse {
    let mut r = HttpResponse::Ok().content_type(content_type).body(body);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn bytes(b: Arc<[u8]>) -> web::Bytes {
    web::Bytes::from_owner(b)
}

async fn serve(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<HashMap<String, String>>,
    streams: web::Data<Arc<HlsStreams>>,
    auth: web::Data<Arc<Authorizer>>,
) -> Result<HttpResponse, HlsError> {
    let (name, file) = path.into_inner();
    let (file, aac) = parse(&name, &file).ok_or(HlsError::NoSuchFile)?;
    match auth.check_token(token(&req, &query), Action::Play, Some(&name)) {
        Ok(_) => {}
        Err(TokenError::Missing) => return Err(HlsError::Unauthenticated),
        Err(e) => return Err(HlsError::Forbidden(e.to_string())),
    }
    let stream = streams.get(&name, aac).ok_or(HlsError::NotFound)?;
    let q = token_query(&query);
    match file {
        File::Multivariant => {
            first_segment(&stream).await?;
            let text = stream.read(|p| p.multivariant_playlist("media.m3u8", Some("aac-media.m3u8"), &q));
            Ok(reply(PLAYLIST, "public, max-age=1", text))
        }
        File::Media => {
            let wanted = blocking(&query)?;
            first_segment(&stream).await?;
            let mut cache = "public, max-age=1";
            if let Some(w) = wanted {
                match stream.read(|p| p.ready(w)) {
                    Ready::TooFar => return Err(HlsError::BadRequest("_HLS_msn too far ahead")),
                    Ready::Yes => {}
                    Ready::Wait => {
                        if !stream.wait_for(BLOCK_TIMEOUT, |p| p.ready(w) == Ready::Yes).await {
                            return Err(HlsError::NotReady);
                        }
                    }
                }
                cache = "public, max-age=10";
            }
            let text = stream.read(|p| p.media_playlist(&q));
            Ok(reply(PLAYLIST, cache, text))
        }
        File::Init(n) => {
            first_segment(&stream).await?;
            let init = stream.read(|p| (p.first_msn() == n).then(|| p.init()).flatten());
            let init = init.ok_or(HlsError::NoSuchFile)?;
            Ok(reply(MP4, "public, max-age=86400, immutable", bytes(init)))
        }
        File::Segment(msn) => {
            let seg = stream.read(|p| p.segment(msn)).ok_or(HlsError::NoSuchFile)?;
            Ok(reply(MP4, "public, max-age=86400, immutable", bytes(seg)))
        }
        File::Part(msn, i) => {
            let w = Wanted { msn, part: Some(i) };
            // The next part (the preload hint) or one of the next segment: held until it exists.
            if stream
                .read(|p| p.part(msn, i).is_none() && p.ready(w) == Ready::Wait && msn <= p.next_part().0 + 1)
            {
                stream.wait_for(BLOCK_TIMEOUT, |p| p.ready(w) == Ready::Yes).await;
            }
            let part = stream.read(|p| p.part(msn, i)).ok_or(HlsError::NoSuchFile)?;
            Ok(reply(MP4, "public, max-age=86400, immutable", bytes(part)))
        }
    }
}

/// `_HLS_msn` and `_HLS_part` of a blocking reload.
fn blocking(query: &HashMap<String, String>) -> Result<Option<Wanted>, HlsError> {
    let Some(msn) = query.get("_HLS_msn") else {
        return match query.contains_key("_HLS_part") {
            true => Err(HlsError::BadRequest("_HLS_part without _HLS_msn")),
            false => Ok(None),
        };
    };
    let msn = msn.parse().map_err(|_| HlsError::BadRequest("_HLS_msn is not a number"))?;
    let part = match query.get("_HLS_part") {
        Some(p) => Some(p.parse().map_err(|_| HlsError::BadRequest("_HLS_part is not a number"))?),
        None => None,
    };
    Ok(Some(Wanted { msn, part }))
}

/// Wait for a newly started stream's first complete segment.
async fn first_segment(stream: &HlsStream) -> Result<(), HlsError> {
    if stream.wait_for(START_TIMEOUT, |p| p.complete_segments() > 0).await {
        Ok(())
    } else {
        Err(HlsError::NotReady)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file("cam", "cam.m3u8"), Some(File::Multivariant));
        assert_eq!(parse_file("cam", "media.m3u8"), Some(File::Media));
        assert_eq!(parse_file("cam", "init17.mp4"), Some(File::Init(17)));
        assert_eq!(parse_file("cam", "s42.m4s"), Some(File::Segment(42)));
        assert_eq!(parse_file("cam", "p42.3.m4s"), Some(File::Part(42, 3)));
        assert_eq!(parse_file("cam", "other.m3u8"), None);
        assert_eq!(parse_file("cam", "p42.m4s"), None);
        assert_eq!(parse_file("cam", "s-1.m4s"), None);
        assert_eq!(parse_file("cam", "../x"), None);
        assert_eq!(parse("cam", "aac-media.m3u8"), Some((File::Media, true)));
        assert_eq!(parse("cam", "aac-s3.m4s"), Some((File::Segment(3), true)));
        assert_eq!(parse("cam", "aac-cam.m3u8"), None);
        assert_eq!(parse("cam", "p1.2.m4s"), Some((File::Part(1, 2), false)));
    }

    #[test]
    fn token_is_encoded() {
        let mut q = HashMap::new();
        assert_eq!(token_query(&q), "");
        q.insert("token".to_string(), "a.b_c-d e&f".to_string());
        assert_eq!(token_query(&q), "token=a.b_c-d%20e%26f");
    }
}
