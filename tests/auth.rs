//! Access control against the real binary: JWKS keys fetched from a URL and rotated (a key added
//! is accepted after the refresh, a removed one refused), tokens at `connection` and per
//! stream over the WCS WebSocket, and the management API's defaults.
//!
//! The JWKS is served by a tiny HTTP server in the test (std only) whose document the test
//! swaps; tokens are ES256, signed with P-256 keys made by rcgen.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A P-256 key: its JWK (public part) and a signer.
struct EcKey {
    kid: String,
    jwk: Value,
    encoding: EncodingKey,
}

fn ec_key(kid: &str) -> EcKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let raw = pair.public_key_raw(); // 0x04 || X || Y
    assert_eq!((raw.len(), raw[0]), (65, 4));
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": B64URL.encode(&raw[1..33]), "y": B64URL.encode(&raw[33..65]),
    });
    let encoding = EncodingKey::from_ec_der(pair.serialized_der());
    EcKey { kid: kid.into(), jwk, encoding }
}

fn token(key: &EcKey, grants: Value, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, &json!({"sub": "tester", "exp": now + exp_in, "grants": grants}), &key.encoding)
        .expect("sign")
}

/// Serves `doc` at any path; returns the port and the number of fetches so far.
fn jwks_server(doc: Arc<Mutex<String>>) -> (u16, Arc<Mutex<u32>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(Mutex::new(0u32));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = doc.lock().unwrap().clone();
            *h.lock().unwrap() += 1;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.flush();
            let mut rest = Vec::new();
            let _ = c.set_read_timeout(Some(Duration::from_millis(10)));
            let _ = c.read_to_end(&mut rest);
        }
    });
    (port, hits)
}

