//! WCS REST hooks: the application server (backend) decides on each connection and stream. The
//! one module that makes HTTP requests for the authorizer (awc, on the caller's actix runtime).
//!
//! `POST <hook-url>/connect` with the connection object, `/publishStream` and `/playStream` with
//! the stream object (WCS-shaped JSON; `clientIp` added). 200 allows; its JSON body may
//! overwrite `name` and `record` of a stream. Any other status declines: the reason given to the
//! client is the body's `info` (or `reason`, or `error`) text, else "Declined by the application
//! server (HTTP `<status>`)". A backend that fails or does not answer within the timeout declines
//! too (fail closed), with "Application server unavailable: …". With a secret, each request
//! carries `X-Sluice-Signature: sha256=<hex HMAC-SHA256 of the body>` for the backend to check.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use tracing::{debug, warn};

/// The header that carries the body's HMAC.
pub const SIGNATURE_HEADER: &str = "X-Sluice-Signature";
/// Largest answer read from the backend.
const MAX_ANSWER: usize = 64 * 1024;

/// Where hooks go and how.
#[derive(Clone)]
pub struct Hooks {
    base: String,
    secret: Option<String>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("base", &self.base).field("signed", &self.secret.is_some()).finish()
    }
}

/// The backend's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum HookAnswer {
    /// Allowed; fields to overwrite (empty when the body had none).
    Allow(Map<String, Value>),
    /// Declined, with the reason for the client.
    Deny(String),
}

impl Hooks {
    pub fn new(url: &str, secret: Option<String>, timeout: Duration) -> Result<Self, super::AuthSetupError> {
        super::http_url("--hook-url", url)?;
        Ok(Hooks { base: url.trim_end_matches('/').to_string(), secret, timeout, tls: client_tls()? })
    }

    /// HMAC-SHA256 of `body` under `secret`, hex.
    pub fn signature(secret: &str, body: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        let out = mac.finalize().into_bytes();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    /// Ask the backend about `method` (`connect`, `publishStream`, `playStream`).
    pub async fn call(&self, method: &str, body: &Value) -> HookAnswer {
        let url = format!("{}/{method}", self.base);
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let client = awc::Client::builder()
            .timeout(self.timeout)
            .connector(awc::Connector::new().timeout(self.timeout).rustls_0_23(self.tls.clone()))
            .finish();
        let mut req = client.post(&url).insert_header(("Content-Type", "application/json"));
        if let Some(s) = &self.secret {
            req = req.insert_header((SIGNATURE_HEADER, Self::signature(s, &bytes)));
        }
        let mut resp = match req.send_body(bytes).await {
            Ok(r) => r,
            Err(e) => {
                warn!(%url, error = %e, "application server unavailable: declined");
                return HookAnswer::Deny(format!(
                    "Application server unavailable: {}",
                    short(&e.to_string())
                ));
            }
        };
        let status = resp.status();
        let body = resp.body().limit(MAX_ANSWER).await.unwrap_or_default();
        let json: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
        if status.as_u16() == 200 {
            debug!(%url, "application server allowed");
            return HookAnswer::Allow(json.unwrap_or_default());
        }
        let reason = json
            .as_ref()
            .and_then(|j| ["info", "reason", "error"].iter().find_map(|k| j.get(*k).and_then(Value::as_str)))
            .map(|s| short(s).to_string())
            .unwrap_or_else(|| format!("Declined by the application server (HTTP {})", status.as_u16()));
        debug!(%url, status = status.as_u16(), %reason, "application server declined");
        HookAnswer::Deny(reason)
    }
}

/// The TLS settings of outgoing requests (hooks, JWKS): the public web's roots, aws-lc-rs.
pub fn client_tls() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// At most 200 characters of a backend's text, cut at a character boundary.
fn short(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_signatures() {
        assert!(Hooks::new("ftp://x", None, Duration::from_secs(1)).is_err());
        assert!(Hooks::new("not a url", None, Duration::from_secs(1)).is_err());
        let h = Hooks::new("http://127.0.0.1:9/hooks/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(h.base, "http://127.0.0.1:9/hooks");
        // RFC 4231 test case 2.
        assert_eq!(
            Hooks::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(short(&"é".repeat(300)).chars().count(), 200);
    }

    #[actix_rt::test]
    async fn a_backend_that_is_down_declines() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let h = Hooks::new("http://127.0.0.1:9", None, Duration::from_millis(500)).unwrap();
        match h.call("connect", &serde_json::json!({})).await {
            HookAnswer::Deny(r) => assert!(r.starts_with("Application server unavailable"), "{r}"),
            a => panic!("{a:?}"),
        }
    }
}
