//! The cluster: many sluice nodes as one service, on one Redis (`--cluster-redis`).
//!
//! ## What it owns
//! [`Cluster`], one per node, shared by the front (`/rest-api/cluster/...`, `/health`) and the
//! play path ([`Cluster::edge_source`]). Its loop ([`Cluster::announce`]) runs on an arbiter of
//! its own and every [`TICK`]:
//! - writes this node's record (addresses, viewers, streams, CPU, bandwidth) with a TTL of
//!   [`NODE_TTL`]: a node that dies leaves the cluster when its record expires;
//! - refreshes the claims of the streams published here (so they expire with the node), and
//!   re-makes them after Redis restarted;
//! - reads every node's record (for `/rest-api/cluster/nodes` and the least-loaded answer);
//! - drops the edge pulls nobody has watched for [`EDGE_IDLE`];
//! - runs the commands other nodes queued for it (a cluster-wide `terminate`).
//!
//! ## Names are unique cluster-wide
//! The registry tells the cluster of each name claimed and released here
//! ([`crate::registry::NameObserver`]). A claim goes to Redis at once (one Lua script: free, ours,
//! or held by a node that is gone → ours). A name another live node publishes is refused: the
//! local publisher is stopped with the WCS info "Stream name is already in use" (before its ICE
//! and DTLS are up on a near Redis, so the client sees FAILED, not PUBLISHING). Names with a
//! scheme (`rtsp://`, `vod://`, `vod-live://`) and the local copies of edge pulls are not
//! claimed: any node may open those.
//!
//! ## Edge pulls
//! A play of a name that is not published here asks Redis which node publishes it, and pulls
//! it from there once ([`crate::pull`], the WCS WebSocket protocol and WebRTC between nodes),
//! as a local source every later viewer here joins. The pull carries a short-lived token
//! signed with the cluster secret (`--cluster-secret`), which the origin accepts in place of a
//! viewer's token or hook decision; the origin's host is allowed for that pull only (not
//! through `--pull-allow`). When the origin's stream ends or its node dies, the pull ends and
//! its viewers get STOPPED "Stopped by publisher stop".
//!
//! ## Redis down
//! Every call is bounded ([`redis::CALL_TIMEOUT`]); local streams go on; `/health` says
//! `"redis": "unreachable"` with the error; the loop re-registers the node and its claims as
//! soon as Redis answers again.

pub mod redis;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::ArbiterHandle;
use dashmap::DashMap;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::auth::{jwt, Claims, Grants, Names};
use crate::media_socket::MediaSocket;
use crate::outbound::HostPattern;
use crate::protocol::info as wcs;
use crate::pull::{PullError, PullRequest, Pulls};
use crate::registry::{Filter, NameObserver, Published, Registry};

use self::redis::Store;

/// How often the node writes its record and refreshes its claims.
pub const TICK: Duration = Duration::from_secs(1);
/// Lifetime of a node's record and of its claims: a node that stops refreshing them (killed,
/// cut off) leaves the cluster this long after its last refresh.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// An edge pull with no viewer for this long is dropped.
pub const EDGE_IDLE: Duration = Duration::from_secs(5);
/// Lifetime of the token an edge pull presents to its origin.
pub const PULL_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The `aud` claim of node-to-node tokens (a viewer's token can never pass for one).
pub const CLUSTER_AUDIENCE: &str = "sluice-cluster";
/// The command that asks a node to stop a stream it publishes (`/rest-api/cluster/terminate`).
const TERMINATE: &str = "terminate ";
/// How often a viewer that joins a pull another viewer started checks whether it plays.
const JOIN_POLL: Duration = Duration::from_millis(50);

/// What the operator configured.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]`
    pub redis_url: String,
    /// Shared by every node: signs node-to-node pull tokens.
    pub secret: String,
    /// This node's id in the cluster; default `<first public ip>:<ws port>`.
    pub node_id: Option<String>,
}

/// Why the cluster cannot start (the server refuses to).
#[derive(Debug, thiserror::Error)]
pub enum ClusterSetupError {
    #[error(
        "--cluster-secret (at least 16 characters, the same on every node) is needed with --cluster-redis"
    )]
    NoSecret,
    #[error("--cluster-redis: {0}")]
    BadUrl(String),
}

