//! Configuration: command-line flags, `SLUICE_*` environment variables and an optional TOML
//! file. Precedence: flag > environment > file > built-in default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;
use sluice_actors::auth::AuthConfig;
use sluice_actors::limits::LimitConfig;
use sluice_actors::rtsp::{HostPattern, RtspPolicy, RtspTransport};
use sluice_actors::turn_core::{Cidr, Secret, StaticUser, TurnConfig};
use std::time::Duration;

/// The range `--nack-history-ms` (and `nack_history_ms` in the config file) accepts.
const NACK_HISTORY_MS: std::ops::RangeInclusive<u64> = 20..=5000;

#[derive(Parser, Debug, Default)]
#[command(
    name = "sluice",
    version,
    about = "sluice: a WebRTC media server that speaks the Flashphoner WCS protocol",
    long_about = "sluice: a WebRTC media server that speaks the Flashphoner WCS protocol.\n\n\
Browsers publish live streams by name over WebSocket signalling (port 8080, any path) and any \
number of browsers play them. REST API on 8081 under /rest-api, demo pages on 9091. All media \
goes through ONE UDP port (ICE-TCP on the same number).\n\n\
Every flag can also be set with its SLUICE_* environment variable or in the TOML file given by \
--config (keys as the flag names with '_' for '-', e.g. ws_port = 8080)."
)]
pub struct Cli {
    /// TOML configuration file
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Ask the running server's /health on the REST port (same flags, environment and file)
    /// and exit 0 if it answers 200, 1 otherwise; for container health checks
    #[arg(long)]
    pub health_check: bool,
    /// Address to listen on for every port [default: 0.0.0.0, all interfaces]
    #[arg(long, env = "SLUICE_BIND")]
    pub bind: Option<IpAddr>,
    /// WebSocket signalling port (WCS protocol, any path) [default: 8080]
    #[arg(long, env = "SLUICE_WS_PORT")]
    pub ws_port: Option<u16>,
    /// REST API port (/rest-api/...) [default: 8081]
    #[arg(long, env = "SLUICE_REST_PORT")]
    pub rest_port: Option<u16>,
    /// Web port: demo pages, SDK, records [default: 9091]
    #[arg(long, env = "SLUICE_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// The single media port, UDP and ICE-TCP [default: 31000]
    #[arg(long, env = "SLUICE_MEDIA_PORT")]
    pub media_port: Option<u16>,
    /// Threads that carry viewers' media (viewers are spread over them; publishers and the
    /// media socket run on the first) [default: the number of CPU cores]
    #[arg(long, env = "SLUICE_MEDIA_THREADS")]
    pub media_threads: Option<usize>,
    /// Address written into ICE candidates; browsers send media there. Behind NAT or in a
    /// container, set the host's public address. Repeatable (environment: comma-separated), one
    /// host candidate each, e.g. a LAN and a WAN address [default: the host's primary address]
    #[arg(long = "public-ip", env = "SLUICE_PUBLIC_IP", value_delimiter = ',', value_name = "IP")]
    pub public_ip: Vec<IpAddr>,
    /// Relayed address the TURN server reports to clients [default: the first --public-ip]
    #[arg(long, env = "SLUICE_TURN_PUBLIC_IP")]
    pub turn_public_ip: Option<IpAddr>,
    /// Folder for the server's own state: the generated TLS certificate [default: data]
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM) for https and wss; reloaded when the file changes. Without
    /// it, a self-signed certificate is generated at first start and kept in the data folder
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching --tls-cert
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Turn off https and wss (demo pages then get no camera outside localhost)
    #[arg(long, env = "SLUICE_NO_TLS")]
    pub no_tls: bool,
    /// Secure WebSocket signalling port (wss://) [default: 8443]
    #[arg(long, env = "SLUICE_WSS_PORT")]
    pub wss_port: Option<u16>,
    /// https port of the demo pages, SDK and records [default: 8888]
    #[arg(long, env = "SLUICE_HTTPS_PORT")]
    pub https_port: Option<u16>,
    /// https port of the REST API [default: 8444]
    #[arg(long, env = "SLUICE_REST_HTTPS_PORT")]
    pub rest_https_port: Option<u16>,
    /// Folder of media files for VOD [default: media]
    #[arg(long, env = "SLUICE_MEDIA_DIR")]
    pub media_dir: Option<PathBuf>,
    /// Folder where recordings are written [default: media/records]
    #[arg(long, env = "SLUICE_RECORDS_DIR")]
    pub records_dir: Option<PathBuf>,
    /// Recording file name template; placeholders as WCS: {streamName} {mediaSessionId}
    /// {sessionId} {login} {audioCodec} {videoCodec} {startTime} {endTime} (Unix s)
    /// {startTimeMillis} {endTimeMillis} (Unix ms) {duration} (ms). Unsafe characters become
    /// '_', '.mp4' is appended if missing [default: {streamName}-{startTimeMillis}.mp4]
    #[arg(long, env = "SLUICE_RECORD_TEMPLATE")]
    pub record_template: Option<String>,
    /// Folder served on the web port [default: static]
    #[arg(long, env = "SLUICE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Do not offer ICE-TCP candidates (UDP only)
    #[arg(long, env = "SLUICE_NO_ICE_TCP")]
    pub no_ice_tcp: bool,
    /// Turn off the embedded TURN server
    #[arg(long, env = "SLUICE_NO_TURN")]
    pub no_turn: bool,
    /// TURN port, UDP and TCP [default: 3478]
    #[arg(long, env = "SLUICE_TURN_PORT")]
    pub turn_port: Option<u16>,
    /// A second TURN port, TCP only, for clients behind firewalls that allow little else
    /// (e.g. 443) [default: none]
    #[arg(long, env = "SLUICE_TURN_TCP_PORT")]
    pub turn_tcp_port: Option<u16>,
    /// A static TURN user, name:password; repeat the flag for more (environment: comma-separated)
    #[arg(
        long = "turn-user",
        env = "SLUICE_TURN_USER",
        value_delimiter = ',',
        value_name = "NAME:PASSWORD",
        hide_env_values = true
    )]
    pub turn_user: Vec<StaticUser>,
    /// Shared secret of TURN REST API time-limited credentials (username "expiry:user", password
    /// base64(HMAC-SHA1(secret, username))), also used by /rest-api/turn/credentials
    /// [default: a random secret per start]
    #[arg(long, env = "SLUICE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<Secret>,
    /// TURN realm [default: sluice]
    #[arg(long, env = "SLUICE_TURN_REALM")]
    pub turn_realm: Option<String>,
    /// Also let relays reach this network (CIDR); repeatable. By default they reach the server's
    /// own media address and port only (all a browser talking to this server needs);
    /// '0.0.0.0/0' (and '::/0') opens every address but unspecified, multicast, broadcast and
    /// the TURN ports themselves, loopback and private ranges included
    #[arg(
        long = "turn-allow-peer",
        env = "SLUICE_TURN_ALLOW_PEER",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub turn_allow_peer: Vec<Cidr>,
    /// TURN allocations one user may hold at once [default: 64]
    #[arg(long, env = "SLUICE_TURN_USER_QUOTA")]
    pub turn_user_quota: Option<u32>,
    /// TURN allocations the server holds at most [default: 2000]
    #[arg(long, env = "SLUICE_TURN_MAX_ALLOCATIONS")]
    pub turn_max_allocations: Option<u32>,
    /// Relayed bandwidth per TURN user, kbit/s, both directions; 0: unlimited [default: 20000]
    #[arg(long, env = "SLUICE_TURN_USER_KBPS")]
    pub turn_user_kbps: Option<u64>,
    /// Lifetime of credentials from /rest-api/turn/credentials, seconds [default: 3600]
    #[arg(long, env = "SLUICE_TURN_CREDENTIAL_TTL")]
    pub turn_credential_ttl: Option<u64>,
    /// Credentials /rest-api/turn/credentials hands one client address per minute (10 at once
    /// at most); beyond, 429 with Retry-After; 0: unlimited [default: 30]
    #[arg(long, env = "SLUICE_TURN_CREDENTIAL_RATE", value_name = "PER_MINUTE")]
    pub turn_credential_rate: Option<u32>,
    /// RTMP ingest port: encoders publish rtmp://host:PORT/<app>/<streamName> [default: 1935]
    #[arg(long, env = "SLUICE_RTMP_PORT")]
    pub rtmp_port: Option<u16>,
    /// Turn off RTMP ingest
    #[arg(long, env = "SLUICE_NO_RTMP")]
    pub no_rtmp: bool,
    /// HLS and Low-Latency HLS port: every stream at http://host:PORT/<name>/<name>.m3u8
    /// [default: 8082]
    #[arg(long, env = "SLUICE_HLS_PORT")]
    pub hls_port: Option<u16>,
    /// Turn off HLS
    #[arg(long, env = "SLUICE_NO_HLS")]
    pub no_hls: bool,
    /// Hosts that rtsp:// play names may pull from: a host name ('*' as wildcard:
    /// '*.cams.example.com'), an address pattern ('192.168.1.*', 'fd00::*') or a CIDR
    /// ('192.168.1.0/24'); repeatable (environment: comma-separated). Names match the URL's
    /// host, address patterns every address it resolves to. Others fail with "Restricted
    /// access"; '*' allows any host. [default: hosts whose every address is public: never
    /// loopback, private, link-local, CGNAT or other special ranges]
    #[arg(long = "rtsp-allow", env = "SLUICE_RTSP_ALLOW", value_delimiter = ',', value_name = "HOST")]
    pub rtsp_allow: Vec<HostPattern>,
    /// RTP transport asked of RTSP cameras: tcp (interleaved) or udp [default: tcp]
    #[arg(long, env = "SLUICE_RTSP_TRANSPORT")]
    pub rtsp_transport: Option<RtspTransport>,
    /// Hosts streams may be re-published to over RTMP (rtmpUrl, /rest-api/push/startup), in
    /// the --rtsp-allow syntax; repeatable (environment: comma-separated). [default: hosts
    /// whose every address is public, as for --rtsp-allow]
    #[arg(
        long = "rtmp-push-allow",
        env = "SLUICE_RTMP_PUSH_ALLOW",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub rtmp_push_allow: Vec<HostPattern>,
    /// Hosts streams may be pulled from over WebRTC (/rest-api/pull/pull: another sluice or
    /// WCS), in the --rtsp-allow syntax; repeatable (environment: comma-separated). [default:
    /// hosts whose every address is public, as for --rtsp-allow]
    #[arg(long = "pull-allow", env = "SLUICE_PULL_ALLOW", value_delimiter = ',', value_name = "HOST")]
    pub pull_allow: Vec<HostPattern>,
    /// Shared secret of HS256 tokens (JWT). With it (or --jwks-url), publishing, playing,
    /// recording and snapshots need a token granting them (see README "Access control")
    #[arg(long, env = "SLUICE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS URL with the public keys of RS256/ES256/EdDSA tokens, fetched at start and then
    /// every --jwks-refresh seconds in the background
    #[arg(long, env = "SLUICE_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Seconds between JWKS fetches [default: 300]
    #[arg(long, env = "SLUICE_JWKS_REFRESH")]
    pub jwks_refresh: Option<u64>,
    /// Required `aud` claim of tokens
    #[arg(long, env = "SLUICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim of tokens
    #[arg(long, env = "SLUICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// WCS REST hooks: the application server's base URL; POST <url>/connect, /publishStream,
    /// /playStream decide on each connection and stream (200 allows)
    #[arg(long, env = "SLUICE_HOOK_URL")]
    pub hook_url: Option<String>,
    /// Secret for the X-Sluice-Signature (HMAC-SHA256) header of hook requests
    #[arg(long, env = "SLUICE_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,
    /// Milliseconds the application server has to answer; no answer declines [default: 3000]
    #[arg(long, env = "SLUICE_HOOK_TIMEOUT_MS")]
    pub hook_timeout_ms: Option<u64>,
    /// A key for the management REST API and metrics (`Authorization: Bearer KEY`); repeatable
    /// (environment: comma-separated). Without keys or --api-allow, only this host's clients
    /// may use them
    #[arg(long = "api-key", env = "SLUICE_API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<String>,
    /// A network (CIDR) whose clients may use the management REST API and metrics without a
    /// key; repeatable (environment: comma-separated)
    #[arg(long = "api-allow", env = "SLUICE_API_ALLOW", value_delimiter = ',', value_name = "CIDR")]
    pub api_allow: Vec<Cidr>,
    /// WebSocket sessions one client address may hold at once; 0: unlimited [default: 100]
    #[arg(long, env = "SLUICE_MAX_SESSIONS_PER_IP")]
    pub max_sessions_per_ip: Option<usize>,
    /// Streams published at once on this server; 0: unlimited [default: 1000]
    #[arg(long, env = "SLUICE_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Viewers of one stream; 0: unlimited [default: 1000]
    #[arg(long, env = "SLUICE_MAX_VIEWERS_PER_STREAM")]
    pub max_viewers_per_stream: Option<usize>,
    /// WebSocket messages per second one session may send (bursts of twice as many pass);
    /// 0: unlimited [default: 50]
    #[arg(long, env = "SLUICE_MAX_MESSAGES_PER_SEC")]
    pub max_messages_per_sec: Option<u32>,
    /// Video kbit/s a WebRTC publisher may send: above it for 3 s its stream ends FAILED, and
    /// the media port drops what any one client sends beyond 1.5 times it; 0: unlimited
    /// [default: 20000]
    #[arg(long, env = "SLUICE_MAX_PUBLISH_KBPS")]
    pub max_publish_kbps: Option<u32>,
    /// Leave the stream name out of /metrics labels (per-stream series are unbounded)
    #[arg(long, env = "SLUICE_NO_METRICS_STREAM_NAMES")]
    pub no_metrics_stream_names: bool,
    /// Estimate no bandwidth towards viewers: no transport-wide congestion control is
    /// negotiated with them, so a viewer on a slow link is not moved to a lower layer, and each
    /// viewer costs about half the CPU and memory (BENCHMARKS.md)
    #[arg(long, env = "SLUICE_NO_VIEWER_BWE")]
    pub no_viewer_bwe: bool,
    /// Queue what a media thread sends until it goes idle (at most 2 ms) and send it in
    /// `sendmmsg` batches: ~10 % less CPU per packet on a dedicated machine, but worse delivery
    /// when the machine's CPU is contended (BENCHMARKS.md, "Sends batched per media thread")
    #[arg(long, env = "SLUICE_BATCHED_SENDS")]
    pub batched_sends: bool,
    /// How long video sent to a viewer is kept to answer its retransmission requests (NACK)
    /// once it has sent one (from the next keyframe on), in ms, up to 128 packets (before: 500
    /// ms, or this if shorter). Shorter saves memory on lossy viewers and repairs less on very
    /// lossy links [default: 3000]
    #[arg(long, env = "SLUICE_NACK_HISTORY_MS", value_parser = clap::value_parser!(u64).range(NACK_HISTORY_MS))]
    pub nack_history_ms: Option<u64>,
    /// Join a cluster: the Redis every node shares (`redis://[:password@]host:6379[/db]`).
    /// Names are then unique across the cluster and a stream published on any node plays on
    /// every node (see README "Cluster") [default: off, a single node]
    #[arg(long, env = "SLUICE_CLUSTER_REDIS", value_name = "URL", hide_env_values = true)]
    pub cluster_redis: Option<String>,
    /// The secret every node of the cluster shares (at least 16 characters): signs the tokens
    /// of node-to-node pulls
    #[arg(long, env = "SLUICE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// This node's id in the cluster [default: <first public ip>:<ws port>]
    #[arg(long, env = "SLUICE_CLUSTER_NODE_ID")]
    pub cluster_node_id: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a signed token (HS256, the server's --jwt-secret / SLUICE_JWT_SECRET) with grants
    Token(TokenArgs),
}

