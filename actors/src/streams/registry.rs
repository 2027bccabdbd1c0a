//! The stream registry: published streams by name, and every media session (publish or play)
//! by `mediaSessionId`.
//!
//! A shared `DashMap` pair rather than an actor, on purpose: the WebSocket sessions and the REST
//! front ask it synchronously on every publish, play and find, and the duplicate-name rule needs
//! an atomic "insert if absent", which `DashMap::entry` gives without a mailbox round trip. Actors
//! update their own entry (status, info) as their stream changes, so `/stream/find` is always
//! current without asking any actor.
//!
//! Sources hold a [`Registration`] ([`Registry::register_source`]), which releases their name and
//! record when dropped; viewers are recorded with [`Registry::add_session`] and leave with
//! [`Registry::finish`].

use std::sync::Arc;

use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::media::Codec;
use crate::messages::{Stop, StreamSource};
use crate::protocol::{StreamInfo, StreamStatus};

/// A published stream, as players find it.
#[derive(Clone)]
pub struct Published {
    pub media_session_id: String,
    pub source: StreamSource,
    pub video: Option<Codec>,
    pub has_audio: bool,
}

struct Record {
    info: StreamInfo,
    control: Recipient<Stop>,
}

/// A filter as `/stream/find` and `/stream/terminate` take it; empty fields match anything.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub name: Option<String>,
    pub media_session_ids: Option<Vec<String>>,
    pub published: Option<bool>,
    pub status: Option<StreamStatus>,
}

impl Filter {
    fn matches(&self, i: &StreamInfo) -> bool {
        self.name.as_ref().is_none_or(|n| *n == i.name)
            && self.media_session_ids.as_ref().is_none_or(|ids| ids.contains(&i.media_session_id))
            && self.published.is_none_or(|p| p == i.published)
            && self.status.is_none_or(|s| s == i.status)
    }
}

#[derive(Default)]
pub struct Registry {
    published: DashMap<String, Published>,
    streams: DashMap<String, Record>,
    /// Told of every name claimed and released (the cluster's claims in Redis); set once.
    observer: std::sync::OnceLock<Arc<dyn NameObserver>>,
}

/// Told of names as they are claimed and released here (after the fact, never blocking the
/// claim): the cluster mirrors them in Redis ([`crate::cluster`]).
pub trait NameObserver: Send + Sync {
    fn claimed(&self, name: &str, media_session_id: &str);
    fn released(&self, name: &str, media_session_id: &str);
}

#[derive(Debug, PartialEq, Eq)]
pub enum ClaimError {
    NameInUse,
    MediaSessionIdInUse,
}

impl ClaimError {
    /// The WCS `info` of this refusal.
    pub fn info(&self) -> &'static str {
        match self {
            ClaimError::NameInUse => crate::protocol::info::NAME_IN_USE,
            ClaimError::MediaSessionIdInUse => crate::protocol::info::MEDIA_SESSION_ID_IN_USE,
        }
    }
}

/// A source's hold on the registry: its session record and, for a published stream, its claim
/// on the name. Made by [`Registry::register_source`], owned by the source's actor; dropping it
/// (the actor ends, or a start fails halfway) releases both, name first. Every source (WebRTC
/// publisher, RTMP, RTSP, VOD) registers this way, so none repeats the claim-and-roll-back.
#[must_use = "dropping the registration unregisters the stream at once"]
pub struct Registration {
    registry: Arc<Registry>,
    id: String,
    name: Option<String>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("id", &self.id).field("name", &self.name).finish()
    }
}

