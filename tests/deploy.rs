//! Deployment (deploy/), checked without a Docker engine:
//! - the compose file passes docker-compose 1.29's offline `config` check, refuses to start
//!   without SLUICE_PUBLIC_IP, and publishes every port, the volumes, the health check;
//! - the Dockerfile passes hadolint and agrees with the compose file (ports, volume paths);
//! - the image's runtime layout, rebuilt in a temp folder (binary in /usr/local/bin, static and
//!   media copied to the image's paths, configured only by the image's ENV), runs as the image's
//!   non-root USER and answers /health, and `sluice --health-check` (the HEALTHCHECK) says
//!   healthy. It uses the debug binary the test suite builds anyway, not a release build, to
//!   keep the suite fast: the layout and permissions are what this checks, not the optimizer;
//! - the Caddyfile of the TLS front validates, and a real Caddy in front of a real server
//!   serves https /health and a wss:// WCS session.
//!
//! The tools (docker-compose, hadolint, caddy, node) are installed by tests/run-all.sh, which
//! sets SLUICE_DEPLOY_TOOLS=required; without that, a test whose tool is missing is skipped
//! with a message.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Every port the server listens on by default, as Docker names them.
const PORTS: [&str; 7] =
    ["8080/tcp", "8081/tcp", "9091/tcp", "31000/udp", "31000/tcp", "3478/udp", "3478/tcp"];

fn deploy(file: &str) -> PathBuf {
    Path::new(ROOT).join("deploy").join(file)
}

/// True if `tool` runs; false (test skipped) if it is missing, unless the suite requires it.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let required = std::env::var("SLUICE_DEPLOY_TOOLS").is_ok_and(|v| v == "required");
        assert!(!required, "{tool} is missing (tests/run-all.sh installs it)");
        eprintln!("SKIPPED: {tool} is not installed (tests/run-all.sh installs it)");
    }
    found
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The Dockerfile's instructions: (keyword, arguments), continuation lines joined, comments out.
fn dockerfile() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(deploy("Dockerfile")).expect("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(t);
                let (k, a) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
                out.push((k.to_ascii_uppercase(), a.trim().to_string()));
                cur.clear();
            }
        }
    }
    out
}

/// Arguments of every instruction `kw` of the final (runtime) stage.
fn runtime(kw: &str) -> Vec<String> {
    let ins = dockerfile();
    let last_from = ins.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    ins[last_from..].iter().filter(|(k, _)| k == kw).map(|(_, a)| a.clone()).collect()
}

/// The runtime stage's ENV, as KEY=value pairs.
fn image_env() -> BTreeMap<String, String> {
    runtime("ENV")
        .iter()
        .flat_map(|a| a.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn compose(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("docker-compose");
    c.arg("-f").arg(deploy("docker-compose.yml")).args(args).env_remove("SLUICE_PUBLIC_IP");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("docker-compose runs")
}

#[test]
fn compose_file_validates_offline() {
    if !have("docker-compose") {
        return;
    }
    let ip = [("SLUICE_PUBLIC_IP", "203.0.113.10")];
    let o = compose(&ip, &["config", "-q"]);
    assert!(o.status.success(), "docker-compose config -q: {}", text(&o));
    let o = compose(&ip, &["--profile", "tls", "config", "-q"]);
    assert!(o.status.success(), "with the tls profile: {}", text(&o));

    // Without the public address the stack refuses to start, and says why.
    let o = compose(&[], &["config", "-q"]);
    assert!(!o.status.success() && text(&o).contains("SLUICE_PUBLIC_IP"), "{}", text(&o));

    // The normalized file: every port published on the same number, the address passed on.
    let o = compose(&ip, &["config"]);
    let yaml = String::from_utf8_lossy(&o.stdout).to_string();
    let mut published = Vec::new();
    let (mut proto, mut port) = (String::new(), String::new());
    for line in yaml.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix("- protocol: ") {
            proto = p.to_string();
        } else if let Some(p) = line.strip_prefix("published: ") {
            port = p.trim_matches('\'').to_string();
        } else if let Some(t) = line.strip_prefix("target: ") {
            assert_eq!(port, t, "published on the same number inside and out: {line}");
            published.push(format!("{port}/{proto}"));
        }
    }
    for p in PORTS {
        assert!(published.iter().any(|x| x == p), "{p} not published: {published:?}");
    }
    for want in [
        "SLUICE_PUBLIC_IP: 203.0.113.10",
        "restart: unless-stopped",
        "stop_grace_period: 15s",
        "- --health-check",
        "profiles:",
    ] {
        assert!(yaml.contains(want), "no {want:?} in:\n{yaml}");
    }
    // The volumes are where the image keeps media and records.
    let env = image_env();
    for key in ["SLUICE_MEDIA_DIR", "SLUICE_RECORDS_DIR"] {
        let dir = &env[key];
        assert!(yaml.contains(&format!(":{dir}:rw")), "no volume on {dir} ({key}):\n{yaml}");
    }
}

#[test]
fn dockerfile_passes_hadolint_and_matches_the_server() {
    let env = image_env();
    for key in ["SLUICE_MEDIA_DIR", "SLUICE_RECORDS_DIR", "SLUICE_STATIC_DIR"] {
        assert!(env.get(key).is_some_and(|p| p.starts_with('/')), "{key} absolute in ENV: {env:?}");
    }
    let exposed: Vec<String> =
        runtime("EXPOSE").iter().flat_map(|a| a.split_whitespace()).map(String::from).collect();
    for p in PORTS {
        assert!(exposed.iter().any(|x| x == p), "EXPOSE lacks {p}: {exposed:?}");
    }
    let volumes = runtime("VOLUME").join(" ");
    for key in ["SLUICE_MEDIA_DIR", "SLUICE_RECORDS_DIR"] {
        assert!(volumes.contains(&env[key]), "no VOLUME for {key}: {volumes}");
    }
    assert!(runtime("HEALTHCHECK").iter().any(|h| h.contains("--health-check")), "HEALTHCHECK");
    let (uid, _) = image_user();
    assert!(uid > 0, "the image runs as a non-root user");
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).expect(".dockerignore");
    for p in ["target/", "node_modules/"] {
        assert!(ignore.lines().any(|l| l.trim().trim_start_matches("**/") == p), ".dockerignore lacks {p}");
    }

    if !have("hadolint") {
        return;
    }
    let o = Command::new("hadolint").arg(deploy("Dockerfile")).output().expect("hadolint runs");
    assert!(o.status.success(), "hadolint deploy/Dockerfile:\n{}", text(&o));
}

