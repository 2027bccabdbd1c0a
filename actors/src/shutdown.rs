//! Graceful shutdown: the flag every session watches, and the drain that ends every stream.
//!
//! Not an actor: a `watch` channel ([`Shutdown`]) in [`Core`] and one async function
//! ([`drain`]) the binary runs on SIGTERM/SIGINT, after it stopped accepting connections.
//!
//! What clients see, in order:
//! 1. From [`Shutdown::begin`] on, sessions answer new `publishStream`/`playStream` with FAILED
//!    "Server shutdown".
//! 2. [`drain`] stops every viewer first, so each gets STOPPED "Server shutdown" (and not
//!    "Stopped by publisher stop", which the publisher's end would send a moment later), then
//!    every publisher and VOD source: UNPUBLISHED "Server shutdown" (FAILED if it had not
//!    connected yet). A recorded stream's recorder finishes its file on the source's end, and
//!    UNPUBLISHED waits for it, as on any unpublish, so its `recordName` names a complete file.
//! 3. Each session closes its WebSocket (1001 Going Away, "Server shutdown") once its last
//!    stream has sent its final status; sessions with no stream close at once.
//!
//! Every wait is bounded: [`drain`] returns by its deadline whatever is left, and the binary then
//! stops the HTTP servers, which drop any connection still open after their own timeout.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::protocol::info;
use crate::registry::Filter;
use crate::Core;

/// How often [`drain`] looks whether every stream and recording is gone.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The server is stopping: set once, never cleared.
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { tx: watch::Sender::new(false) }
    }
}

impl Shutdown {
    /// Start the shutdown; false if it had already begun.
    pub fn begin(&self) -> bool {
        !self.tx.send_replace(true)
    }

    pub fn is_stopping(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the shutdown has begun (at once if it already has). Runs on any runtime:
    /// sessions await it on their web worker.
    pub fn stopping(&self) -> impl Future<Output = ()> + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }
}

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub viewers: usize,
    pub sources: usize,
    /// Streams and recordings still there at the deadline (0 and 0: a clean drain).
    pub streams_left: usize,
    pub recordings_left: usize,
}

/// End every stream with "Server shutdown" (viewers first), finish every recording, and wait
/// until none is left, at most `within`. Never blocks a thread: it polls the registry.
pub async fn drain(core: &Core, within: Duration) -> Drained {
    let deadline = Instant::now() + within;
    let filter = |published| Filter { published: Some(published), ..Default::default() };
    let viewers = core.registry.terminate(&filter(false), info::SERVER_SHUTDOWN);
    let sources = core.registry.terminate(&filter(true), info::SERVER_SHUTDOWN);
    info!(viewers, sources, "shutdown: stopping every stream");
    let streams_left = || core.registry.find(&Filter::default()).len();
    while streams_left() > 0 && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // Recorders finish on their source's end; one whose source never told it is finished here.
    let finishing = core.recordings.finish_all();
    if tokio::time::timeout_at(deadline.into(), finishing).await.is_err() {
        warn!("shutdown: recordings still finishing at the deadline");
    }
    let d = Drained {
        viewers,
        sources,
        streams_left: streams_left(),
        recordings_left: core.recordings.list().len(),
    };
    if d.streams_left > 0 || d.recordings_left > 0 {
        warn!(
            streams = d.streams_left,
            recordings = d.recordings_left,
            "shutdown: not everything ended in time"
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flag_flips_once_and_wakes_waiters() {
        let s = Shutdown::default();
        assert!(!s.is_stopping());
        let waiter = s.stopping();
        assert!(s.begin());
        assert!(!s.begin(), "a second begin reports it had begun");
        assert!(s.is_stopping());
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("waiter woke");
        // A late waiter resolves at once.
        tokio::time::timeout(Duration::from_secs(1), s.stopping()).await.expect("late waiter");
    }
}