/// `sluice token`: what the token grants. Stream patterns take `*` as wildcard.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The shared secret (the server's --jwt-secret)
    #[arg(long, env = "SLUICE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Who the token is for (`sub`)
    #[arg(long)]
    pub sub: Option<String>,
    /// Lifetime in seconds
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Stream names it may publish (repeatable)
    #[arg(long)]
    pub publish: Vec<String>,
    /// Stream names it may play (repeatable)
    #[arg(long)]
    pub play: Vec<String>,
    /// Stream names it may record (repeatable); also lets it download recordings
    #[arg(long)]
    pub record: Vec<String>,
    /// Stream names it may take snapshots of (repeatable)
    #[arg(long)]
    pub snapshot: Vec<String>,
    /// The management REST API
    #[arg(long)]
    pub api: bool,
    /// Metrics
    #[arg(long)]
    pub metrics: bool,
    /// `aud` claim
    #[arg(long)]
    pub aud: Option<String>,
    /// `iss` claim
    #[arg(long)]
    pub iss: Option<String>,
}

/// The same settings as a TOML file holds them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<IpAddr>,
    pub ws_port: Option<u16>,
    pub rest_port: Option<u16>,
    pub http_port: Option<u16>,
    pub media_port: Option<u16>,
    pub media_threads: Option<usize>,
    pub public_ip: Option<OneOrMany<IpAddr>>,
    pub turn_public_ip: Option<IpAddr>,
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub no_tls: Option<bool>,
    pub wss_port: Option<u16>,
    pub https_port: Option<u16>,
    pub rest_https_port: Option<u16>,
    pub media_dir: Option<PathBuf>,
    pub records_dir: Option<PathBuf>,
    pub record_template: Option<String>,
    pub static_dir: Option<PathBuf>,
    pub no_ice_tcp: Option<bool>,
    pub no_turn: Option<bool>,
    pub turn_port: Option<u16>,
    pub turn_tcp_port: Option<u16>,
    pub turn_user: Option<Vec<StaticUser>>,
    pub turn_secret: Option<Secret>,
    pub turn_realm: Option<String>,
    pub turn_allow_peer: Option<Vec<Cidr>>,
    pub turn_user_quota: Option<u32>,
    pub turn_max_allocations: Option<u32>,
    pub turn_user_kbps: Option<u64>,
    pub turn_credential_ttl: Option<u64>,
    pub turn_credential_rate: Option<u32>,
    pub rtmp_port: Option<u16>,
    pub no_rtmp: Option<bool>,
    pub hls_port: Option<u16>,
    pub no_hls: Option<bool>,
    pub rtsp_allow: Option<Vec<HostPattern>>,
    pub rtsp_transport: Option<RtspTransport>,
    pub rtmp_push_allow: Option<Vec<HostPattern>>,
    pub pull_allow: Option<Vec<HostPattern>>,
    pub jwt_secret: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<u64>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub hook_url: Option<String>,
    pub hook_secret: Option<String>,
    pub hook_timeout_ms: Option<u64>,
    pub api_key: Option<Vec<String>>,
    pub api_allow: Option<Vec<Cidr>>,
    pub max_sessions_per_ip: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_viewers_per_stream: Option<usize>,
    pub max_messages_per_sec: Option<u32>,
    pub max_publish_kbps: Option<u32>,
    pub no_metrics_stream_names: Option<bool>,
    pub no_viewer_bwe: Option<bool>,
    pub batched_sends: Option<bool>,
    pub nack_history_ms: Option<u64>,
    pub cluster_redis: Option<String>,
    pub cluster_secret: Option<String>,
    pub cluster_node_id: Option<String>,
}