/// The runtime stage's numeric `USER uid:gid`.
fn image_user() -> (u32, u32) {
    let user = runtime("USER").pop().expect("a USER in the runtime stage");
    let (u, g) = user.split_once(':').unwrap_or((&user, &user));
    let num =
        |s: &str| s.parse::<u32>().unwrap_or_else(|_| panic!("USER {user}: numeric, as Kubernetes checks"));
    (num(u), num(g))
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst, &[]);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(path).status().expect("chown");
    assert!(st.success(), "chown {}", path.display());
}

/// Outside the image, `dir` (absolute, as the image has it) lives under `root`.
fn under(root: &Path, dir: &str) -> PathBuf {
    root.join(dir.trim_start_matches('/'))
}

#[test]
fn image_layout_runs_as_non_root_and_answers_health() {
    let root = std::env::temp_dir().join(format!("sluice-image-{}", new_id("root")));
    let env = image_env();
    let (uid, gid) = image_user();
    let workdir = runtime("WORKDIR").pop().expect("a WORKDIR");
    let bin = under(&root, "/usr/local/bin/sluice");
    std::fs::create_dir_all(bin.parent().expect("bin dir")).expect("mkdir");
    std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &bin).expect("copy the binary");
    copy_tree(&Path::new(ROOT).join("static"), &under(&root, &env["SLUICE_STATIC_DIR"]), &[]);
    let media = under(&root, &env["SLUICE_MEDIA_DIR"]);
    copy_tree(&Path::new(ROOT).join("media"), &media, &["records"]);
    let records = under(&root, &env["SLUICE_RECORDS_DIR"]);
    std::fs::create_dir_all(&records).expect("records dir");
    std::fs::create_dir_all(under(&root, &workdir)).expect("workdir");

    // As the image: USER uid:gid, media and records theirs, everything else root's. Without
    // root we cannot switch users, and we are not root anyway.
    let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let run_as = |cmd: &Path| -> Command {
        if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups"]).arg(cmd);
            c
        } else {
            Command::new(cmd)
        }
    };
    if as_root {
        chown(&media, uid, gid);
        chown(&records, uid, gid);
    }
    // Configured only by the image's ENV, plus what compose sets and free ports for the test.
    // (Variables of flags this build lacks are ignored.)
    let test_env = [
        ("SLUICE_PUBLIC_IP", "127.0.0.1"),
        ("SLUICE_BIND", "127.0.0.1"),
        ("SLUICE_WS_PORT", "0"),
        ("SLUICE_REST_PORT", "0"),
        ("SLUICE_HTTP_PORT", "0"),
        ("SLUICE_MEDIA_PORT", "0"),
        ("SLUICE_TURN_PORT", "0"),
        ("SLUICE_RTMP_PORT", "0"),
        ("SLUICE_RTSP_PORT", "0"),
    ];
    let log = root.join("server.log");
    let mut child = run_as(&bin)
        .current_dir(under(&root, &workdir))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k.clone(), under(&root, v).to_string_lossy().into_owned())))
        .envs(test_env)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the image's binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let port = |k: &str| -> u16 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} port in {line:?}: {}", log_text()))
    };
    let (rest, http) = (port("rest"), port("http"));

    if as_root {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("proc status");
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
        assert!(uid_line.split_whitespace().skip(1).all(|u| u == uid.to_string()), "{uid_line}");
    }
    for p in [rest, http] {
        let resp = ureq::get(&format!("http://127.0.0.1:{p}/health")).call().expect("/health answers 200");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let v: Value = resp.into_json().expect("JSON");
        assert_eq!(v["status"], "ok", "{v}");
        assert!(v["checks"].as_object().is_some_and(|c| c.values().all(|x| x == true)), "{v}");
    }
    let page = ureq::get(&format!("http://127.0.0.1:{http}/")).call().expect("the web root is served");
    assert_eq!(page.status(), 200);

    // The HEALTHCHECK command, as the same user with the same environment.
    let hc = run_as(&bin)
        .arg("--health-check")
        .env_clear()
        .envs([("SLUICE_REST_PORT", rest.to_string()), ("SLUICE_BIND", "127.0.0.1".into())])
        .output()
        .expect("health check runs");
    assert!(hc.status.success(), "sluice --health-check: {}", text(&hc));
    assert!(!log_text().contains("not writable"), "records writable by the image's user:\n{}", log_text());

    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(st.success());
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(std::time::Instant::now() < end, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "{}", log_text());
    let _ = std::fs::remove_dir_all(&root);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A WCS client through the TLS front: https REST /health and the https web root, then
