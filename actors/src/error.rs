//! Errors of the actor layer, each carrying what a log line needs to lead to the cause.

use thiserror::Error;

use crate::protocol::info;

/// Failures of the WebRTC engine ([`crate::engine`]).
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid SDP offer: {0}")]
    BadSdp(String),
    #[error("no common codecs")]
    NoCommonCodecs,
    #[error("bad local candidate: {0}")]
    Candidate(String),
    #[error("malformed datagram: {0}")]
    Datagram(String),
    #[error("webrtc: {0}")]
    Rtc(String),
    #[error("peer closed")]
    Closed,
}

impl EngineError {
    /// The `info` text a client sees when its publish or play fails for this reason.
    pub fn client_info(&self) -> String {
        use crate::protocol::info;
        match self {
            EngineError::NoCommonCodecs => info::NO_COMMON_CODECS.to_string(),
            other => format!("{}: {other}", info::FAILED_BY_ERROR),
        }
    }
}

/// Failures of a recording ([`crate::recorder`]). The REST front answers 404 for
/// [`RecordError::StreamNotFound`] and [`RecordError::NotRecording`], 500 for the rest.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("stream {0} not found")]
    StreamNotFound(String),
    #[error("stream {0} is not being recorded")]
    NotRecording(String),
    #[error("records directory {dir} is not writable: {source}")]
    Directory { dir: std::path::PathBuf, source: std::io::Error },
    #[error("cannot create record file {path}: {source}")]
    Create { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot write record file {path}: {source}")]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot mux record file {path}: {source}")]
    Mux { path: std::path::PathBuf, source: crate::fmp4::MuxError },
    #[error("invalid recording settings: {0}")]
    BadConfig(String),
}

/// Why an RTSP pull ([`crate::rtsp`]) was refused or failed. `Display` is the exact WCS `info`
/// string the viewer gets; the detail (with the URL's credentials removed) goes to the log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtspError {
    /// Not an `rtsp://` URL, or one that does not parse.
    #[error("{}", info::RTSP_WRONG_FORMAT)]
    WrongFormat,
    /// The host is (or resolves to) a private or loopback address not allowed by `--rtsp-allow`,
    /// or matches none of its patterns.
    #[error("{}", info::RESTRICTED_ACCESS)]
    Restricted,
    /// Connection refused, unreachable, timed out, or the RTSP exchange failed.
    #[error("{}", info::RTSP_CONNECT_FAILED)]
    Connect(String),
    /// The camera answered 404 to DESCRIBE.
    #[error("{}", info::RTSP_NOT_FOUND)]
    NotFound,
    /// The camera offers no H.264 video.
    #[error("{}", info::NO_COMMON_CODECS)]
    NoCodecs(String),
    /// The URL's stream name is taken by another publisher.
    #[error("{}", info::NAME_IN_USE)]
    NameInUse,
}
