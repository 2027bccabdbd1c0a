//! sluice: a WebRTC SFU that speaks the Flashphoner WCS protocol.
//!
//! The binary is the front: configuration, the WebSocket signalling port (any path upgrades to a
//! [`Session`] actor), the REST port and the web port with the SDK and demo pages. Everything
//! media lives in the `sluice-actors` crate.

mod config;
mod gate;
mod health_check;
mod hls;
mod rest;
mod shutdown;
mod tls;
mod whip;

use std::sync::Arc;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use clap::Parser;
use tracing::{error, info, warn};

use sluice_actors::media_socket::{LocalRelays, MediaSocket};
use sluice_actors::registry::Registry;
use sluice_actors::session::{Session, MAX_FRAME};
use sluice_actors::{CandidateConfig, Core};

use crate::config::{Cli, Config};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebSocket upgrade on any path: WCS pages put the stream name in the URL path.
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    core: web::Data<Arc<Core>>,
) -> actix_web::Result<HttpResponse> {
    let client = req.peer_addr().map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
    let server = req.app_config().local_addr();
    let id = format!("/{client}/{server}");
    let ip = req.peer_addr().map(|a| a.ip().to_canonical());
    ws::WsResponseBuilder::new(Session::new(core.get_ref().clone(), id, ip), &req, body)
        .frame_size(MAX_FRAME)
        .start()
}

fn cors() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Access-Control-Allow-Origin", "*"))
        .add(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"))
        .add(("Access-Control-Allow-Headers", "content-type, x-requested-with, authorization, x-api-key"))
}

/// An address as the host part of a URL (IPv6 in brackets).
fn url_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// `sluice token`: print an HS256 token with the grants asked for.
fn print_token(a: config::TokenArgs) -> i32 {
    use sluice_actors::auth::{jwt, Claims, Grants, Names};
    let names = |v: Vec<String>| if v.is_empty() { Names::None } else { Names::Patterns(v) };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = Claims {
        sub: a.sub,
        exp: now + a.ttl,
        nbf: None,
        iat: Some(now),
        aud: a.aud,
        iss: a.iss,
        grants: Grants {
            publish: names(a.publish),
            play: names(a.play),
            record: names(a.record),
            snapshot: names(a.snapshot),
            api: a.api,
            metrics: a.metrics,
        },
    };
    match jwt::mint_hs256(&a.secret, &claims) {
        Ok(t) => {
            println!("{t}");
            0
        }
        Err(e) => {
            eprintln!("cannot make a token: {e}");
            2
        }
    }
}

/// Two glibc malloc arenas instead of eight per core: Rust code allocates through mimalloc, but
/// the C libraries (openh264, libopus, aws-lc) use glibc's malloc, which opens an arena per
/// thread that allocates and let memory creep 5 % over 1,000 publish/play cycles (1.6 % with two;
/// BENCHMARKS.md, soak). An operator's `MALLOC_ARENA_MAX` is left alone.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> std::io::Result<()> {
    limit_malloc_arenas();
    rest::stat::started(); // the uptime of `/?action=stat` counts from here
    let mut cli = Cli::parse();
    if let Some(config::Command::Token(args)) = cli.command.take() {
        std::process::exit(print_token(args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            "info,str0m=warn,dimpl=warn,actix_server=warn,stun_types=error,turn_types=error".into()
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let probe_only = cli.health_check;
    let cfg = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            std::process::exit(2);
        }
    };
    if probe_only {
        std::process::exit(health_check::run(&cfg));
    }
    actix_web::rt::System::new().block_on(run(cfg))
}

