//! JWT verification: HS256 with a shared secret, and RS256/ES256/EdDSA (and their siblings)
//! with keys from a JWKS document. The one module that calls `jsonwebtoken`.
//!
//! The key set is swapped in whole by the JWKS refresher ([`super::Authorizer::start_jwks_refresh`]); verification only
//! reads it (no network on the request path). A token names its key by `kid`; without one every
//! key of the token's algorithm is tried.

use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::grants::Grants;

/// Leeway for `exp` and `nbf`: clocks of the token issuer and the server differ a little.
pub const CLOCK_LEEWAY_SECS: u64 = 30;

/// The claims sluice reads. Other claims are allowed and ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Who the token is for (logged, and `{login}` in recording names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, Unix seconds: required.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// What the bearer may do.
    #[serde(default)]
    pub grants: Grants,
}

/// Why a token was refused; the text goes to the client after "Restricted access: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("bad token signature")]
    BadSignature,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token algorithm {0} not accepted")]
    Algorithm(String),
    #[error("token audience or issuer does not match")]
    Audience,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token grants no {0}")]
    NotGranted(String),
}

/// A JWKS document that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("not a JWKS document: {0}")]
pub struct JwksError(#[from] serde_json::Error);

/// A verification key and the algorithms it may verify.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// Verifies tokens against a shared secret and/or a JWKS key set.
pub struct Verifier {
    secret: Option<Key>,
    jwks: RwLock<Arc<Vec<Key>>>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.jwks.read().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("Verifier").field("secret", &self.secret.is_some()).field("jwks_keys", &keys).finish()
    }
}

/// The asymmetric algorithms a JWKS key may be used with, by its key type.
fn algorithms_of(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters as P, EllipticCurve as C};
    if matches!(jwk.algorithm, P::OctetKey(_)) {
        return vec![]; // symmetric keys are never taken from a URL
    }
    if let Some(a) = jwk.common.key_algorithm.as_ref().and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
        return vec![a];
    }
    match &jwk.algorithm {
        P::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        P::EllipticCurve(e) => match e.curve {
            C::P256 => vec![Algorithm::ES256],
            C::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        P::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys are never taken from a URL; unknown key types are skipped.
        _ => vec![],
    }
}

impl Verifier {
    pub fn new(
        secret: Option<&str>,
        audience: Option<String>,
        issuer: Option<String>,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let secret = match secret {
            Some(s) => Some(Key {
                kid: None,
                algs: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                key: DecodingKey::from_secret(s.as_bytes())?,
            }),
            None => None,
        };
        Ok(Verifier { secret, jwks: RwLock::new(Arc::new(Vec::new())), audience, issuer })
    }

    /// Replace the JWKS keys with those of `doc` (a JWKS JSON document); returns how many
    /// usable keys it holds.
    pub fn set_jwks(&self, doc: &[u8]) -> Result<usize, JwksError> {
        let set: JwkSet = serde_json::from_slice(doc)?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algs = algorithms_of(jwk);
            if algs.is_empty() {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(Key { kid: jwk.common.key_id.clone(), algs, key }),
                Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key not usable"),
            }
        }
        let n = keys.len();
        if let Ok(mut k) = self.jwks.write() {
            *k = Arc::new(keys);
        }
        Ok(n)
    }

    /// Verify `token` and return its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as E;
            TokenError::Malformed(match e.kind() {
                E::InvalidToken | E::Base64(_) | E::Utf8(_) => "not a JWT".into(),
                E::Json(j) => format!("bad header: {j}"),
                other => format!("{other:?}"),
            })
        })?;
        let jwks = self.jwks.read().map(|k| k.clone()).unwrap_or_default();
        let candidates: Vec<&Key> = self
            .secret
            .iter()
            .chain(jwks.iter())
            .filter(|k| k.algs.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => k.algs[0] == Algorithm::HS256, // the secret has no kid
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            let known_alg = self.secret.iter().chain(jwks.iter()).any(|k| k.algs.contains(&header.alg));
            return Err(if known_alg {
                TokenError::UnknownKey
            } else {
                TokenError::Algorithm(format!("{:?}", header.alg))
            });
        }
        let mut v = Validation::new(header.alg);
        v.leeway = CLOCK_LEEWAY_SECS;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if self.audience.is_some() {
            required.push("aud");
        }
        if self.issuer.is_some() {
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let mut last = TokenError::BadSignature;
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as E;
                    last = match e.kind() {
                        E::ExpiredSignature => return Err(TokenError::Expired),
                        E::ImmatureSignature => return Err(TokenError::NotYetValid),
                        E::InvalidAudience | E::InvalidIssuer => return Err(TokenError::Audience),
                        E::InvalidSignature => TokenError::BadSignature,
                        E::MissingRequiredClaim(c) if c == "aud" || c == "iss" => {
                            return Err(TokenError::Audience)
                        }
                        E::MissingRequiredClaim(c) => {
                            return Err(TokenError::Malformed(format!("no {c} claim")))
                        }
                        E::Json(j) => return Err(TokenError::Malformed(j.to_string())),
                        other => TokenError::Malformed(format!("{other:?}")),
                    };
                }
            }
        }
        Err(last)
    }
}