impl ClusterConfig {
    pub fn check(&self) -> Result<(), ClusterSetupError> {
        if self.secret.len() < 16 {
            return Err(ClusterSetupError::NoSecret);
        }
        redis::check_url(&self.redis_url).map_err(|e| ClusterSetupError::BadUrl(e.0))
    }
}

/// Where this node is reached, known once its ports are bound.
#[derive(Debug, Clone)]
pub struct NodeAddress {
    pub public_ip: IpAddr,
    pub ws_port: u16,
    pub wss_port: u16,
    pub rest_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    pub media_port: u16,
}

/// A node as Redis holds it (`/rest-api/cluster/nodes` lists these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub id: String,
    pub public_ip: IpAddr,
    /// WebSocket signalling URL (`ws://ip:8080/`): where edges pull from, where clients connect.
    pub ws: String,
    /// `wss://ip:8443/` when TLS is on.
    pub wss: Option<String>,
    pub rest: String,
    pub media_port: u16,
    pub viewers: usize,
    pub published: usize,
    /// Streams published on this node (claimed in Redis).
    pub streams: Vec<String>,
    /// Streams this node pulls from other nodes as an edge.
    pub edges: Vec<String>,
    /// Share of one core this process used over the last tick, in percent.
    pub cpu_percent: f64,
    /// Media sent over the last tick, kilobits per second.
    pub out_kbps: u64,
    pub in_kbps: u64,
    /// Unix ms of the record.
    pub updated: u64,
}

/// Redis as this node last saw it.
#[derive(Debug, Clone, Default)]
struct Link {
    connected: bool,
    error: Option<String>,
    since: Option<Instant>,
}

/// An edge pull this node runs: since when it has had no viewer.
struct Edge {
    idle_since: Option<Instant>,
}

/// The node's part in the cluster (see the module docs).
pub struct Cluster {
    node_id: OnceLock<String>,
    cfg: ClusterConfig,
    store: OnceLock<Store>,
    registry: Arc<Registry>,
    pulls: Arc<Pulls>,
    socket: Arc<MediaSocket>,
    arbiter: ArbiterHandle,
    /// Names published here and claimed (or to be claimed) in Redis, by media session id.
    claims: DashMap<String, String>,
    /// Claims another node holds since a Redis outage (warned about once).
    conflicts: DashMap<String, ()>,
    edges: DashMap<String, Edge>,
    nodes: Mutex<Vec<NodeRecord>>,
    link: Mutex<Link>,
    /// This process's CPU seconds so far (given by the binary, which reads /proc).
    cpu_seconds: Box<dyn Fn() -> f64 + Send + Sync>,
}

/// The registry's observer: a weak link, so the registry does not keep the cluster alive.
struct Observer(Weak<Cluster>);

impl NameObserver for Observer {
    fn claimed(&self, name: &str, id: &str) {
        if let Some(c) = self.0.upgrade() {
            c.on_claimed(name, id);
        }
    }