/// A file setting that takes one value or a list (`public_ip = "a"` or `["a", "b"]`).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// https and wss: where the certificate comes from and the ports.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// An operator's certificate and key (PEM); None: the generated self-signed one.
    pub files: Option<(PathBuf, PathBuf)>,
    pub wss_port: u16,
    pub https_port: u16,
    pub rest_https_port: u16,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub ws_port: u16,
    pub rest_port: u16,
    pub http_port: u16,
    pub media_port: u16,
    /// Media threads (at least 1): viewers are spread over them.
    pub media_threads: usize,
    /// The addresses written into ICE candidates (at least one), in the order given.
    pub public_ips: Vec<IpAddr>,
    /// True when `public_ips` was detected, not configured.
    pub public_ip_detected: bool,
    /// The relayed address TURN reports.
    pub turn_public_ip: IpAddr,
    pub data_dir: PathBuf,
    /// None when turned off.
    pub tls: Option<TlsSettings>,
    pub media_dir: PathBuf,
    pub records_dir: PathBuf,
    pub record_template: String,
    pub static_dir: PathBuf,
    pub ice_tcp: bool,
    /// The embedded TURN server; None when turned off.
    pub turn: Option<TurnConfig>,
    /// The RTMP ingest port; None when turned off.
    pub rtmp_port: Option<u16>,
    /// The HLS port; None when turned off.
    pub hls_port: Option<u16>,
    /// What rtsp:// play names may pull, and how.
    pub rtsp: RtspPolicy,
    /// Where streams may be re-published over RTMP.
    pub rtmp_push: sluice_actors::push::pusher::PushPolicy,
    /// Hosts streams may be pulled from over WebRTC.
    pub pull_allow: Vec<HostPattern>,
    /// Access control.
    pub auth: AuthConfig,
    /// Limits against abuse.
    pub limits: LimitConfig,
    /// Stream names as /metrics labels.
    pub metrics_stream_names: bool,
    /// Send-side bandwidth estimation towards viewers that offer transport-wide CC.
    pub viewer_bwe: bool,
    /// Media threads queue their UDP sends and send them in batches.
    pub batched_sends: bool,
    /// ms of video kept per viewer to answer NACKs.
    pub nack_history_ms: u64,
    /// The cluster this node joins; None: a single node.
    pub cluster: Option<sluice_actors::cluster::ClusterConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error(transparent)]
    Cluster(#[from] sluice_actors::cluster::ClusterSetupError),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(mut cli: Cli) -> Result<Config, ConfigError> {
        let mut file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?
            }
            None => FileConfig::default(),
        };
        let turn = turn_config(&mut cli, &mut file);
        let media_dir = cli.media_dir.or(file.media_dir).unwrap_or_else(|| "media".into());
        let mut public_ips = if cli.public_ip.is_empty() {
            file.public_ip.map(OneOrMany::into_vec).unwrap_or_default()
        } else {
            cli.public_ip
        };
        let public_ip_detected = public_ips.is_empty();
        if public_ip_detected {
            public_ips.push(primary_address());
        }
        let tls = (!(cli.no_tls || file.no_tls.unwrap_or(false))).then(|| TlsSettings {
            files: match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
            wss_port: cli.wss_port.or(file.wss_port).unwrap_or(8443),
            https_port: cli.https_port.or(file.https_port).unwrap_or(8888),
            rest_https_port: cli.rest_https_port.or(file.rest_https_port).unwrap_or(8444),
        });
        let cluster = match cli.cluster_redis.take().or(file.cluster_redis.take()) {
            Some(redis_url) => {
                let c = sluice_actors::cluster::ClusterConfig {
                    redis_url,
                    secret: cli.cluster_secret.take().or(file.cluster_secret.take()).unwrap_or_default(),
                    node_id: cli.cluster_node_id.take().or(file.cluster_node_id.take()),
                };
                c.check()?;
                Some(c)
            }
            None => None,
        };
        let auth = AuthConfig {
            cluster_secret: cluster.as_ref().map(|c| c.secret.clone()),
            jwt_secret: cli.jwt_secret.take().or(file.jwt_secret.take()),
            jwks_url: cli.jwks_url.take().or(file.jwks_url.take()),
            jwks_refresh: Duration::from_secs(cli.jwks_refresh.or(file.jwks_refresh).unwrap_or(300)),
            jwt_audience: cli.jwt_audience.take().or(file.jwt_audience.take()),
            jwt_issuer: cli.jwt_issuer.take().or(file.jwt_issuer.take()),
            hook_url: cli.hook_url.take().or(file.hook_url.take()),
            hook_secret: cli.hook_secret.take().or(file.hook_secret.take()),
            hook_timeout: Duration::from_millis(cli.hook_timeout_ms.or(file.hook_timeout_ms).unwrap_or(3000)),
            api_keys: if cli.api_key.is_empty() {
                file.api_key.take().unwrap_or_default()
            } else {
                std::mem::take(&mut cli.api_key)
            },
            api_allow: if cli.api_allow.is_empty() {
                file.api_allow.take().unwrap_or_default()
            } else {
                std::mem::take(&mut cli.api_allow)
            },
        };
        let d = LimitConfig::default();
        let limits = LimitConfig {
            sessions_per_ip: cli
                .max_sessions_per_ip
                .or(file.max_sessions_per_ip)
                .unwrap_or(d.sessions_per_ip),
            streams: cli.max_streams.or(file.max_streams).unwrap_or(d.streams),
            viewers_per_stream: cli
                .max_viewers_per_stream
                .or(file.max_viewers_per_stream)
                .unwrap_or(d.viewers_per_stream),
            messages_per_sec: cli
                .max_messages_per_sec
                .or(file.max_messages_per_sec)
                .unwrap_or(d.messages_per_sec),
            publish_kbps: cli.max_publish_kbps.or(file.max_publish_kbps).unwrap_or(d.publish_kbps),
        };
        Ok(Config {
            cluster,
            auth,
            limits,
            metrics_stream_names: !(cli.no_metrics_stream_names
                || file.no_metrics_stream_names.unwrap_or(false)),
            viewer_bwe: !(cli.no_viewer_bwe || file.no_viewer_bwe.unwrap_or(false)),
            batched_sends: cli.batched_sends || file.batched_sends.unwrap_or(false),
            nack_history_ms: match cli.nack_history_ms.or(file.nack_history_ms) {
                Some(ms) if !NACK_HISTORY_MS.contains(&ms) => {
                    let (lo, hi) = (NACK_HISTORY_MS.start(), NACK_HISTORY_MS.end());
                    return Err(ConfigError::Invalid(format!(
                        "nack_history_ms = {ms}: must be {lo} to {hi}"
                    )));
                }
                ms => ms.unwrap_or(sluice_actors::engine::DEFAULT_NACK_HISTORY_MS),
            },
            turn_public_ip: cli.turn_public_ip.or(file.turn_public_ip).unwrap_or(public_ips[0]),
            public_ips,
            public_ip_detected,
            data_dir: cli.data_dir.or(file.data_dir).unwrap_or_else(|| "data".into()),
            tls,
            bind: cli.bind.or(file.bind).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ws_port: cli.ws_port.or(file.ws_port).unwrap_or(8080),
            rest_port: cli.rest_port.or(file.rest_port).unwrap_or(8081),
            http_port: cli.http_port.or(file.http_port).unwrap_or(9091),
            media_port: cli.media_port.or(file.media_port).unwrap_or(31000),
            media_threads: cli
                .media_threads
                .or(file.media_threads)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1),
            records_dir: cli.records_dir.or(file.records_dir).unwrap_or_else(|| media_dir.join("records")),
            record_template: cli
                .record_template
                .or(file.record_template)
                .unwrap_or_else(|| sluice_actors::recorder::DEFAULT_TEMPLATE.into()),
            media_dir,
            static_dir: cli.static_dir.or(file.static_dir).unwrap_or_else(|| "static".into()),
            ice_tcp: !(cli.no_ice_tcp || file.no_ice_tcp.unwrap_or(false)),
            turn,
            rtmp_port: (!(cli.no_rtmp || file.no_rtmp.unwrap_or(false)))
                .then(|| cli.rtmp_port.or(file.rtmp_port).unwrap_or(sluice_actors::rtmp::DEFAULT_PORT)),
            hls_port: (!(cli.no_hls || file.no_hls.unwrap_or(false)))
                .then(|| cli.hls_port.or(file.hls_port).unwrap_or(crate::hls::DEFAULT_PORT)),
            rtsp: RtspPolicy {
                allow: if cli.rtsp_allow.is_empty() {
                    file.rtsp_allow.unwrap_or_default()
                } else {
                    cli.rtsp_allow
                },
                transport: cli.rtsp_transport.or(file.rtsp_transport).unwrap_or_default(),
            },
            rtmp_push: sluice_actors::push::pusher::PushPolicy {
                allow: if cli.rtmp_push_allow.is_empty() {
                    file.rtmp_push_allow.unwrap_or_default()
                } else {
                    cli.rtmp_push_allow
                },
            },
            pull_allow: if cli.pull_allow.is_empty() {
                file.pull_allow.unwrap_or_default()
            } else {
                cli.pull_allow
            },
        })
    }

    /// The media socket's candidate addresses.
    pub fn media_candidates(&self, media_port: u16) -> Vec<SocketAddr> {
        self.public_ips.iter().map(|ip| SocketAddr::new(*ip, media_port)).collect()
    }

    /// The first advertised address: where the printed demo URL points.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ips[0]
    }

    /// Why the advertised address may not reach browsers on other machines, if it may not.
    pub fn public_ip_warning(&self) -> Option<String> {
        let ip = self.public_ip();
        let private = match ip {
            IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
        };
        if !self.public_ip_detected || !(ip.is_loopback() || private) {
            return None;
        }
        let kind = if ip.is_loopback() { "a loopback" } else { "a private" };
        Some(format!(
            "the detected address {ip} is {kind} address: browsers on other networks cannot reach it; \
             behind NAT or in a container set --public-ip (SLUICE_PUBLIC_IP) to the public address"
        ))
    }
}

