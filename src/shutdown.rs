//! Graceful shutdown on SIGTERM (`docker stop`) and SIGINT (Ctrl-C).
//!
//! actix-web's own signal handling is turned off on every server (it would stop the servers at
//! once and wait up to 30 s for open WebSockets). Instead, on the first signal:
//! 1. stop accepting connections on every port (the servers are paused) and flag the shutdown
//!    ([`sluice_actors::shutdown::Shutdown`]), so sessions refuse new streams;
//! 2. end every stream and finish every recording
//!    ([`sluice_actors::shutdown::drain`], at most [`DRAIN_TIMEOUT`]): viewers get STOPPED and
//!    publishers UNPUBLISHED, both with info "Server shutdown", and each session closes its
//!    WebSocket (1001) once its streams have ended;
//! 3. stop the HTTP servers, which give connections still open [`HTTP_STOP_TIMEOUT_SECS`] more;
//!    `main` then stops the arbiters and the process exits 0.
//!
//! The whole stays under 10 s ([`DRAIN_TIMEOUT`] + [`HTTP_STOP_TIMEOUT_SECS`] = 8 s), inside
//! Docker's default 10 s grace before SIGKILL. A second signal exits at once with code 1.
//! The signal handlers are installed before the server reports ready, so a SIGTERM that comes
//! right after the ready line is handled like any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

use sluice_actors::Core;

/// Longest wait for streams to end and recordings to be finished.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(6);
/// What the HTTP servers give connections still open after the drain (keep-alive REST and web
/// clients, a WebSocket whose session did not close), in seconds, before dropping them.
pub const HTTP_STOP_TIMEOUT_SECS: u64 = 2;

/// SIGTERM and SIGINT, listened for from creation on.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Install the handlers. Call inside the runtime, before the server says it is ready.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Wait for a signal, then shut down gracefully (see the module docs). Runs on the system
/// arbiter; every wait is async.
pub async fn on_signal(mut signals: Signals, core: Arc<Core>, servers: Vec<ServerHandle>) {
    let sig = signals.next().await;
    let began = Instant::now();
    info!(signal = sig, "shutting down: no new connections, ending every stream");
    core.shutdown.begin();
    actix_web::rt::spawn(async move {
        let sig = signals.next().await;
        warn!(signal = sig, "second signal: exiting now, recordings may be unfinished");
        std::process::exit(1);
    });
    futures_util::future::join_all(servers.iter().map(|s| s.pause())).await;
    let drained = sluice_actors::shutdown::drain(&core, DRAIN_TIMEOUT).await;
    info!(
        viewers = drained.viewers,
        sources = drained.sources,
        took = format_args!("{:.2}s", began.elapsed().as_secs_f64()),
        "streams ended, recordings finished; stopping the servers"
    );
    futures_util::future::join_all(servers.iter().map(|s| s.stop(true))).await;
    info!(took = format_args!("{:.2}s", began.elapsed().as_secs_f64()), "stopped");
}