impl Registration {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The source's final status: recorded in `info` and the record, then name and session are
    /// released; returns the stream object to tell the client (after this, so that a REST find
    /// following the status no longer lists it).
    pub fn finish(self, info: &mut StreamInfo, status: StreamStatus, text: &str) -> StreamInfo {
        let last = self.registry.set_status(info, status, text);
        drop(self);
        last
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            self.registry.release_name(name, &self.id);
        }
        self.registry.remove_session(&self.id);
    }
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Install the one [`NameObserver`]; false if one was already there.
    pub fn set_observer(&self, o: Arc<dyn NameObserver>) -> bool {
        self.observer.set(o).is_ok()
    }

    pub fn media_session_exists(&self, id: &str) -> bool {
        self.streams.contains_key(id)
    }

    pub fn name_published(&self, name: &str) -> bool {
        self.published.contains_key(name)
    }

    pub fn lookup(&self, name: &str) -> Option<Published> {
        self.published.get(name).map(|p| p.clone())
    }

    /// Register a source: its session record (`info`, stopped through `control`) and, when
    /// `claim` is given, the stream name `info.name`. Both or neither: a name clash undoes the
    /// record.
    pub fn register_source(
        self: &Arc<Self>,
        info: StreamInfo,
        control: Recipient<Stop>,
        claim: Option<Published>,
    ) -> Result<Registration, ClaimError> {
        let (id, name) = (info.media_session_id.clone(), info.name.clone());
        self.add_session(info, control)?;
        let mut reg = Registration { registry: self.clone(), id, name: None };
        if let Some(p) = claim {
            self.claim_name(&name, p)?; // `reg` drops here on a clash: the record goes too
            reg.name = Some(name);
        }
        Ok(reg)
    }

    /// Record a media session. Fails if the id is taken.
    pub fn add_session(&self, info: StreamInfo, control: Recipient<Stop>) -> Result<(), ClaimError> {
        match self.streams.entry(info.media_session_id.clone()) {
            Entry::Occupied(_) => Err(ClaimError::MediaSessionIdInUse),
            Entry::Vacant(v) => {
                v.insert(Record { info, control });
                Ok(())
            }
        }
    }

    /// Claim a stream name for a publisher, atomically.
    pub fn claim_name(&self, name: &str, p: Published) -> Result<(), ClaimError> {
        match self.published.entry(name.to_string()) {
            Entry::Occupied(_) => Err(ClaimError::NameInUse),
            Entry::Vacant(v) => {
                let id = p.media_session_id.clone();
                v.insert(p);
                if let Some(o) = self.observer.get() {
                    o.claimed(name, &id);
                }
                Ok(())
            }
        }
    }

    /// Release a name, only if this media session still owns it.
    pub fn release_name(&self, name: &str, media_session_id: &str) {
        let removed = self.published.remove_if(name, |_, p| p.media_session_id == media_session_id);
        if let (Some(o), Some(_)) = (self.observer.get(), removed) {
            o.released(name, media_session_id);
        }
    }

    /// Change a session's stream object in place; returns the updated copy.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut StreamInfo)) -> Option<StreamInfo> {
        self.streams.get_mut(id).map(|mut r| {
            f(&mut r.info);
            r.info.clone()
        })
    }

    /// Set a stream's status and info, in the actor's own copy and in its registry record;
    /// returns the stream object to send to its client.
    pub fn set_status(&self, info: &mut StreamInfo, status: StreamStatus, text: &str) -> StreamInfo {
        info.status = status;
        info.info = text.to_string();
        self.update(&info.media_session_id, |i| {
            i.status = status;
            i.info = text.to_string();
        })
        .unwrap_or_else(|| info.clone())
    }

    /// The session's final status: recorded, then the session leaves the registry, and the
    /// status to tell the client is returned. Removed before the client hears it, so a REST
    /// find that follows the status does not list the session any more.
    pub fn finish(&self, info: &mut StreamInfo, status: StreamStatus, text: &str) -> StreamInfo {
        let last = self.set_status(info, status, text);
        self.remove_session(&info.media_session_id);
        last
    }

    pub fn remove_session(&self, id: &str) {
        self.streams.remove(id);
    }

    /// The matching stream objects, oldest first; published ones carry their viewer count.
    pub fn find(&self, f: &Filter) -> Vec<StreamInfo> {
        let mut viewers = std::collections::HashMap::<String, u32>::new();
        for r in self.streams.iter().filter(|r| !r.info.published) {
            *viewers.entry(r.info.name.clone()).or_default() += 1;
        }
        let mut v: Vec<StreamInfo> = self
            .streams
            .iter()
            .filter(|r| f.matches(&r.info))
            .map(|r| {
                let mut i = r.info.clone();
                if i.published {
                    i.viewers = Some(viewers.get(&i.name).copied().unwrap_or(0));
                }
                i
            })
            .collect();
        v.sort_by(|a, b| a.create_date.cmp(&b.create_date).then(a.media_session_id.cmp(&b.media_session_id)));
        v
    }

    /// Stop every matching session; returns how many were asked to stop.
    pub fn terminate(&self, f: &Filter, reason: &'static str) -> usize {
        let controls: Vec<Recipient<Stop>> =
            self.streams.iter().filter(|r| f.matches(&r.info)).map(|r| r.control.clone()).collect();
        for c in &controls {
            c.do_send(Stop { reason });
        }
        controls.len()
    }

    /// How many viewers play `name` now.
    pub fn viewers_of(&self, name: &str) -> usize {
        self.streams.iter().filter(|r| !r.info.published && r.info.name == name).count()
    }

    pub fn counts(&self) -> (usize, usize) {
        let published = self.published.len();
        (published, self.streams.len() - published.min(self.streams.len()))
    }
}
