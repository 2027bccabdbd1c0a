//! Messages several actors share. Messages that only one actor handles live beside it.

use actix::prelude::*;
use serde_json::Value;

use crate::protocol::StreamInfo;

/// A stream's status changed: the session sends `notifyStreamStatusEvent` to its client.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StatusChanged(pub StreamInfo);

/// A stream event for a client: `notifyStreamEvent` (mute notices, data, snapshots).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamEventNotice {
    pub media_session_id: String,
    pub kind: String,
    pub payload: Value,
}

/// End a publish or a play. `reason` becomes the `info` of the final status event.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Stop {
    pub reason: &'static str,
}