/// The TURN settings: flag or environment, then file, then default (lists: the flag's when
/// given, else the file's).
fn turn_config(cli: &mut Cli, file: &mut FileConfig) -> Option<TurnConfig> {
    if cli.no_turn || file.no_turn.unwrap_or(false) {
        return None;
    }
    let d = TurnConfig::default();
    fn list<T>(c: &mut Vec<T>, f: &mut Option<Vec<T>>) -> Vec<T> {
        if c.is_empty() {
            f.take().unwrap_or_default()
        } else {
            std::mem::take(c)
        }
    }
    Some(TurnConfig {
        port: cli.turn_port.or(file.turn_port).unwrap_or(d.port),
        tcp_port: cli.turn_tcp_port.or(file.turn_tcp_port),
        realm: cli.turn_realm.take().or(file.turn_realm.take()).unwrap_or(d.realm),
        users: list(&mut cli.turn_user, &mut file.turn_user),
        secret: cli.turn_secret.take().or(file.turn_secret.take()),
        allow_peers: list(&mut cli.turn_allow_peer, &mut file.turn_allow_peer),
        user_quota: cli.turn_user_quota.or(file.turn_user_quota).unwrap_or(d.user_quota),
        max_allocations: cli.turn_max_allocations.or(file.turn_max_allocations).unwrap_or(d.max_allocations),
        user_kbps: cli.turn_user_kbps.or(file.turn_user_kbps).unwrap_or(d.user_kbps),
        credential_ttl: cli.turn_credential_ttl.or(file.turn_credential_ttl).unwrap_or(d.credential_ttl),
        credential_rate: cli.turn_credential_rate.or(file.turn_credential_rate).unwrap_or(d.credential_rate),
    })
}