/// `connection` over wss:// answered by `getUserData` (Node's fetch and WebSocket; the
/// certificate is from Caddy's internal CA and not checked).
const TLS_CLIENT: &str = r#"
const [wss, rest, web] = process.argv.slice(1);
const fail = (why) => { console.log('FAIL ' + why); process.exit(1); };
setTimeout(() => fail('timeout'), 8000);
for (const url of [rest + '/health', web + '/']) {
  const r = await fetch(url).catch((e) => fail(url + ' ' + e.cause));
  if (r.status !== 200) fail(url + ' ' + r.status);
}
const ws = new WebSocket(wss);
ws.onerror = (e) => fail('ws ' + e.message);
ws.onopen = () => ws.send(JSON.stringify({ message: 'connection',
  data: [{ appKey: 'defaultApp', mediaProviders: ['WebRTC'] }] }));
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.message === 'getUserData') { console.log('OK ' + m.data[0].status); process.exit(0); }
};
"#;

#[test]
fn tls_front_proxies_wss_and_https() {
    if !have("caddy") {
        return;
    }
    let xdg = std::env::temp_dir().join(format!("sluice-caddy-{}", new_id("x")));
    let caddyfile = deploy("Caddyfile");
    let validate = Command::new("caddy")
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .envs([("XDG_DATA_HOME", &xdg), ("XDG_CONFIG_HOME", &xdg)])
        .output()
        .expect("caddy runs");
    assert!(validate.status.success(), "caddy validate: {}", text(&validate));
    if !have("node") {
        return;
    }

    let s = Server::start();
    let (wss, https_rest, https, http) = (free_port(), free_port(), free_port(), free_port());
    let env: Vec<(&str, String)> = vec![
        ("SLUICE_DOMAIN", "localhost".into()),
        ("SLUICE_TLS", "tls internal".into()),
        ("SLUICE_UPSTREAM", "127.0.0.1".into()),
        ("SLUICE_WS_PORT", s.ws.to_string()),
        ("SLUICE_REST_PORT", s.rest.to_string()),
        ("SLUICE_HTTP_PORT", s.http.to_string()),
        ("SLUICE_WSS_PORT", wss.to_string()),
        ("SLUICE_HTTPS_REST_PORT", https_rest.to_string()),
        ("SLUICE_HTTPS_PORT", https.to_string()),
        ("SLUICE_CADDY_HTTP_PORT", http.to_string()),
        ("SLUICE_CADDY_ADMIN", "off".into()),
    ];
    let caddy_log = xdg.join("caddy.log");
    std::fs::create_dir_all(&xdg).expect("caddy dir");
    let mut caddy = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .envs(env)
        .envs([("XDG_DATA_HOME", &xdg), ("XDG_CONFIG_HOME", &xdg)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&caddy_log).expect("log"))
        .spawn()
        .expect("caddy run");
    // Caddy listens once its certificates are made (internal CA: well under a second).
    let end = std::time::Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", wss)).is_err() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("node")
        .args(["--experimental-websocket", "--no-warnings", "--input-type=module", "-e", TLS_CLIENT])
        .arg(format!("wss://localhost:{wss}/"))
        .arg(format!("https://localhost:{https_rest}"))
        .arg(format!("https://localhost:{https}"))
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .output()
        .expect("node runs");
    let _ = caddy.kill();
    let _ = caddy.wait();
    let log = std::fs::read_to_string(&caddy_log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&xdg);
    assert!(out.status.success(), "through the TLS front: {}\ncaddy log:\n{log}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK ESTABLISHED"), "{}", text(&out));
}
