//! Fan-out of one stream's frames to its sinks (viewers, recorders), embedded by every source
//! actor. Not an actor itself: the owning source calls it from its own handlers.
//!
//! Backpressure policy: frames go out with `try_send` on each sink's bounded mailbox. A sink
//! whose mailbox is full loses that frame, gets no more video until the next keyframe, and the
//! source is told to ask for one; a slow sink never stalls the source or the other sinks.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;

use crate::media::{Frame, FrameKind};
use crate::messages::{AddSubscriber, Forward, SourceEnded, StreamEventNotice};

struct Sink {
    frames: Recipient<Forward>,
    ended: Recipient<SourceEnded>,
    events: Option<(String, Recipient<StreamEventNotice>)>,
    /// No video goes out until a keyframe: set at join and after a lost frame.
    wait_keyframe: bool,
}

#[derive(Default)]
pub struct FanOut {
    sinks: HashMap<u64, Sink>,
    last_keyframe: Option<Arc<Frame>>,
    frames: u64,
}

impl FanOut {
    pub fn add(&mut self, m: AddSubscriber) {
        self.sinks
            .insert(m.id, Sink { frames: m.frames, ended: m.ended, events: m.events, wait_keyframe: true });
    }

    pub fn remove(&mut self, id: u64) {
        self.sinks.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The most recent video keyframe (for snapshots and late joiners).
    pub fn last_keyframe(&self) -> Option<&Arc<Frame>> {
        self.last_keyframe.as_ref()
    }

    /// Send a frame to every sink. Returns true when a keyframe should be requested from the
    /// source (a sink lost a frame).
    pub fn forward(&mut self, frame: Frame) -> bool {
        self.frames += 1;
        let frame = Arc::new(frame);
        if frame.keyframe {
            self.last_keyframe = Some(frame.clone());
        }
        let mut want_keyframe = false;
        self.sinks.retain(|_, s| {
            if frame.kind() == FrameKind::Video {
                if s.wait_keyframe && !frame.keyframe {
                    return true;
                }
                s.wait_keyframe = false;
            }
            match s.frames.try_send(Forward(frame.clone())) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    s.wait_keyframe = true;
                    want_keyframe = true;
                    true
                }
                Err(SendError::Closed(_)) => false,
            }
        });
        want_keyframe
    }

    /// Frames were lost upstream: hold every sink's video until a fresh keyframe.
    pub fn lost_frame(&mut self) {
        for s in self.sinks.values_mut() {
            s.wait_keyframe = true;
        }
    }

    /// Relay a stream event (mute notice, data) to every viewer's client.
    pub fn relay_event(&self, kind: &str, payload: &Value) {
        for (id, events) in self.sinks.values().filter_map(|s| s.events.as_ref()) {
            events.do_send(StreamEventNotice {
                media_session_id: id.clone(),
                kind: kind.to_string(),
                payload: payload.clone(),
            });
        }
    }

    /// The source is gone: tell every sink, and forget them.
    pub fn end(&mut self, reason: &'static str) {
        for (_, s) in self.sinks.drain() {
            s.ended.do_send(SourceEnded { reason });
        }
    }
}
