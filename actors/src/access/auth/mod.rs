//! Access control: one authorizer, consulted for every action (publish, play, record,
//! snapshot, the management API, metrics).
//!
//! Methods, combinable (every configured method must allow):
//! - **JWT** ([`jwt`]): HS256 with a shared secret and/or asymmetric keys from a JWKS URL,
//!   refreshed in the background ([`Authorizer::start_jwks_refresh`]), never on the request
//!   path. The token's `grants` claim ([`grants`]) says which stream names each action covers.
//!   Carried in the WCS `connection` message's `custom.token` (the SDK's
//!   `createSession({custom: {token}})`), or a stream's `custom.token` (`createStream({custom})`,
//!   which wins), as `Authorization: Bearer` on REST, and as `?token=` on record downloads.
//! - **WCS REST hooks** ([`hooks`]): the application server allows or declines each connection
//!   and stream.
//! - **API keys** and **CIDR allow-lists** for the management REST API and metrics.
//!
//! Defaults keep the out-of-the-box demo working: with no method configured, publishing and
//! playing are open (as in WCS), but the management API and metrics answer loopback clients only.

pub mod grants;
pub mod hooks;
pub mod jwt;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};

pub use grants::{Action, Grants, Names};
pub use hooks::{HookAnswer, Hooks};
pub use jwt::{Claims, TokenError, Verifier};

use crate::turn_core::Cidr;

/// The WCS stream `info` that starts every refusal of a token.
pub const RESTRICTED: &str = crate::protocol::info::RESTRICTED_ACCESS;
/// How long the server waits for the first JWKS fetch at startup before serving anyway.
pub const JWKS_FIRST_FETCH_WAIT: Duration = Duration::from_secs(5);
/// After a failed JWKS fetch, the next try comes this soon (the old keys stay in force).
pub const JWKS_RETRY: Duration = Duration::from_secs(10);

/// What the operator configured.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub jwt_secret: Option<String>,
    /// JWKS document with the public keys of asymmetric tokens.
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
    /// Required `aud` / `iss` claims, when set.
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    /// Base URL of the WCS REST hooks.
    pub hook_url: Option<String>,
    /// HMAC secret signing hook requests.
    pub hook_secret: Option<String>,
    pub hook_timeout: Duration,
    /// Keys for the management REST API and metrics.
    pub api_keys: Vec<String>,
    /// Networks whose clients may use the management REST API and metrics without a key.
    pub api_allow: Vec<Cidr>,
    /// The cluster secret (`--cluster-secret`): tokens it signs for [`crate::cluster`]'s
    /// audience are node-to-node pulls, allowed what they grant without a hook.
    pub cluster_secret: Option<String>,
}

/// A configuration the authorizer cannot work with (the server refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("--jwt-secret must be at least 16 characters")]
    ShortSecret,
    #[error("invalid {flag} {url:?}: {reason}")]
    BadUrl { flag: &'static str, url: String, reason: String },
    #[error("JWT secret: {0}")]
    Secret(#[from] jsonwebtoken::errors::Error),
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Checks that `url` is an http(s) URL, for `flag`.
pub(crate) fn http_url(flag: &'static str, url: &str) -> Result<(), AuthSetupError> {
    let bad = |reason: String| AuthSetupError::BadUrl { flag, url: url.to_string(), reason };
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        _ => Err(bad("must be http:// or https://".into())),
    }
}

/// Counters of refusals, read by `/health`.
#[derive(Debug, Default)]
pub struct AuthStats {
    pub token_refusals: AtomicU64,
    pub hook_refusals: AtomicU64,
    pub api_refusals: AtomicU64,
}

/// Why the management API refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRefusal {
    /// No credential (401).
    Unauthenticated(String),
    /// A credential that is wrong or lacks the grant (403).
    Forbidden(String),
}

impl ApiRefusal {
    pub fn message(&self) -> &str {
        match self {
            ApiRefusal::Unauthenticated(m) | ApiRefusal::Forbidden(m) => m,
        }
    }
}

/// The authorizer (see the module docs). Shared by every session and the REST front.
#[derive(Debug, Default)]
pub struct Authorizer {
    verifier: Option<Verifier>,
    jwks_url: Option<String>,
    jwks_refresh: Duration,
    hooks: Option<Hooks>,
    api_keys: Vec<String>,
    api_allow: Vec<Cidr>,
    /// Verifies node-to-node tokens (see [`AuthConfig::cluster_secret`]).
    cluster: Option<Verifier>,
    pub stats: AuthStats,
}

