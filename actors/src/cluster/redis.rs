//! Every call into the Redis client crate (`redis`, async on tokio with a reconnecting
//! `ConnectionManager`). The rest of the cluster speaks to [`Store`] only.
//!
//! Keys (one Redis, one cluster per key prefix):
//! - `sluice:node:<id>`: the node's record (JSON: addresses, load), `PX` [`super::NODE_TTL`],
//!   rewritten every [`super::TICK`]. A node that dies vanishes when it expires.
//! - `sluice:stream:<name>`: the id of the node that publishes `name`, `PX` the same TTL,
//!   refreshed by its node. Claimed with one Lua script ([`CLAIM`]), so two nodes racing for
//!   a name cannot both win.
//!
//! - `sluice:commands:<id>`: a list of commands for node `<id>` (`terminate <name>`), drained by
//!   that node every tick, gone after [`COMMAND_TTL`] if its node is gone.
//!
//! Every call is bounded by [`CALL_TIMEOUT`]: a Redis that is down or slow makes calls fail
//! fast; nothing here blocks a thread.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

/// The longest any one Redis call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
const PREFIX: &str = "sluice:";
/// How long commands for a node wait for it.
pub const COMMAND_TTL: Duration = Duration::from_secs(10);
/// Commands a node takes per tick.
const COMMANDS_PER_TICK: usize = 100;

/// Claim (or refresh) `KEYS[1]` for node `ARGV[1]` for `ARGV[2]` ms: free, already ours, or
/// held by a node whose own key expired (it died) → ours, 1; held by a live node → 0.
const CLAIM: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] or redis.call('EXISTS', ARGV[3] .. owner) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Delete `KEYS[1]` only if node `ARGV[1]` holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Why a Redis call failed (unreachable, timed out, refused); the message is for logs and
/// `/health`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct StoreError(pub String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError(e.to_string())
    }
}

/// The cluster's view of Redis.
#[derive(Clone)]
pub struct Store {
    con: ConnectionManager,
}

/// Check a `redis://` URL without connecting (at configuration time).
pub fn check_url(url: &str) -> Result<(), StoreError> {
    redis::Client::open(url).map(|_| ()).map_err(StoreError::from)
}

async fn bounded<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(_) => Err(StoreError(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

impl Store {
    /// A store that connects on first use and reconnects by itself. Must run inside a tokio
    /// runtime (an actix arbiter).
    pub fn new(url: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Store { con: ConnectionManager::new_lazy_with_config(client, cfg)? })
    }

    fn node_key(id: &str) -> String {
        format!("{PREFIX}node:{id}")
    }

    fn stream_key(name: &str) -> String {
        format!("{PREFIX}stream:{name}")
    }

    /// Write this node's record with a TTL.
    pub async fn put_node(&self, id: &str, record: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.con.clone();
        bounded(c.pset_ex::<_, _, ()>(Self::node_key(id), record, ttl.as_millis() as u64)).await
    }

    pub async fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.con.clone();
        bounded(c.del::<_, ()>(Self::node_key(id))).await
    }

    /// Every live node's record (JSON text), in no order.
    pub async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.con.clone();
        let keys: Vec<String> = bounded(c.keys(format!("{PREFIX}node:*"))).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = bounded(c.mget(keys)).await?;
        Ok(values.into_iter().flatten().collect())
    }

    /// One node's record.
    pub async fn node(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.con.clone();
        bounded(c.get(Self::node_key(id))).await
    }

    /// Claim or refresh `name` for `node`: true when it is ours.
    pub async fn claim(&self, name: &str, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.con.clone();
        let script = redis::Script::new(CLAIM);
        let mut inv = script.prepare_invoke();
        inv.key(Self::stream_key(name)).arg(node).arg(ttl.as_millis() as u64).arg(format!("{PREFIX}node:"));
        let won: i64 = bounded(inv.invoke_async(&mut c)).await?;
        Ok(won == 1)
    }

    /// Give up `name` if `node` holds it.
    pub async fn release(&self, name: &str, node: &str) -> Result<(), StoreError> {
        let mut c = self.con.clone();
        let script = redis::Script::new(RELEASE);
        let mut inv = script.prepare_invoke();
        inv.key(Self::stream_key(name)).arg(node);
        bounded(inv.invoke_async::<i64>(&mut c)).await.map(|_| ())
    }

    /// The node that publishes `name`, if any.
    pub async fn owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.con.clone();
        bounded(c.get(Self::stream_key(name))).await
    }

    /// Queue `command` for node `node`.
    pub async fn send_command(&self, node: &str, command: &str) -> Result<(), StoreError> {
        let mut c = self.con.clone();
        let key = format!("{PREFIX}commands:{node}");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(key.as_str(), command)
            .ignore()
            .pexpire(key.as_str(), COMMAND_TTL.as_millis() as i64)
            .ignore();
        bounded(pipe.query_async::<()>(&mut c)).await
    }

    /// Take the commands queued for `node` (oldest first).
    pub async fn take_commands(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.con.clone();
        let n = std::num::NonZeroUsize::new(COMMANDS_PER_TICK);
        let v: Option<Vec<String>> = bounded(c.lpop(format!("{PREFIX}commands:{node}"), n)).await?;
        Ok(v.unwrap_or_default())
    }

    /// Every claimed stream: `(name, node id)`.
    pub async fn streams(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut c = self.con.clone();
        let keys: Vec<String> = bounded(c.keys(format!("{PREFIX}stream:*"))).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let owners: Vec<Option<String>> = bounded(c.mget(keys.clone())).await?;
        let strip = format!("{PREFIX}stream:");
        Ok(keys
            .into_iter()
            .zip(owners)
            .filter_map(|(k, o)| Some((k.strip_prefix(&strip)?.to_string(), o?)))
            .collect())
    }
}