fn jwks(keys: &[&EcKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// GET /rest-api/stream/find_all with a bearer token: the status code.
fn api_with(server: &Server, bearer: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}/rest-api/stream/find_all", server.rest);
    match ureq::get(&url).set("Authorization", &format!("Bearer {bearer}")).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    }
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jwks_keys_rotate() {
    let (a, b) = (ec_key("key-a"), ec_key("key-b"));
    let doc = Arc::new(Mutex::new(jwks(&[&a])));
    let (port, hits) = jwks_server(doc.clone());
    let url = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
    let server = Server::start_with(&["--jwks-url", &url, "--jwks-refresh", "1"]);
    let api = json!({"api": true});
    let (ta, tb) = (token(&a, api.clone(), 300), token(&b, api.clone(), 300));
    // The first fetch happens before the server is ready.
    assert!(*hits.lock().unwrap() >= 1);
    assert_eq!(api_with(&server, &ta), 200);
    assert_eq!(api_with(&server, &tb), 403, "a key not in the JWKS");
    assert_eq!(api_with(&server, &token(&a, json!({"play": true}), 300)), 403, "no api grant");
    assert_eq!(api_with(&server, &token(&a, api.clone(), -600)), 403, "expired");

    // Rotation: b added, a removed.
    *doc.lock().unwrap() = jwks(&[&b]);
    wait_for("key b accepted after the refresh", Duration::from_secs(5), || api_with(&server, &tb) == 200);
    assert_eq!(api_with(&server, &ta), 403, "a removed key is refused");

    // A broken document keeps the keys in force.
    *doc.lock().unwrap() = "{not json".into();
    let before = *hits.lock().unwrap();
    wait_for("another fetch", Duration::from_secs(5), || *hits.lock().unwrap() > before + 1);
    assert_eq!(api_with(&server, &tb), 200);
    assert!(server.log_text().contains("JWKS not usable"), "{}", server.log_text());
}

fn connect_with(server: &Server, custom: Value) -> Wcs {
    let mut c = Wcs::open(&server.ws_url());
    c.send(
        "connection",
        json!({"appKey": "defaultApp", "mediaProviders": ["WebRTC"], "clientVersion": "2.0", "custom": custom}),
    );
    c
}

#[test]
fn tokens_over_the_websocket() {
    let secret = "sixteen-chars-or-more";
    let server = Server::start_with(&["--jwt-secret", secret]);
    // `sluice token` mints them, with the server's secret unless the args name another.
    let mint = |args: &[&str]| -> String {
        let secret_args = if args.contains(&"--secret") { vec![] } else { vec!["--secret", secret] };
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("token")
            .args(secret_args)
            .args(args)
            .output()
            .expect("sluice token");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // A bad token at connection: `fail` with the reason, then the socket closes (1008).
    let mut c = connect_with(&server, json!({"token": "not.a.token"}));
    let f = c.expect("fail", |_| true);
    assert_eq!(f["apiMethod"], "connection");
    assert!(f["info"].as_str().unwrap().starts_with("Restricted access: malformed token"), "{f}");
    assert_eq!(c.wait_closed(STEP), Some(Some(1008)));
    let mut c = connect_with(
        &server,
        json!({"token": mint(&["--publish", "*", "--secret", "wrong-secret-0000000"])}),
    );
    assert!(c.expect("fail", |_| true)["info"].as_str().unwrap().contains("bad token signature"));

    // No token: the session is established, but streams are refused and nothing is created.
    let mut c = connect_with(&server, json!({}));
    c.expect("getUserData", |_| true);
    let name = new_id("secret-cam");
    let (id, _offer, res) = request_publish(&mut c, &name, Video::H264);
    let st = res.expect_err("refused");
    assert_eq!(
        (st["status"].as_str(), st["info"].as_str()),
        (Some("FAILED"), Some("Restricted access: no token"))
    );
    assert_eq!(st["mediaSessionId"], id);
    assert_eq!(server.rest("/rest-api/stream/find_all", None), (200, json!([])));

    // A stream token without the grant; then one with it (the stream's token wins over none).
    let (_, _, res) = request_publish_with(&mut c, &name, json!({"token": mint(&["--publish", "other-*"])}));
    assert_eq!(
        res.expect_err("refused")["info"],
        format!("Restricted access: token grants no publish of {name}")
    );
    let good = mint(&["--publish", "secret-cam-*", "--play", "*"]);
    let (_, _, res) = request_publish_with(&mut c, &name, json!({"token": good, "app": "kept"}));
    assert!(res.is_ok(), "{res:?}");
    // The stream object keeps the page's custom fields, never the token.
    let (_, all) = server.rest("/rest-api/stream/find_all", None);
    assert_eq!(all[0]["custom"], json!({"app": "kept"}), "{all}");
    // Recording needs its own grant.
    let rec = new_id("secret-cam");
    let (_, _, res) = request_publish_full(&mut c, &rec, Video::H264, true, json!({"token": good}));
    assert_eq!(
        res.expect_err("refused")["info"],
        format!("Restricted access: token grants no record of {rec}")
    );
}

#[test]
fn limits_refuse_with_clear_errors_and_count() {
    let server = Server::start_with(&[
        "--max-streams",
        "1",
        "--max-viewers-per-stream",
        "1",
        "--max-messages-per-sec",
        "5",
    ]);
    let mut a = Wcs::connect(&server);
    let name = new_id("limited");
    let (_pid, _peer) = publish(&mut a, &name, Video::H264);
    let (_, _, res) = request_publish(&mut a, &new_id("second"), Video::H264);
    assert_eq!(res.expect_err("refused")["info"], "Too many streams on this server");
    let mut v1 = Wcs::connect(&server);
    let (_vid, _viewer) = play(&mut v1, &name);
    let mut v2 = Wcs::connect(&server);
    let offer = Offering::new(false, Video::H264);
    let (_, res) = request_play(&mut v2, &name, &offer.sdp);
    assert_eq!(res.expect_err("refused")["info"], "Too many viewers of this stream");

    // A flood: the burst (10) passes, then `fail` "Too many messages"; the session lives on.
    let mut f = Wcs::connect(&server);
    for _ in 0..40 {
        f.send("ping", Value::Null);
    }
    let fail = f.expect("fail", |_| true);
    assert_eq!(fail["info"], "Too many messages: slow down");
    std::thread::sleep(Duration::from_millis(600));
    f.send("availableStream", json!({"mediaSessionId": "x", "name": name}));
    f.expect("availableStream", |_| true);
    let (_, health) = server.rest("/health", None);
    let refused = &health["refused"];
    assert!(
        refused["streams"] == 1 && refused["viewers"] == 1 && refused["messages"].as_u64() > Some(0),
        "{health}"
    );
    let log = server.log_text();
    assert_eq!(log.matches("limit reached").count(), 3, "once per session:\n{log}");
}
