//! Long-term credentials (RFC 8489 §9.2): static users, TURN REST API time-limited users, and
//! stateless nonces.
//!
//! - A **static user** is `name:password` from the configuration.
//! - A **time-limited user** (the "TURN REST API" scheme coturn calls `use-auth-secret`) has the
//!   username `expiry:user` (or just `expiry`), expiry in UNIX seconds, and the password
//!   `base64(HMAC-SHA1(secret, username))`. The server only needs the shared secret; credentials
//!   stop working at `expiry`.
//! - **Nonces** are stateless: `<unix time, hex>-<HMAC of time and client address, hex>`, under a
//!   key drawn at start. A flood of unauthenticated requests costs the server no memory; a nonce
//!   older than [`NONCE_LIFETIME_SECS`] (or minted for another client address) gets 438.
//!
//! Passwords and secrets are held as [`Secret`], whose `Debug` and `Display` print `<redacted>`,
//! so no log line can show one. Only SHA-1 MESSAGE-INTEGRITY is accepted (what browsers and
//! coturn's clients send); SHA-256 integrity gets 401.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun_types::attribute::{
    AttributeStaticType, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username,
};
use stun_types::message::{IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message};

/// How long a nonce is accepted before the client must take a fresh one (438 Stale Nonce).
pub const NONCE_LIFETIME_SECS: u64 = 600;

type HmacSha1 = Hmac<Sha1>;

/// A password or shared secret. Printing it (Debug, Display) shows `<redacted>`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: for computing keys, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A static TURN user, given as `name:password` (the password may contain ':').
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct StaticUser {
    pub name: String,
    pub password: Secret,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid TURN user (want name:password, name not empty)")]
pub struct UserError;

impl FromStr for StaticUser {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((name, password)) if !name.is_empty() => {
                Ok(StaticUser { name: name.to_string(), password: Secret(password.to_string()) })
            }
            _ => Err(UserError),
        }
    }
}

impl TryFrom<String> for StaticUser {
    type Error = UserError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// `base64(HMAC-SHA1(secret, username))`: the password of a time-limited user.
pub fn rest_password(secret: &Secret, username: &str) -> String {
    let mut mac =
        HmacSha1::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Time-limited credentials for a client, as the REST endpoint hands them out.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub username: String,
    pub credential: String,
    pub ttl: u64,
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials").field("username", &self.username).field("ttl", &self.ttl).finish()
    }
}

/// Credentials for `user` valid `ttl` seconds from `now_unix`. `user` is reduced to
/// `[A-Za-z0-9_.-]`, at most 64 characters ("webrtc" when nothing is left).
pub fn issue(secret: &Secret, user: &str, ttl: u64, now_unix: u64) -> IssuedCredentials {
    let user: String =
        user.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).take(64).collect();
    let user = if user.is_empty() { "webrtc".to_string() } else { user };
    let username = format!("{}:{user}", now_unix.saturating_add(ttl));
    let credential = rest_password(secret, &username);
    IssuedCredentials { username, credential, ttl }
}

/// Why a request was not authenticated; each maps to the error response RFC 8489 asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// 400: MESSAGE-INTEGRITY without USERNAME, REALM or NONCE.
    BadRequest,
    /// 401: no MESSAGE-INTEGRITY, unknown user, expired time-limited user, wrong password.
    Unauthorized,
    /// 438: the nonce is too old or was not minted by this server for this client.
    StaleNonce,
}

impl AuthError {
    pub fn code(self) -> u16 {
        match self {
            AuthError::BadRequest => 400,
            AuthError::Unauthorized => 401,
            AuthError::StaleNonce => 438,
        }
    }
}

/// An authenticated request: who sent it and the key that signs the answer.
#[derive(Clone)]
pub struct Authed {
    pub username: String,
    pub key: IntegrityKey,
}

impl fmt::Debug for Authed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authed").field("username", &self.username).finish()
    }
}

/// Checks long-term credentials and mints nonces.
pub struct Authenticator {
    realm: String,
    /// Static users' keys, `MD5(name:realm:password)`, computed once.
    users: HashMap<String, IntegrityKey>,
    secret: Option<Secret>,
    nonce_key: [u8; 32],
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secret", &self.secret.is_some())
            .finish()
    }
}

