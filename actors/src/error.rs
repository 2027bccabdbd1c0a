//! Errors of the actor layer, each carrying what a log line needs to lead to the cause.

use thiserror::Error;

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