/// Mint an HS256 token (the `sluice token` command and tests).
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    let key = EncodingKey::from_secret(secret.as_bytes())?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::grants::{Action, Names};

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: Some("alice".into()),
            exp,
            nbf: None,
            iat: None,
            aud: None,
            iss: None,
            grants: Grants { publish: Names::Patterns(vec!["cam-*".into()]), ..Default::default() },
        }
    }

    #[test]
    fn hs256_tokens() {
        let v = Verifier::new(Some("s3cret"), None, None).unwrap();
        let t = mint_hs256("s3cret", &claims(now() + 60)).unwrap();
        let c = v.verify(&t).unwrap();
        assert!(
            c.grants.allows(Action::Publish, Some("cam-1")) && !c.grants.allows(Action::Play, Some("cam-1"))
        );
        assert_eq!(
            v.verify(&mint_hs256("other", &claims(now() + 60)).unwrap()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(v.verify(&mint_hs256("s3cret", &claims(now() - 3600)).unwrap()), Err(TokenError::Expired));
        let mut early = claims(now() + 3600);
        early.nbf = Some(now() + 600);
        assert_eq!(v.verify(&mint_hs256("s3cret", &early).unwrap()), Err(TokenError::NotYetValid));
        assert!(matches!(v.verify("garbage"), Err(TokenError::Malformed(_))));
        assert!(matches!(v.verify("a.b.c"), Err(TokenError::Malformed(_))));
        // A token without exp is refused.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x"}),
            &EncodingKey::from_secret(b"s3cret").unwrap(),
        )
        .unwrap();
        assert!(matches!(v.verify(&no_exp), Err(TokenError::Malformed(_))), "{:?}", v.verify(&no_exp));
        // "alg: none" and algorithms with no key are refused.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"exp":{}}}"#, now() + 60))
        );
        assert!(v.verify(&none).is_err());
        let jwks_only = Verifier::new(None, None, None).unwrap();
        assert!(matches!(jwks_only.verify(&t), Err(TokenError::Algorithm(_))));
    }

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn audience_and_issuer() {
        let v = Verifier::new(Some("k"), Some("sluice".into()), Some("https://auth.example".into())).unwrap();
        let mut c = claims(now() + 60);
        assert_eq!(v.verify(&mint_hs256("k", &c).unwrap()), Err(TokenError::Audience));
        c.aud = Some("sluice".into());
        c.iss = Some("https://auth.example".into());
        assert!(v.verify(&mint_hs256("k", &c).unwrap()).is_ok());
    }

    #[test]
    fn jwks_documents() {
        let v = Verifier::new(None, None, None).unwrap();
        assert!(v.set_jwks(b"not json").is_err());
        // An EC P-256 public key (RFC 7517 appendix A.1) and a symmetric key, which is ignored.
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
             "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"sig","kid":"1"},
            {"kty":"oct","k":"c2VjcmV0","kid":"sym"}]}"#;
        assert_eq!(v.set_jwks(doc).unwrap(), 1);
        assert_eq!(v.set_jwks(br#"{"keys":[]}"#).unwrap(), 0);
    }
}