/// Equal in constant time (for keys).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authorizer {
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthSetupError> {
        let jwt_on = cfg.jwt_secret.is_some() || cfg.jwks_url.is_some();
        if cfg.jwt_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(AuthSetupError::ShortSecret);
        }
        if let Some(u) = &cfg.jwks_url {
            http_url("--jwks-url", u)?;
        }
        let hooks = match &cfg.hook_url {
            Some(u) => Some(Hooks::new(u, cfg.hook_secret.clone(), cfg.hook_timeout)?),
            None => None,
        };
        let verifier = match jwt_on {
            true => Some(Verifier::new(
                cfg.jwt_secret.as_deref(),
                cfg.jwt_audience.clone(),
                cfg.jwt_issuer.clone(),
            )?),
            false => None,
        };
        Ok(Authorizer {
            verifier,
            jwks_url: cfg.jwks_url.clone(),
            jwks_refresh: cfg.jwks_refresh.max(Duration::from_secs(1)),
            hooks,
            api_keys: cfg.api_keys.iter().filter(|k| !k.is_empty()).cloned().collect(),
            api_allow: cfg.api_allow.clone(),
            cluster: match &cfg.cluster_secret {
                Some(s) => Some(Verifier::new(Some(s), Some(crate::cluster::CLUSTER_AUDIENCE.into()), None)?),
                None => None,
            },
            stats: AuthStats::default(),
        })
    }

    /// Whether publishing and playing need anyone's permission (a JWT method or hooks is on).
    pub fn streams_restricted(&self) -> bool {
        self.verifier.is_some() || self.hooks.is_some()
    }

    pub fn jwt_on(&self) -> bool {
        self.verifier.is_some()
    }

    pub fn hooks_on(&self) -> bool {
        self.hooks.is_some()
    }

    /// The JWT part of a decision: `Ok(None)` when JWT is off, `Ok(Some(claims))` when `token`
    /// is valid and grants `action` on `name`.
    pub fn check_token(
        &self,
        token: Option<&str>,
        action: Action,
        name: Option<&str>,
    ) -> Result<Option<Claims>, TokenError> {
        if let Some(c) = self.cluster_claims(token).filter(|c| c.grants.allows(action, name)) {
            return Ok(Some(c));
        }
        let Some(v) = &self.verifier else { return Ok(None) };
        let res = match token.filter(|t| !t.is_empty()) {
            None => Err(TokenError::Missing),
            Some(t) => v.verify(t).and_then(|c| {
                if c.grants.allows(action, name) {
                    Ok(c)
                } else {
                    Err(TokenError::NotGranted(match name {
                        Some(n) => format!("{} of {n}", action.as_str()),
                        None => action.as_str().to_string(),
                    }))
                }
            }),
        };
        if res.is_err() {
            self.stats.token_refusals.fetch_add(1, Ordering::Relaxed);
        }
        res.map(Some)
    }

    /// Verify a token without asking for any grant (a session's token at `connection`).
    pub fn verify(&self, token: &str) -> Result<Option<Claims>, TokenError> {
        if let Some(c) = self.cluster_claims(Some(token)) {
            return Ok(Some(c));
        }
        match &self.verifier {
            None => Ok(None),
            Some(v) => v.verify(token).map(Some).inspect_err(|_| {
                self.stats.token_refusals.fetch_add(1, Ordering::Relaxed);
            }),
        }
    }

    /// The claims of a valid node-to-node token (signed with the cluster secret).
    fn cluster_claims(&self, token: Option<&str>) -> Option<Claims> {
        self.cluster.as_ref()?.verify(token?).ok()
    }

    /// Whether `token` is a valid node-to-node token: a pull by another node of the cluster,
    /// which asks no hook (the edge decided on its own viewers).
    pub fn is_cluster_token(&self, token: Option<&str>) -> bool {
        self.cluster_claims(token).is_some()
    }

    /// The hook part of a decision: allowed (with overrides) when hooks are off.
    pub async fn hook(&self, method: &str, body: &Value) -> HookAnswer {
        match &self.hooks {
            None => HookAnswer::Allow(Default::default()),
            Some(h) => {
                let a = h.call(method, body).await;
                if matches!(a, HookAnswer::Deny(_)) {
                    self.stats.hook_refusals.fetch_add(1, Ordering::Relaxed);
                }
                a
            }
        }
    }

    /// May a client at `peer`, presenting `credential` (an API key or a JWT), use the
    /// management API (`Action::Api`) or metrics (`Action::Metrics`)?
    pub fn api_access(
        &self,
        peer: Option<IpAddr>,
        credential: Option<&str>,
        action: Action,
    ) -> Result<(), ApiRefusal> {
        let res = self.api_decision(peer, credential, action);
        if res.is_err() {
            self.stats.api_refusals.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn api_decision(
        &self,
        peer: Option<IpAddr>,
        credential: Option<&str>,
        action: Action,
    ) -> Result<(), ApiRefusal> {
        let peer = peer.map(|p| p.to_canonical());
        if let Some(c) = credential.filter(|c| !c.is_empty()) {
            if self.api_keys.iter().any(|k| same(k, c)) {
                return Ok(());
            }
            if let Some(v) = &self.verifier {
                if let Ok(claims) = v.verify(c) {
                    if claims.grants.allows(action, None) {
                        return Ok(());
                    }
                    return Err(ApiRefusal::Forbidden(format!("the token grants no {}", action.as_str())));
                }
            }
            return Err(ApiRefusal::Forbidden("invalid API key or token".into()));
        }
        if peer.is_some_and(|p| self.api_allow.iter().any(|c| c.contains(p))) {
            return Ok(());
        }
        if self.api_keys.is_empty() && peer.is_some_and(|p| p.is_loopback()) {
            return Ok(());
        }
        let how = if self.api_keys.is_empty() && self.api_allow.is_empty() {
            "this API answers clients on this host only: start the server with --api-key KEY and send \
             `Authorization: Bearer KEY`, or allow your network with --api-allow CIDR"
        } else {
            "send `Authorization: Bearer <API key>` (see --api-key), or call from a network in --api-allow"
        };
        Err(ApiRefusal::Unauthenticated(how.into()))
    }

    /// May this request download a recording? Open while no JWT or hook method is on; then an
    /// API key, or a token granting `record`, is needed.
    pub fn records_access(&self, peer: Option<IpAddr>, credential: Option<&str>) -> Result<(), ApiRefusal> {
        if !self.streams_restricted() {
            return Ok(());
        }
        let c = credential.filter(|c| !c.is_empty());
        if let Some(c) = c {
            if self.api_keys.iter().any(|k| same(k, c)) {
                return Ok(());
            }
            if let Some(v) = &self.verifier {
                return match v.verify(c) {
                    Ok(claims) if claims.grants.allows(Action::Record, None) => Ok(()),
                    Ok(_) => Err(ApiRefusal::Forbidden("the token grants no record".into())),
                    Err(e) => Err(ApiRefusal::Forbidden(e.to_string())),
                };
            }
            return Err(ApiRefusal::Forbidden("invalid API key or token".into()));
        }
        if peer.is_some_and(|p| self.api_allow.iter().any(|cidr| cidr.contains(p.to_canonical()))) {
            return Ok(());
        }
        Err(ApiRefusal::Unauthenticated(
            "recordings need ?token=<a token granting record> or an API key".into(),
        ))
    }

    /// TURN credentials from `/rest-api/turn/credentials`: open while no JWT or hook method is
    /// on (the relay reaches only this server's media); then a valid token (any grants) or an
    /// API key is needed.
    pub fn turn_credentials_access(&self, credential: Option<&str>) -> Result<(), ApiRefusal> {
        if !self.streams_restricted() {
            return Ok(());
        }
        let Some(c) = credential.filter(|c| !c.is_empty()) else {
            return Err(ApiRefusal::Unauthenticated(
                "TURN credentials need a token (Authorization: Bearer)".into(),
            ));
        };
        if self.api_keys.iter().any(|k| same(k, c)) {
            return Ok(());
        }
        match &self.verifier {
            Some(v) => v.verify(c).map(|_| ()).map_err(|e| ApiRefusal::Forbidden(e.to_string())),
            None => Err(ApiRefusal::Forbidden("invalid API key".into())),
        }
    }

    /// Fetch the JWKS now, then every refresh interval, on a thread of its own (its own actix
    /// runtime: never an arbiter of the server). Returns once the first fetch has finished or
    /// [`JWKS_FIRST_FETCH_WAIT`] has passed, so tokens verify from the first request.
    pub fn start_jwks_refresh(self: &Arc<Self>) {
        let Some(url) = self.jwks_url.clone() else { return };
        let me = self.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("jwks".into()).spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut first = Some(tx);
                loop {
                    let next = match fetch(&url).await {
                        Ok(doc) => match me.verifier.as_ref().map(|v| v.set_jwks(&doc)) {
                            Some(Ok(n)) => {
                                info!(%url, keys = n, "JWKS loaded");
                                me.jwks_refresh
                            }
                            Some(Err(e)) => {
                                warn!(%url, error = %e, "JWKS not usable; keeping the keys in force");
                                JWKS_RETRY.min(me.jwks_refresh)
                            }
                            None => return,
                        },
                        Err(e) => {
                            warn!(%url, error = %e, "JWKS fetch failed; keeping the keys in force");
                            JWKS_RETRY.min(me.jwks_refresh)
                        }
                    };
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    actix_rt::time::sleep(next).await;
                }
            })
        });
        match spawned {
            Ok(_) => {
                let _ = rx.recv_timeout(JWKS_FIRST_FETCH_WAIT);
            }
            Err(e) => warn!(error = %e, "cannot start the JWKS refresher"),
        }
    }
}