/// The address the host would use to reach the internet, found by asking the routing table
/// (`connect` on a UDP socket sends nothing). Falls back to 127.0.0.1 on a host with no route.
pub fn primary_address() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?; // TEST-NET-1: only the route lookup matters
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "ws_port = 1000\nrest_port = 1001\npublic_ip = \"10.0.0.1\"\n").unwrap();
        let cli = Cli { config: Some(f.clone()), ws_port: Some(2000), ..Default::default() };
        let c = Config::load(cli).unwrap();
        assert_eq!((c.ws_port, c.rest_port, c.http_port), (2000, 1001, 9091));
        assert_eq!(c.public_ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(!c.public_ip_detected && c.public_ip_warning().is_none());
        assert_eq!(c.turn_public_ip.to_string(), "10.0.0.1");
        std::fs::write(&f, "public_ip = [\"10.0.0.1\", \"203.0.113.5\"]\n").unwrap();
        let c = Config::load(Cli { config: Some(f.clone()), ..Default::default() }).unwrap();
        assert_eq!(c.media_candidates(9).len(), 2);
        let cli = Cli::parse_from([
            "sluice",
            "--public-ip",
            "192.0.2.7",
            "--public-ip",
            "2001:db8::1",
            "--turn-public-ip",
            "192.0.2.8",
        ]);
        let c = Config::load(cli).unwrap();
        assert_eq!(c.media_candidates(31000)[1].to_string(), "[2001:db8::1]:31000");
        assert_eq!(c.turn_public_ip.to_string(), "192.0.2.8");
        let c = Config::load(Cli::default()).unwrap();
        assert!(
            c.public_ip_detected
                && c.tls.as_ref().is_some_and(|t| t.https_port == 8888 && t.wss_port == 8443)
        );
        assert_eq!(c.records_dir, PathBuf::from("media/records"));
        assert_eq!(c.nack_history_ms, 3000);
        std::fs::write(&f, "nack_history_ms = 1000\n").unwrap();
        assert_eq!(
            Config::load(Cli { config: Some(f.clone()), ..Default::default() }).unwrap().nack_history_ms,
            1000
        );
        std::fs::write(&f, "nack_history_ms = 9\n").unwrap();
        let e = Config::load(Cli { config: Some(f.clone()), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("nack_history_ms = 9: must be 20 to 5000"), "{e}");
        assert!(Cli::try_parse_from(["sluice", "--nack-history-ms", "10"]).is_err());
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Config::load(Cli { config: Some(f), ..Default::default() }).is_err());
    }

    #[test]
    fn turn_settings() {
        let t = Config::load(Cli::default()).unwrap().turn.expect("TURN on by default");
        assert_eq!((t.port, t.tcp_port, t.realm.as_str()), (3478, None, "sluice"));
        assert!(t.users.is_empty() && t.secret.is_none() && t.allow_peers.is_empty());
        let dir = std::env::temp_dir().join(format!("sluice-cfg-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "turn_port = 5000\nturn_user = [\"a:pw1\", \"b:pw:2\"]\nturn_allow_peer = [\"127.0.0.0/8\"]\n\
             turn_secret = \"file-secret\"\nturn_user_quota = 3\n",
        )
        .unwrap();
        let t = Config::load(Cli { config: Some(f.clone()), ..Default::default() }).unwrap().turn.unwrap();
        assert_eq!((t.port, t.user_quota), (5000, 3));
        assert_eq!(t.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.users[1].password.expose(), "pw:2");
        assert_eq!(t.allow_peers[0].to_string(), "127.0.0.0/8");
        assert_eq!(t.secret.as_ref().map(|s| s.expose()), Some("file-secret"));
        // A flag's list replaces the file's; nothing secret shows in Debug output.
        let cli = Cli::parse_from([
            "sluice",
            "--config",
            f.to_str().unwrap(),
            "--turn-user",
            "c:pw3",
            "--turn-port",
            "0",
        ]);
        assert!(!format!("{cli:?}").contains("pw3"));
        let c = Config::load(cli).unwrap();
        let t = c.turn.as_ref().unwrap();
        assert_eq!((t.port, t.users.len(), t.users[0].name.as_str()), (0, 1, "c"));
        assert!(!format!("{c:?}").contains("pw3") && !format!("{c:?}").contains("file-secret"));
        assert!(Cli::try_parse_from(["sluice", "--turn-allow-peer", "10.0.0.0/33"]).is_err());
        assert!(Cli::try_parse_from(["sluice", "--turn-user", "nocolon"]).is_err());
        let cli = Cli { config: Some(f), no_turn: true, ..Default::default() };
        assert!(Config::load(cli).unwrap().turn.is_none());
    }

    #[test]
    fn rtmp_and_rtsp_settings() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "rtmp_port = 1940\nrtsp_allow = [\"*.cams.lan\"]\nrtsp_transport = \"udp\"\n")
            .unwrap();
        let c = Config::load(Cli { config: Some(f.clone()), ..Default::default() }).unwrap();
        assert_eq!(c.rtmp_port, Some(1940));
        assert!(c.rtsp.allow[0].matches("door.cams.lan"));
        assert_eq!(c.rtsp.transport, RtspTransport::Udp);
        let cli = Cli { config: Some(f.clone()), no_rtmp: true, ..Default::default() };
        assert_eq!(Config::load(cli).unwrap().rtmp_port, None);
        let c = Config::load(Cli::default()).unwrap();
        assert_eq!((c.rtmp_port, c.rtsp.allow.len(), c.rtsp.transport), (Some(1935), 0, RtspTransport::Tcp));
        std::fs::write(&f, "rtsp_transport = \"quic\"\n").unwrap();
        assert!(Config::load(Cli { config: Some(f), ..Default::default() }).is_err());
    }

    #[test]
    fn hls_settings() {
        assert_eq!(Config::load(Cli::default()).unwrap().hls_port, Some(8082));
        let c = Config::load(Cli { hls_port: Some(18082), ..Default::default() }).unwrap();
        assert_eq!(c.hls_port, Some(18082));
        assert_eq!(Config::load(Cli { no_hls: true, ..Default::default() }).unwrap().hls_port, None);
        let dir = std::env::temp_dir().join(format!("sluice-cfg-hls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "hls_port = 9082\n").unwrap();
        assert_eq!(
            Config::load(Cli { config: Some(f.clone()), ..Default::default() }).unwrap().hls_port,
            Some(9082)
        );
        std::fs::write(&f, "no_hls = true\n").unwrap();
        assert_eq!(Config::load(Cli { config: Some(f), ..Default::default() }).unwrap().hls_port, None);
    }
}
