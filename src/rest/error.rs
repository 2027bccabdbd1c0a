//! The REST front's one error type. Every handler returns `Result<HttpResponse, ApiError>` and
//! uses `?`; the [`ResponseError`] impl below is the one place an error becomes a status code
//! and a `{"error": "..."}` body. The body is the error's `Display`; WCS strings come from
//! [`sluice_actors::protocol::info`]. Each variant keeps what a log line needs (the name, the
//! selector, the client's limit); `Debug` of the error is logged with every answer.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use thiserror::Error;

use sluice_actors::auth::ApiRefusal;
use sluice_actors::error::{RecordError, RtspError};
use sluice_actors::protocol::info;
use sluice_actors::pull::PullError;
use sluice_actors::snapshot::SnapshotError;
use sluice_actors::vod::VodError;

#[derive(Debug, Error)]
pub enum ApiError {
    /// The body is not JSON, lacks a required field or has one of the wrong type (serde's
    /// message says which).
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    /// A field parsed, but its value is not one the method knows.
    #[error("invalid {field}: {value}")]
    InvalidValue { field: &'static str, value: String },
    /// `?format=` names no picture format we encode.
    #[error("unsupported format: {0} (png, jpeg)")]
    UnsupportedFormat(String),
    /// A field the method cannot do without.
    #[error("{0} is required")]
    Required(&'static str),
    /// A destructive call with nothing selecting what it acts on: never "every stream".
    #[error("a selector is required: {0}")]
    NoSelector(&'static str),
    /// `/vod/startup` with a uri that is not `vod://` or `vod-live://` (the uri given, if any).
    #[error("uri must be vod-live://<file> or vod://<file>")]
    BadVodUri(Option<String>),
    /// Nothing matches: the selector, as the client gave it.
    #[error("{}", info::STREAM_NOT_FOUND)]
    StreamNotFound(String),
    /// The stream name asked for is published already.
    #[error("{}", info::NAME_IN_USE)]
    NameInUse(String),
    /// A VOD file that is missing or outside the media folder (the uri or name asked for).
    #[error("{}", info::FILE_NOT_FOUND)]
    FileNotFound(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A snapshot of a stream that exists, but gave no picture.
    #[error("{source}")]
    Snapshot { stream: String, source: SnapshotError },
    /// A VOD file that could not be opened as a stream (the name it was to have).
    #[error("{source}")]
    Vod { name: String, source: VodError },
    /// An actor the method needs did not answer (the service's name).
    #[error("{0} service unavailable")]
    Unavailable(&'static str),
    /// An RTSP pull that did not start or a URL that is refused (the URL without credentials).
    #[error("{source}")]
    Rtsp { uri: String, source: RtspError },
    /// A WebRTC pull that did not start (its local name).
    #[error("{source}")]
    Pull { name: String, source: PullError },
    #[error("TURN is disabled on this server")]
    TurnDisabled,
    #[error("this node is not in a cluster (--cluster-redis)")]
    NotInCluster,
    /// The cluster's Redis could not answer (its error).
    #[error("{0}")]
    ClusterStore(String),
    /// The client asked for more TURN credentials than its allowance.
    #[error(
        "too many TURN credential requests from this address ({per_minute} a minute); retry in {retry_after_secs} s"
    )]
    TooManyCredentialRequests { per_minute: u32, retry_after_secs: u64 },
    /// A path under the REST port that is no method.
    #[error("no such REST method")]
    NoSuchMethod(String),
    /// The access gate: no credential where one is needed (what to configure or send).
    #[error("{0}")]
    Unauthenticated(String),
    /// The access gate: a credential that does not do.
    #[error("{0}")]
    Forbidden(String),
}

impl From<ApiRefusal> for ApiError {
    fn from(r: ApiRefusal) -> Self {
        match r {
            ApiRefusal::Unauthenticated(m) => ApiError::Unauthenticated(m),
            ApiRefusal::Forbidden(m) => ApiError::Forbidden(m),
        }
    }
}

impl ApiError {
    /// A failed snapshot of `stream`: an unknown stream is the WCS "Stream not found".
    pub fn snapshot(stream: String, source: SnapshotError) -> Self {
        match source {
            SnapshotError::NotFound => ApiError::StreamNotFound(stream),
            source => ApiError::Snapshot { stream, source },
        }
    }

    /// A VOD file that did not become the stream `name`: a taken name is the WCS "Stream name
    /// is already in use", a missing file "File not found".
    pub fn vod(name: String, source: VodError) -> Self {
        match source {
            VodError::NameInUse => ApiError::NameInUse(name),
            VodError::NotFound => ApiError::FileNotFound(name),
            source => ApiError::Vod { name, source },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        use ApiError as E;
        match self {
            E::Json(_)
            | E::InvalidValue { .. }
            | E::UnsupportedFormat(_)
            | E::Required(_)
            | E::NoSelector(_)
            | E::BadVodUri(_)
            | E::Record(RecordError::BadConfig(_)) => StatusCode::BAD_REQUEST,
            E::StreamNotFound(_)
            | E::FileNotFound(_)
            | E::Record(RecordError::StreamNotFound(_) | RecordError::NotRecording(_))
            | E::TurnDisabled
            | E::NotInCluster
            | E::NoSuchMethod(_) => StatusCode::NOT_FOUND,
            E::ClusterStore(_) => StatusCode::BAD_GATEWAY,
            E::NameInUse(_) => StatusCode::CONFLICT,
            E::Pull { source, .. } => match source {
                PullError::BadUri => StatusCode::BAD_REQUEST,
                PullError::Restricted(_) => StatusCode::FORBIDDEN,
                PullError::NameInUse => StatusCode::CONFLICT,
                PullError::Remote(why) if why.as_str() == info::STREAM_NOT_FOUND => StatusCode::NOT_FOUND,
                PullError::Remote(_) | PullError::Connect(_) => StatusCode::BAD_GATEWAY,
            },
            E::Rtsp { source, .. } => match source {
                RtspError::WrongFormat => StatusCode::BAD_REQUEST,
                RtspError::Restricted => StatusCode::FORBIDDEN,
                RtspError::NotFound => StatusCode::NOT_FOUND,
                RtspError::NameInUse => StatusCode::CONFLICT,
                RtspError::NoCodecs(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RtspError::Connect(_) => StatusCode::BAD_GATEWAY,
            },
            E::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::TooManyCredentialRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            // Ours, not the request's: records folder or file (the stream goes on), picture, VOD file.
            E::Record(_) | E::Snapshot { .. } | E::Vod { .. } | E::Unavailable(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        tracing::debug!(error = ?self, %status, "REST error");
        let mut r = HttpResponse::build(status);
        if let ApiError::TooManyCredentialRequests { retry_after_secs, .. } = self {
            r.insert_header(("Retry-After", retry_after_secs.to_string()))
                // Pages on other origins (the Firewall Traversal demo) may read it.
                .insert_header(("Access-Control-Expose-Headers", "Retry-After"))
                .insert_header(("Cache-Control", "no-store"));
        }
        if let ApiError::Unauthenticated(_) = self {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        r.json(json!({ "error": self.to_string() }))
    }
}