/// GET the JWKS document.
async fn fetch(url: &str) -> Result<Vec<u8>, JwksFetchError> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .connector(awc::Connector::new().rustls_0_23(hooks::client_tls()?))
        .finish();
    let mut resp = client.get(url).send().await.map_err(|e| JwksFetchError::Request(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(JwksFetchError::Status(resp.status().as_u16()));
    }
    resp.body().limit(1 << 20).await.map(|b| b.to_vec()).map_err(|e| JwksFetchError::Body(e.to_string()))
}

/// Why a JWKS fetch failed (the keys in force stay).
#[derive(Debug, thiserror::Error)]
enum JwksFetchError {
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("reading the body: {0}")]
    Body(String),
}

/// The token a WCS `custom` object carries (`custom.token`), if any.
pub fn custom_token(custom: Option<&Value>) -> Option<String> {
    custom?.get("token")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(cfg: AuthConfig) -> Authorizer {
        Authorizer::new(&cfg).unwrap()
    }

    #[test]
    fn api_defaults_to_loopback_only() {
        let a = auth(AuthConfig::default());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let v6lo: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let far: IpAddr = "198.18.0.2".parse().unwrap();
        assert!(a.api_access(Some(lo), None, Action::Api).is_ok());
        assert!(a.api_access(Some(v6lo), None, Action::Api).is_ok());
        let e = a.api_access(Some(far), None, Action::Api).unwrap_err();
        assert!(matches!(e, ApiRefusal::Unauthenticated(_)) && e.message().contains("--api-key"), "{e:?}");
        assert!(a.api_access(None, None, Action::Api).is_err());
        assert!(!a.streams_restricted() && a.records_access(Some(far), None).is_ok());
    }

    #[test]
    fn api_keys_and_networks() {
        let a = auth(AuthConfig {
            api_keys: vec!["k-123".into()],
            api_allow: vec!["198.18.0.0/24".parse().unwrap()],
            ..Default::default()
        });
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "203.0.113.9".parse().unwrap();
        let lan: IpAddr = "198.18.0.7".parse().unwrap();
        assert!(a.api_access(Some(far), Some("k-123"), Action::Api).is_ok());
        assert!(matches!(a.api_access(Some(far), Some("k-12"), Action::Api), Err(ApiRefusal::Forbidden(_))));
        assert!(a.api_access(Some(lan), None, Action::Metrics).is_ok());
        // With keys configured, loopback needs one too.
        assert!(a.api_access(Some(lo), None, Action::Api).is_err());
        assert_eq!(a.stats.api_refusals.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn tokens_for_streams_and_api() {
        let secret = "a-secret-of-16-chars";
        let a = auth(AuthConfig { jwt_secret: Some(secret.into()), ..Default::default() });
        assert!(a.streams_restricted());
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
        let grants: Grants = serde_json::from_str(r#"{"publish":["cam-*"],"play":true,"api":true}"#).unwrap();
        let claims =
            Claims { sub: Some("u".into()), exp, nbf: None, iat: None, aud: None, iss: None, grants };
        let t = jwt::mint_hs256(secret, &claims).unwrap();
        assert!(a.check_token(Some(&t), Action::Publish, Some("cam-1")).unwrap().is_some());
        assert_eq!(
            a.check_token(Some(&t), Action::Publish, Some("other")).unwrap_err().to_string(),
            "token grants no publish of other"
        );
        assert_eq!(a.check_token(None, Action::Play, Some("x")), Err(TokenError::Missing));
        let far: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(a.api_access(Some(far), Some(&t), Action::Api).is_ok());
        assert!(matches!(a.records_access(Some(far), Some(&t)), Err(ApiRefusal::Forbidden(_))));
        assert!(
            Authorizer::new(&AuthConfig { jwt_secret: Some("short".into()), ..Default::default() }).is_err()
        );
        assert_eq!(custom_token(Some(&serde_json::json!({"token": "abc"}))).as_deref(), Some("abc"));
        assert_eq!(custom_token(Some(&serde_json::json!({"token": 3}))), None);
    }
}