impl Authenticator {
    pub fn new(realm: &str, users: &[StaticUser], secret: Option<Secret>, nonce_key: [u8; 32]) -> Self {
        let users = users
            .iter()
            .map(|u| (u.name.clone(), long_term_key(&u.name, u.password.expose(), realm)))
            .collect();
        Authenticator { realm: realm.to_string(), users, secret, nonce_key }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The key of `username` at `now_unix`, or None for an unknown or expired user.
    pub fn key_for(&self, username: &str, now_unix: u64) -> Option<IntegrityKey> {
        if let Some(k) = self.users.get(username) {
            return Some(k.clone());
        }
        let secret = self.secret.as_ref()?;
        let expiry: u64 = username.split(':').next()?.parse().ok()?;
        if expiry <= now_unix {
            return None;
        }
        Some(long_term_key(username, &rest_password(secret, username), &self.realm))
    }

    fn nonce_mac(&self, ts: u64, client: IpAddr) -> HmacSha1 {
        let mut mac = HmacSha1::new_from_slice(&self.nonce_key).expect("HMAC takes keys of any length");
        mac.update(&ts.to_be_bytes());
        match client {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        mac
    }

    /// A fresh nonce for `client`.
    pub fn make_nonce(&self, client: IpAddr, now_unix: u64) -> String {
        let tag = self.nonce_mac(now_unix, client).finalize().into_bytes();
        let hex: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{now_unix:x}-{hex}")
    }

    /// Is `nonce` one of ours, for `client`, and fresh?
    pub fn nonce_is_valid(&self, nonce: &str, client: IpAddr, now_unix: u64) -> bool {
        let Some((ts, hex)) = nonce.split_once('-') else {
            return false;
        };
        let Ok(ts) = u64::from_str_radix(ts, 16) else {
            return false;
        };
        if ts > now_unix.saturating_add(5) || now_unix.saturating_sub(ts) > NONCE_LIFETIME_SECS {
            return false;
        }
        if hex.len() != 16 || !hex.is_ascii() {
            return false;
        }
        let mut tag = [0u8; 8];
        for (i, b) in tag.iter_mut().enumerate() {
            match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                Ok(v) => *b = v,
                Err(_) => return false,
            }
        }
        self.nonce_mac(ts, client).verify_truncated_left(&tag).is_ok()
    }

    /// Authenticate a request with long-term credentials (RFC 8489 §9.2.4).
    pub fn authenticate(
        &self,
        msg: &Message<'_>,
        client: IpAddr,
        now_unix: u64,
    ) -> Result<Authed, AuthError> {
        if !msg.has_attribute(MessageIntegrity::TYPE) && !msg.has_attribute(MessageIntegritySha256::TYPE) {
            return Err(AuthError::Unauthorized);
        }
        let (Ok(username), Ok(realm), Ok(nonce)) =
            (msg.attribute::<Username>(), msg.attribute::<Realm>(), msg.attribute::<Nonce>())
        else {
            return Err(AuthError::BadRequest);
        };
        if !self.nonce_is_valid(nonce.nonce(), client, now_unix) {
            return Err(AuthError::StaleNonce);
        }
        if realm.realm() != self.realm {
            return Err(AuthError::Unauthorized);
        }
        let key = self.key_for(username.username(), now_unix).ok_or(AuthError::Unauthorized)?;
        msg.validate_integrity_with_key(&key).map_err(|_| AuthError::Unauthorized)?;
        Ok(Authed { username: username.username().to_string(), key })
    }
}

/// The long-term key `MD5(username:realm:password)` for SHA-1 MESSAGE-INTEGRITY.
pub fn long_term_key(username: &str, password: &str, realm: &str) -> IntegrityKey {
    LongTermKeyCredentials::new(username.to_string(), password.to_string(), realm.to_string())
        .make_key(IntegrityAlgorithm::Sha1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::message::{MessageWrite, MessageWriteExt, MessageWriteVec, BINDING};

    const NOW: u64 = 1_800_000_000;

    fn auth() -> Authenticator {
        let users = vec!["probe:probe:secret".parse().unwrap()];
        Authenticator::new("sluice", &users, Some(Secret::new("shh")), [7; 32])
    }

    fn request(user: &str, password: &str, realm: &str, nonce: &str) -> Vec<u8> {
        let mut m = Message::builder_request(BINDING, MessageWriteVec::new());
        m.add_attribute(&Username::new(user).unwrap()).unwrap();
        m.add_attribute(&Realm::new(realm).unwrap()).unwrap();
        m.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
        let key = long_term_key(user, password, realm);
        m.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1).unwrap();
        m.finish()
    }

    #[test]
    fn static_user_parse_and_redaction() {
        let u: StaticUser = "alice:pa:ss".parse().unwrap();
        assert_eq!((u.name.as_str(), u.password.expose()), ("alice", "pa:ss"));
        assert!(!format!("{u:?}").contains("pa:ss"));
        assert_eq!(format!("{}", Secret::new("x")), "<redacted>");
        assert!(":nope".parse::<StaticUser>().is_err());
        assert!("nocolon".parse::<StaticUser>().is_err());
    }

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("north", "1433895918:user")), computed with openssl
        // (`echo -n 1433895918:user | openssl dgst -binary -sha1 -hmac north | base64`).
        assert_eq!(rest_password(&Secret::new("north"), "1433895918:user"), "/gk4t5tUc08OpM3NjrVjHSFVNmY=");
        let c = issue(&Secret::new("shh"), "bob the user!", 3600, NOW);
        assert_eq!(c.username, format!("{}:bobtheuser", NOW + 3600));
        assert_eq!(c.credential, rest_password(&Secret::new("shh"), &c.username));
        assert!(!format!("{c:?}").contains(&c.credential));
        assert_eq!(issue(&Secret::new("shh"), "", 1, NOW).username, format!("{}:webrtc", NOW + 1));
    }

    #[test]
    fn keys_for_static_and_time_limited_users() {
        let a = auth();
        assert!(a.key_for("probe", NOW).is_some());
        assert!(a.key_for("nobody", NOW).is_none());
        let c = issue(&Secret::new("shh"), "u", 60, NOW);
        assert_eq!(a.key_for(&c.username, NOW), Some(long_term_key(&c.username, &c.credential, "sluice")));
        assert!(a.key_for(&c.username, NOW + 60).is_none(), "expired");
        assert!(a.key_for("notanumber:u", NOW).is_none());
        let no_secret = Authenticator::new("sluice", &[], None, [7; 32]);
        assert!(no_secret.key_for(&c.username, NOW).is_none());
    }

    #[test]
    fn nonces() {
        let a = auth();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let n = a.make_nonce(ip, NOW);
        assert!(a.nonce_is_valid(&n, ip, NOW));
        assert!(a.nonce_is_valid(&n, ip, NOW + NONCE_LIFETIME_SECS));
        assert!(!a.nonce_is_valid(&n, ip, NOW + NONCE_LIFETIME_SECS + 1), "stale");
        assert!(!a.nonce_is_valid(&n, "127.0.0.2".parse().unwrap(), NOW), "other client");
        let other = Authenticator::new("sluice", &[], None, [8; 32]);
        assert!(!other.nonce_is_valid(&n, ip, NOW), "other server key");
        for junk in [
            "",
            "-",
            "zz-00",
            "1-",
            "1-0011223344556677aa",
            "ffffffffffffffffff-0011223344556677",
            "1-é1223344556677",
        ] {
            assert!(!a.nonce_is_valid(junk, ip, NOW), "{junk}");
        }
    }

    #[test]
    fn authenticate_requests() {
        let a = auth();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let nonce = a.make_nonce(ip, NOW);
        let ok = request("probe", "probe:secret", "sluice", &nonce);
        let authed = a.authenticate(&Message::from_bytes(&ok).unwrap(), ip, NOW).unwrap();
        assert_eq!(authed.username, "probe");

        let wrong = request("probe", "guess", "sluice", &nonce);
        assert_eq!(
            a.authenticate(&Message::from_bytes(&wrong).unwrap(), ip, NOW).err(),
            Some(AuthError::Unauthorized)
        );
        let unknown = request("mallory", "x", "sluice", &nonce);
        assert_eq!(
            a.authenticate(&Message::from_bytes(&unknown).unwrap(), ip, NOW).err(),
            Some(AuthError::Unauthorized)
        );
        let realm = request("probe", "probe:secret", "other", &nonce);
        assert_eq!(
            a.authenticate(&Message::from_bytes(&realm).unwrap(), ip, NOW).err(),
            Some(AuthError::Unauthorized)
        );
        let stale = request("probe", "probe:secret", "sluice", &a.make_nonce(ip, NOW - 1000));
        assert_eq!(
            a.authenticate(&Message::from_bytes(&stale).unwrap(), ip, NOW).err(),
            Some(AuthError::StaleNonce)
        );

        let bare = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        assert_eq!(
            a.authenticate(&Message::from_bytes(&bare).unwrap(), ip, NOW).err(),
            Some(AuthError::Unauthorized)
        );
        let mut no_user = Message::builder_request(BINDING, MessageWriteVec::new());
        no_user
            .add_message_integrity_with_key(&long_term_key("a", "b", "c"), IntegrityAlgorithm::Sha1)
            .unwrap();
        let no_user = no_user.finish();
        assert_eq!(
            a.authenticate(&Message::from_bytes(&no_user).unwrap(), ip, NOW).err(),
            Some(AuthError::BadRequest)
        );

        let c = issue(&Secret::new("shh"), "web", 600, NOW);
        let rest = request(&c.username, &c.credential, "sluice", &nonce);
        assert!(a.authenticate(&Message::from_bytes(&rest).unwrap(), ip, NOW).is_ok());
        assert_eq!(
            a.authenticate(&Message::from_bytes(&rest).unwrap(), ip, NOW + 601).err(),
            Some(AuthError::StaleNonce),
            "the nonce is checked first"
        );
        let n2 = a.make_nonce(ip, NOW + 601);
        let rest = request(&c.username, &c.credential, "sluice", &n2);
        assert_eq!(
            a.authenticate(&Message::from_bytes(&rest).unwrap(), ip, NOW + 601).err(),
            Some(AuthError::Unauthorized)
        );
    }
}