async fn run(cfg: Config) -> std::io::Result<()> {
    sluice_actors::engine::warm_up();
    let session_logs_dir = cfg.data_dir.join("session-logs");
    for dir in [&cfg.media_dir, &cfg.records_dir, &session_logs_dir] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            error!(dir = %dir.display(), error = %e, "cannot create folder");
        }
    }
    // A volume owned by another user (a container's bind mount) is the usual cause.
    let probe = cfg.records_dir.join(format!(".sluice-write-test-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe)) {
        error!(dir = %cfg.records_dir.display(), error = %e, "records folder not writable");
    }
    // Media actors live on an arbiter (thread) of their own, apart from the web workers.
    let media_arbiter = sluice_actors::media_socket::media_arbiter(cfg.batched_sends);
    // More media threads carry viewers only (publishers and the socket stay on the first).
    let viewer_arbiters: Vec<actix::Arbiter> = (1..cfg.media_threads)
        .map(|_| sluice_actors::media_socket::media_arbiter(cfg.batched_sends))
        .collect();
    // TURN relays reach the media socket from this host (see LocalRelays).
    let relay_local = sluice_actors::media_socket::local_ip(cfg.bind, cfg.turn_public_ip.is_ipv4());
    let relays = cfg.turn.as_ref().map(|_| LocalRelays::new(relay_local, cfg.turn_public_ip));
    let socket = MediaSocket::start(
        cfg.bind,
        cfg.media_port,
        &cfg.public_ips,
        relays.clone(),
        &media_arbiter.handle(),
    )
    .map_err(|e| std::io::Error::new(e.kind(), format!("media port {}: {e}", cfg.media_port)))?;
    let media_port = socket.local_addr().port();
    socket.set_publish_limit(u64::from(cfg.limits.publish_kbps) * 1000);
    sluice_actors::engine::set_viewer_bwe(cfg.viewer_bwe);
    sluice_actors::engine::set_nack_history(cfg.nack_history_ms);
    let registry = Registry::new();
    let snapshots = sluice_actors::snapshot::start(registry.clone(), &media_arbiter.handle());
    // Recorders write files: on an arbiter of their own, never on the media arbiter.
    let record_arbiter = actix::Arbiter::new();
    let recordings = sluice_actors::recorder::Recordings::new(
        cfg.records_dir.clone(),
        cfg.record_template.clone(),
        record_arbiter.handle(),
        registry.clone(),
    );
    // VOD sources (file reads, AAC transcoding) get an arbiter of their own.
    let vod_arbiter = actix::Arbiter::new();
    // RTMP connections and RTSP pulls (ingest IO, AAC transcoding): the ingest arbiter.
    let ingest_arbiter = actix::Arbiter::new();
    let rtsp =
        sluice_actors::rtsp::RtspPulls::new(cfg.rtsp.clone(), ingest_arbiter.handle(), registry.clone());
    let pushes = sluice_actors::push::pusher::Pushes::new(
        cfg.rtmp_push.clone(),
        ingest_arbiter.handle(),
        registry.clone(),
    );
    let rtmp_port = match cfg.rtmp_port {
        Some(p) => {
            let bind = std::net::SocketAddr::new(cfg.bind, p);
            let addr = sluice_actors::rtmp::start(bind, &ingest_arbiter.handle(), registry.clone())
                .map_err(|e| std::io::Error::new(e.kind(), format!("RTMP port {p}: {e}")))?;
            addr.port()
        }
        None => 0,
    };
    let auth = match sluice_actors::auth::Authorizer::new(&cfg.auth) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            error!("{e}");
            return Err(std::io::Error::other(e));
        }
    };
    // The first JWKS fetch (when configured) before the first client.
    auth.start_jwks_refresh();
    let pulls = sluice_actors::pull::Pulls::new(
        cfg.pull_allow.clone(),
        media_arbiter.handle(),
        registry.clone(),
        socket.clone(),
        cfg.media_candidates(media_port),
    );
    // The cluster (--cluster-redis): its Redis loop on an arbiter of its own.
    let cluster_arbiter = actix::Arbiter::new();
    let cluster = cfg.cluster.clone().map(|c| {
        sluice_actors::cluster::Cluster::new(
            c,
            registry.clone(),
            pulls.clone(),
            socket.clone(),
            cluster_arbiter.handle(),
            Box::new(|| rest::metrics::process_stats().0),
        )
    });
    let core = Arc::new(Core {
        cluster: cluster.clone(),
        auth,
        limits: Arc::new(sluice_actors::limits::Limits::new(cfg.limits)),
        registry,
        snapshots,
        recordings,
        media_dir: cfg.media_dir.clone(),
        vod_arbiter: vod_arbiter.handle(),
        vod: Arc::new(sluice_actors::vod::VodCatalog::with_cache(sluice_actors::vod_cache::VodCache::new(
            cfg.data_dir.join("vod-cache"),
        ))),
        rtsp,
        pulls,
        pushes,
        socket,
        media_arbiter: media_arbiter.handle(),
        viewer_arbiters: std::iter::once(media_arbiter.handle())
            .chain(viewer_arbiters.iter().map(|a| a.handle()))
            .collect(),
        next_viewer: Default::default(),
        candidates: CandidateConfig { addrs: cfg.media_candidates(media_port), tcp: cfg.ice_tcp },
        session_logs_dir,
        shutdown: Default::default(),
        whip: Default::default(),
    });
    let data = web::Data::new(core.clone());
    // The embedded TURN server, on an arbiter of its own.
    let turn_arbiter = actix::Arbiter::new();
    let turn = match &cfg.turn {
        Some(t) => {
            let site = sluice_actors::turn::TurnSite {
                bind: cfg.bind,
                public_ip: cfg.turn_public_ip,
                media: core.candidates.addrs.clone(),
                media_local: core.socket.reachable_locally(cfg.turn_public_ip.is_ipv4()),
                relays: relays.clone(),
            };
            let h = sluice_actors::turn::start(t, &site, &turn_arbiter.handle())
                .map_err(|e| std::io::Error::new(e.kind(), format!("TURN port {}: {e}", t.port)))?;
            Some(h)
        }
        None => None,
    };
    let turn_port = turn.as_ref().map(|t| t.udp.port()).unwrap_or(0);
    // HLS muxers (one per stream played over HLS) on an arbiter of their own.
    let hls_arbiter = actix::Arbiter::new();
    let hls_streams = sluice_actors::hls::HlsStreams::new(core.registry.clone(), hls_arbiter.handle());
    let turn_rest = web::Data::new(rest::TurnRest::new(turn.as_ref()));
    let whip_front = web::Data::new(whip::WhipFront::new(turn.as_ref().map(|t| t.issuer.clone())));

    // https and wss beside http and ws: each server binds its plain port first, then its TLS
    // port, so `addrs()` lists them in that order.
    let tls = match &cfg.tls {
        Some(t) => {
            let names: Vec<std::net::IpAddr> = cfg.public_ips.clone();
            match tls::setup(t.files.clone(), &cfg.data_dir, &names) {
                Ok(tls) => Some((t.clone(), tls)),
                Err(e) => {
                    error!("{e}");
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        }
        None => None,
    };
    // The same server on its TLS port too (a macro: each server's type is its own closure's).
    macro_rules! and_tls {
        ($server:expr, $port:ident) => {
            match &tls {
                Some((t, tls)) => $server
                    .bind_rustls_0_23((cfg.bind, t.$port), tls.config.clone())
                    .map_err(|e| std::io::Error::new(e.kind(), format!("TLS port {}: {e}", t.$port)))?,
                None => $server,
            }
        };
    }
    let d = data.clone();
    let ws_server =
        HttpServer::new(move || App::new().app_data(d.clone()).default_service(web::to(websocket)))
            .workers(2)
            // After a close handshake (a refused connection), drop the socket soon instead of
            // waiting the default second for the client to.
            .client_disconnect_timeout(std::time::Duration::from_millis(100))
            .disable_signals()
            .shutdown_timeout(shutdown::HTTP_STOP_TIMEOUT_SECS)
            .bind((cfg.bind, cfg.ws_port))?;
    let ws_server = and_tls!(ws_server, wss_port);
    let d = data.clone();
    let metrics_names = cfg.metrics_stream_names;
    let wf = whip_front.clone();
    let rest_server = HttpServer::new(move || {
        App::new()
            .app_data(d.clone())
            .app_data(turn_rest.clone())
            .app_data(wf.clone())
            .app_data(web::Data::new(rest::metrics::StreamNames(metrics_names)))
            .wrap(actix_web::middleware::from_fn(gate::rest_gate))
            .wrap(cors())
            // Before the REST routes: their catch-all preflight would answer WHIP's OPTIONS.
            .configure(whip::routes)
            .configure(rest::routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown::HTTP_STOP_TIMEOUT_SECS)
    .bind((cfg.bind, cfg.rest_port))?;
    let rest_server = and_tls!(rest_server, rest_https_port);
    let d = data.clone();
    let (static_dir, records_dir) = (cfg.static_dir.clone(), cfg.records_dir.clone());
    let session_logs_dir = core.session_logs_dir.clone();
    let web_server = HttpServer::new(move || {
        App::new()
            .app_data(d.clone())
            .app_data(whip_front.clone())
            .wrap(actix_web::middleware::from_fn(gate::records_gate))
            .route("/health", web::get().to(rest::health))
            .configure(whip::routes)
            .service(actix_files::Files::new("/client/records", &records_dir))
            .service(actix_files::Files::new(
                &format!("/{}", sluice_actors::debug_log::URL_PATH),
                &session_logs_dir,
            ))
            .service(actix_files::Files::new("/", &static_dir).index_file("index.html"))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown::HTTP_STOP_TIMEOUT_SECS)
    .bind((cfg.bind, cfg.http_port))?;
    let web_server = and_tls!(web_server, https_port);
    // HLS on its own port (WCS 8082), plain http.
    let hls_server = match cfg.hls_port {
        Some(p) => {
            let (streams, auth) = (web::Data::new(hls_streams.clone()), web::Data::new(core.auth.clone()));
            let s = HttpServer::new(move || {
                App::new()
                    .app_data(streams.clone())
                    .app_data(auth.clone())
                    .wrap(hls::cors())
                    .configure(hls::routes)
            })
            .workers(2)
            .disable_signals()
            .shutdown_timeout(shutdown::HTTP_STOP_TIMEOUT_SECS)
            .bind((cfg.bind, p))
            .map_err(|e| std::io::Error::new(e.kind(), format!("HLS port {p}: {e}")))?;
            Some(s)
        }
        None => None,
    };
    let hls_port = hls_server.as_ref().and_then(|s| s.addrs().first().map(|a| a.port())).unwrap_or(0);

    // Our own SIGTERM/SIGINT handling (see shutdown.rs), installed before we say we are ready.
    let signals = shutdown::Signals::install()?;
    // Each server's plain port, then its TLS port (bound in that order).
    let port = |s: &[std::net::SocketAddr], i: usize| s.get(i).map(|a| a.port()).unwrap_or(0);
    let (ws_port, rest_port, http_port) =
        (port(&ws_server.addrs(), 0), port(&rest_server.addrs(), 0), port(&web_server.addrs(), 0));
    let (wss_port, rest_https_port, https_port) =
        (port(&ws_server.addrs(), 1), port(&rest_server.addrs(), 1), port(&web_server.addrs(), 1));
    info!(
        ws = ws_port, rest = rest_port, http = http_port, media = media_port, wss = wss_port,
        https = https_port, rest_https = rest_https_port, public_ips = ?cfg.public_ips,
        "sluice {} started", sluice_actors::VERSION
    );
    if let Some(w) = cfg.public_ip_warning() {
        warn!("{w}");
    }
    if let Some(c) = &cluster {
        c.announce(sluice_actors::cluster::NodeAddress {
            public_ip: cfg.public_ip(),
            ws_port,
            wss_port,
            rest_port,
            http_port,
            https_port,
            media_port,
        });
    }
    if let Some((_, tls)) = &tls {
        info!(cert = %tls.source.cert.display(), self_signed = tls.source.self_signed, "https and wss on");
    }
    // Machine-readable lines on stdout: tests and scripts read the actual ports from the first.
    // Errors are ignored: a closed stdout (a daemon, a reader that went away) must not kill us.
    {
        use std::io::Write;
        let host = url_host(cfg.public_ip());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "sluice ready ws={ws_port} rest={rest_port} http={http_port} media={media_port} turn={turn_port} rtmp={rtmp_port} https={https_port} wss={wss_port} rest_https={rest_https_port} hls={hls_port}"
        );
        let cands: Vec<String> = core
            .candidates
            .addrs
            .iter()
            .flat_map(|a| {
                let tcp = core.candidates.tcp.then(|| format!("tcp {a}"));
                std::iter::once(format!("udp {a}")).chain(tcp)
            })
            .collect();
        let _ = writeln!(out, "ICE candidates: {}", cands.join(", "));
        if let Some(w) = cfg.public_ip_warning() {
            let _ = writeln!(out, "Warning: {w}");
        }
        if tls.is_some() {
            let _ = writeln!(out, "Open the demo: https://{host}:{https_port}/");
            let _ = writeln!(
                out,
                "On this machine also: http://localhost:{http_port}/ (a certificate warning on https is expected: the certificate is self-signed unless --tls-cert is given)"
            );
        } else {
            let _ = writeln!(out, "Open the demo: http://{host}:{http_port}/ (no https: browsers offer the camera on localhost only)");
        }
        let _ = out.flush();
    }

    let (ws_server, rest_server, web_server) = (ws_server.run(), rest_server.run(), web_server.run());
    let mut handles = vec![ws_server.handle(), rest_server.handle(), web_server.handle()];
    let hls_server = hls_server.map(|s| s.run());
    if let Some(s) = &hls_server {
        handles.push(s.handle());
    }
    actix_web::rt::spawn(shutdown::on_signal(signals, core.clone(), handles));
    let hls_done = async move {
        match hls_server {
            Some(s) => s.await,
            None => Ok(()),
        }
    };
    let servers = futures_util::future::try_join4(ws_server, rest_server, web_server, hls_done);
    let res = servers.await.map(|_| ());
    hls_arbiter.stop();
    cluster_arbiter.stop();
    media_arbiter.stop();
    for a in &viewer_arbiters {
        a.stop();
    }
    turn_arbiter.stop();
    record_arbiter.stop();
    vod_arbiter.stop();
    ingest_arbiter.stop();
    res
}
