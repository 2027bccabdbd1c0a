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