    fn released(&self, name: &str, id: &str) {
        if let Some(c) = self.0.upgrade() {
            c.on_released(name, id);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Names every node may open for itself: files, cameras.
fn is_local_only(name: &str) -> bool {
    name.contains("://")
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

impl Cluster {
    /// The cluster of this node; it starts talking to Redis at [`Cluster::announce`].
    pub fn new(
        cfg: ClusterConfig,
        registry: Arc<Registry>,
        pulls: Arc<Pulls>,
        socket: Arc<MediaSocket>,
        arbiter: ArbiterHandle,
        cpu_seconds: Box<dyn Fn() -> f64 + Send + Sync>,
    ) -> Arc<Cluster> {
        let c = Arc::new(Cluster {
            node_id: OnceLock::new(),
            cfg,
            store: OnceLock::new(),
            registry: registry.clone(),
            pulls,
            socket,
            arbiter,
            claims: DashMap::new(),
            conflicts: DashMap::new(),
            edges: DashMap::new(),
            nodes: Mutex::new(Vec::new()),
            link: Mutex::new(Link::default()),
            cpu_seconds,
        });
        registry.set_observer(Arc::new(Observer(Arc::downgrade(&c))));
        c
    }

    pub fn node_id(&self) -> &str {
        self.node_id.get().map_or("", |s| s.as_str())
    }

    /// Start the node's loop, now that its ports are known.
    pub fn announce(self: &Arc<Self>, addr: NodeAddress) {
        let id = self
            .cfg
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", url_host(addr.public_ip), addr.ws_port));
        let _ = self.node_id.set(id);
        let me = self.clone();
        self.arbiter.spawn(async move {
            match redis::Store::new(&me.cfg.redis_url) {
                Ok(s) => {
                    let _ = me.store.set(s);
                }
                Err(e) => {
                    me.set_link(Err(e));
                    return;
                }
            }
            info!(node = %me.node_id(), "cluster node started");
            let mut cpu = ((me.cpu_seconds)(), Instant::now());
            let mut bytes = me.media_bytes();
            loop {
                let now = Instant::now();
                let secs = now.duration_since(cpu.1).as_secs_f64().max(0.001);
                let cpu_now = (me.cpu_seconds)();
                let cpu_percent = ((cpu_now - cpu.0) / secs * 100.0 * 10.0).round() / 10.0;
                cpu = (cpu_now, now);
                let b = me.media_bytes();
                let kbps = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 * 8.0 / 1000.0 / secs) as u64;
                let (out_kbps, in_kbps) = (kbps(bytes.0, b.0), kbps(bytes.1, b.1));
                bytes = b;
                let record = me.record(&addr, cpu_percent, out_kbps, in_kbps);
                let res = me.tick(&record).await;
                me.set_link(res);
                me.drop_idle_edges();
                actix_rt::time::sleep(TICK).await;
            }
        });
    }

    fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    fn media_bytes(&self) -> (u64, u64) {
        let s = &self.socket.stats;
        (s.sent_bytes.load(Ordering::Relaxed), s.received_bytes.load(Ordering::Relaxed))
    }

    fn record(&self, addr: &NodeAddress, cpu_percent: f64, out_kbps: u64, in_kbps: u64) -> NodeRecord {
        let host = url_host(addr.public_ip);
        let (published, viewers) = self.registry.counts();
        let mut streams: Vec<String> = self.claims.iter().map(|e| e.key().clone()).collect();
        streams.sort();
        let mut edges: Vec<String> = self.edges.iter().map(|e| e.key().clone()).collect();
        edges.sort();
        NodeRecord {
            id: self.node_id().to_string(),
            public_ip: addr.public_ip,
            ws: format!("ws://{host}:{}/", addr.ws_port),
            wss: (addr.wss_port != 0).then(|| format!("wss://{host}:{}/", addr.wss_port)),
            rest: format!("http://{host}:{}", addr.rest_port),
            media_port: addr.media_port,
            viewers,
            published,
            streams,
            edges,
            cpu_percent,
            out_kbps,
            in_kbps,
            updated: unix_ms(),
        }
    }

    /// One round with Redis: the node's record, its claims, every node's record.
    async fn tick(&self, record: &NodeRecord) -> Result<(), redis::StoreError> {
        let Some(store) = self.store() else { return Ok(()) };
        let text = serde_json::to_string(record).map_err(|e| redis::StoreError(e.to_string()))?;
        store.put_node(&record.id, &text, NODE_TTL).await?;
        let claims: Vec<(String, String)> =
            self.claims.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
        for (name, id) in claims {
            if store.claim(&name, &record.id, NODE_TTL).await? {
                self.conflicts.remove(&name);
            } else if self.conflicts.insert(name.clone(), ()).is_none() {
                // Another node took the name while Redis did not hear from us (an outage): the
                // local stream goes on; the other node's viewers see the other stream. Logged
                // once; the claim is retried every tick.
                warn!(stream = %name, media_session_id = %id, "stream is also published on another node");
            }
        }
        for cmd in store.take_commands(&record.id).await? {
            self.run_command(&cmd);
        }
        let mut nodes: Vec<NodeRecord> =
            store.nodes().await?.iter().filter_map(|t| serde_json::from_str(t).ok()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        *self.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
        Ok(())
    }

    /// A command another node queued for this one.
    fn run_command(&self, cmd: &str) {
        match cmd.strip_prefix(TERMINATE) {
            Some(name) => {
                let f = Filter { name: Some(name.to_string()), published: Some(true), ..Default::default() };
                let n = self.registry.terminate(&f, wcs::STOPPED_BY_REST_TERMINATE);
                info!(stream = %name, stopped = n, "terminated at another node's request");
            }
            None => warn!(command = %cmd, "unknown cluster command ignored"),
        }
    }

    /// `terminate` of a stream published anywhere in the cluster: the node that publishes it
    /// stops it (within a tick when it is another node). Answers that node's id, `None` when
    /// no node publishes `name`.
    pub async fn terminate(&self, name: &str) -> Result<Option<String>, redis::StoreError> {
        let store = self.store().ok_or_else(|| redis::StoreError("not started".into()))?;
        let Some(owner) = store.owner(name).await? else { return Ok(None) };
        if owner == self.node_id() {
            self.run_command(&format!("{TERMINATE}{name}"));
        } else {
            store.send_command(&owner, &format!("{TERMINATE}{name}")).await?;
        }
        Ok(Some(owner))
    }

    fn set_link(&self, res: Result<(), redis::StoreError>) {
        let mut l = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let ok = res.is_ok();
        if ok != l.connected || l.since.is_none() {
            match &res {
                Ok(()) => info!(node = %self.node_id(), "cluster: Redis connected"),
                Err(e) => {
                    warn!(node = %self.node_id(), error = %e, "cluster: Redis unreachable; local streams go on")
                }
            }
            l.since = Some(Instant::now());
        }
        l.connected = ok;
        l.error = res.err().map(|e| e.to_string());
    }

    fn on_claimed(self: &Arc<Self>, name: &str, id: &str) {
        if is_local_only(name) || self.edges.contains_key(name) {
            return;
        }
        self.claims.insert(name.to_string(), id.to_string());
        let (me, name, id) = (self.clone(), name.to_string(), id.to_string());
        self.arbiter.spawn(async move {
            let Some(store) = me.store() else { return };
            match store.claim(&name, me.node_id(), NODE_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    info!(stream = %name, media_session_id = %id, "name published on another node: refused");
                    me.claims.remove_if(&name, |_, v| *v == id);
                    let f = Filter { media_session_ids: Some(vec![id]), ..Default::default() };
                    me.registry.terminate(&f, wcs::NAME_IN_USE);
                }
                // Redis unreachable: the stream goes on, claimed at the next tick.
                Err(e) => warn!(stream = %name, error = %e, "cannot claim the name in Redis now"),
            }
        });
    }

    fn on_released(self: &Arc<Self>, name: &str, id: &str) {
        self.edges.remove(name);
        self.conflicts.remove(name);
        if self.claims.remove_if(name, |_, v| v == id).is_none() {
            return;
        }
        let (me, name) = (self.clone(), name.to_string());
        self.arbiter.spawn(async move {
            if let Some(store) = me.store() {
                if let Err(e) = store.release(&name, me.node_id()).await {
                    warn!(stream = %name, error = %e, "cannot release the name in Redis (it expires)");
                }
            }
        });
    }

    fn drop_idle_edges(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for mut e in self.edges.iter_mut() {
            if self.registry.viewers_of(e.key()) > 0 {
                e.idle_since = None;
            } else if e.idle_since.is_some_and(|t| now.duration_since(t) >= EDGE_IDLE) {
                idle.push(e.key().clone());
            } else if e.idle_since.is_none() {
                e.idle_since = Some(now);
            }
        }
        for name in idle {
            info!(stream = %name, "edge pull has had no viewer for {EDGE_IDLE:?}: dropped");
            self.pulls.terminate(&name, None);
        }
    }

    /// A token that lets this node play `name` on another node of the cluster.
    fn pull_token(&self, name: &str) -> Option<String> {
        let now = unix_ms() / 1000;
        let claims = Claims {
            sub: Some(format!("cluster:{}", self.node_id())),
            exp: now + PULL_TOKEN_TTL.as_secs(),
            nbf: None,
            iat: Some(now),
            aud: Some(CLUSTER_AUDIENCE.into()),
            iss: None,
            grants: Grants { play: Names::Patterns(vec![name.to_string()]), ..Default::default() },
        };
        jwt::mint_hs256(&self.cfg.secret, &claims).ok()
    }

    /// The source of a play of `name`, published on another node: the edge pull of it, joined
    /// or started. `None` when no node publishes it (or Redis cannot say).
    pub fn edge_source(self: &Arc<Self>, name: &str) -> LocalBoxFuture<'static, Option<Published>> {
        let (me, name) = (self.clone(), name.to_string());
        async move {
            let store = me.store()?;
            let owner = store.owner(&name).await.ok()??;
            if owner == me.node_id() {
                return None;
            }
            let node: NodeRecord = serde_json::from_str(&store.node(&owner).await.ok()??).ok()?;
            let allow: HostPattern = node.public_ip.to_string().parse().ok()?;
            me.edges.entry(name.clone()).or_insert(Edge { idle_since: None });
            let req = PullRequest {
                uri: node.ws.clone(),
                remote_name: name.clone(),
                local_name: name.clone(),
                token: me.pull_token(&name),
            };
            match me.pulls.start_allowing(req, Arc::new(vec![allow])).await {
                Ok(_) => me.registry.lookup(&name),
                // Another viewer started it a moment ago: join it once it plays.
                Err(PullError::NameInUse) => {
                    let until = Instant::now() + crate::pull::SETUP_TIMEOUT;
                    while Instant::now() < until {
                        if let Some(p) = me.registry.lookup(&name) {
                            return Some(p);
                        }
                        actix_rt::time::sleep(JOIN_POLL).await;
                    }
                    None
                }
                Err(e) => {
                    warn!(stream = %name, origin = %node.id, error = %e, "edge pull failed");
                    if me.registry.lookup(&name).is_none() {
                        me.edges.remove(&name);
                    }
                    None
                }
            }
        }
        .boxed_local()
    }

    /// Every node, as of the last tick.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node a new viewer of `name` is best sent to: the one with the fewest viewers, a node
    /// that already carries the stream (origin or edge) winning a tie; with it, the node that
    /// publishes `name` (when any).
    pub fn least_loaded(&self, name: Option<&str>) -> Option<(NodeRecord, Option<String>)> {
        let nodes = self.nodes();
        let carries = |n: &NodeRecord| name.is_some_and(|s| n.streams.iter().chain(&n.edges).any(|x| x == s));
        let origin =
            name.and_then(|s| nodes.iter().find(|n| n.streams.iter().any(|x| x == s)).map(|n| n.id.clone()));
        let best = nodes
            .iter()
            .min_by(|a, b| {
                a.viewers
                    .cmp(&b.viewers)
                    .then(carries(b).cmp(&carries(a)))
                    .then(a.cpu_percent.total_cmp(&b.cpu_percent))
            })?
            .clone();
        Some((best, origin))
    }

    /// Every stream published in the cluster and its node, from Redis.
    pub async fn streams(&self) -> Result<Vec<(String, String)>, redis::StoreError> {
        let store = self.store().ok_or_else(|| redis::StoreError("not started".into()))?;
        let mut v = store.streams().await?;
        v.sort();
        Ok(v)
    }

    /// `/health`'s `cluster` object.
    pub fn health(&self) -> serde_json::Value {
        let l = self.link.lock().unwrap_or_else(|p| p.into_inner()).clone();
        serde_json::json!({
            "node": self.node_id(),
            "redis": if l.connected { "connected" } else { "unreachable" },
            "error": l.error,
            "sinceSecs": l.since.map(|t| t.elapsed().as_secs()),
            "nodes": self.nodes.lock().map(|n| n.len()).unwrap_or(0),
            "claims": self.claims.len(),
            "edges": self.edges.len(),
        })
    }
}
