//! Deployment (deploy/), checked without a Docker engine:
//! - the compose file passes docker-compose 1.29's offline `config` check, refuses to start
//!   without SLUICE_PUBLIC_IP, and publishes every port, the volumes, the health check;
//! - the Dockerfile passes hadolint and agrees with the compose file (ports, volume paths);
//! - the image's runtime layout, rebuilt in a temp folder (binary in /usr/local/bin, static and
//!   media copied to the image's paths, configured only by the image's ENV), runs as the image's
//!   non-root USER and answers /health, and `sluice --health-check` (the HEALTHCHECK) says
//!   healthy; it generates its self-signed certificate in the image's data folder (the volume)
//!   and serves https /health and the https web root with it. It uses the debug binary the test
//!   suite builds anyway, not a release build, to keep the suite fast: the layout and
//!   permissions are what this checks, not the optimizer;
//! - the server does TLS itself (no front in the compose file any more): https REST, https
//!   pages and a wss:// WCS session on its own ports; an operator's certificate given with
//!   --tls-cert/--tls-key is served, and a renewed pair written over the files is served within
//!   15 s without a restart.
//!
//! The tools (docker-compose, hadolint, node, openssl) are installed by tests/run-all.sh, which
//! sets SLUICE_DEPLOY_TOOLS=required; without that, a test whose tool is missing is skipped
//! with a message.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Every port the server listens on by default, as Docker names them: ws, REST, web; wss,
/// https REST, https web; media; TURN; RTMP; HLS.
const PORTS: [&str; 12] = [
    "8080/tcp",
    "8081/tcp",
    "9091/tcp",
    "8443/tcp",
    "8444/tcp",
    "8888/tcp",
    "31000/udp",
    "31000/tcp",
    "3478/udp",
    "3478/tcp",
    "1935/tcp",
    "8082/tcp",
];
/// The folders the server writes (named volumes in compose, VOLUMEs in the image), by the
/// image's ENV keys.
const WRITABLE: [&str; 3] = ["SLUICE_MEDIA_DIR", "SLUICE_RECORDS_DIR", "SLUICE_DATA_DIR"];
/// Where the compose file mounts the operator's certificate folder.
const CERTS_DIR: &str = "/opt/sluice/certs";

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
    compose_file("docker-compose.yml", env, args)
}

fn compose_file(file: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("docker-compose");
    c.arg("-f")
        .arg(deploy(file))
        .args(args)
        .env_remove("SLUICE_PUBLIC_IP")
        .env_remove("SLUICE_CLUSTER_SECRET");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("docker-compose runs")
}

/// The ports a normalized compose file (or one service's part of it) publishes, as
/// `port/proto`, each asserted to be published on the same number inside and out.
fn published_ports(yaml: &str, service: &str) -> Vec<String> {
    let mut published = Vec::new();
    let (mut proto, mut port) = (String::new(), String::new());
    for line in yaml.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix("- protocol: ") {
            proto = p.to_string();
        } else if let Some(p) = line.strip_prefix("published: ") {
            port = p.trim_matches('\'').to_string();
        } else if let Some(t) = line.strip_prefix("target: ") {
            assert_eq!(port, t, "{service}: published on the same number inside and out: {line}");
            published.push(format!("{port}/{proto}"));
        }
    }
    published
}

#[test]
fn compose_file_validates_offline() {
    if !have("docker-compose") {
        return;
    }
    let ip = [("SLUICE_PUBLIC_IP", "203.0.113.10")];
    let o = compose(&ip, &["config", "-q"]);
    assert!(o.status.success(), "docker-compose config -q: {}", text(&o));

    // Without the public address the stack refuses to start, and says why.
    let o = compose(&[], &["config", "-q"]);
    assert!(!o.status.success() && text(&o).contains("SLUICE_PUBLIC_IP"), "{}", text(&o));

    // The normalized file: every port published on the same number, the address passed on.
    let o = compose(&ip, &["config"]);
    let yaml = String::from_utf8_lossy(&o.stdout).to_string();
    let published = published_ports(&yaml, "sluice");
    for p in PORTS {
        assert!(published.iter().any(|x| x == p), "{p} not published: {published:?}");
    }
    for want in [
        "SLUICE_PUBLIC_IP: 203.0.113.10",
        "restart: unless-stopped",
        "stop_grace_period: 15s",
        "- --health-check",
    ] {
        assert!(yaml.contains(want), "no {want:?} in:\n{yaml}");
    }
    // One service: the server does TLS itself on 8443/8444/8888, a front would collide.
    let services: Vec<&str> = yaml
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| l.len() > 2 && l.starts_with("  ") && !l.starts_with("   "))
        .collect();
    assert_eq!(services, ["  sluice:"], "services in:\n{yaml}");
    assert!(!yaml.to_lowercase().contains("caddy"), "a TLS front left in:\n{yaml}");
    // The volumes are where the image keeps media, records and its data (the certificate).
    let env = image_env();
    for key in WRITABLE {
        let dir = &env[key];
        assert!(yaml.contains(&format!(":{dir}:rw")), "no volume on {dir} ({key}):\n{yaml}");
    }
    // The operator's certificate folder, read-only, and the paths passed through when set.
    assert!(yaml.contains(&format!("/certs:{CERTS_DIR}:ro")), "no certificate folder:\n{yaml}");
    let tls = [
        ("SLUICE_PUBLIC_IP", "203.0.113.10"),
        ("SLUICE_TLS_CERT", "/opt/sluice/certs/fullchain.pem"),
        ("SLUICE_TLS_KEY", "/opt/sluice/certs/privkey.pem"),
        ("SLUICE_CERTS_DIR", "/srv/sluice/certs"),
    ];
    let o = compose(&tls, &["config"]);
    assert!(o.status.success(), "with a certificate: {}", text(&o));
    let yaml = String::from_utf8_lossy(&o.stdout).to_string();
    for want in [
        "SLUICE_TLS_CERT: /opt/sluice/certs/fullchain.pem",
        "SLUICE_TLS_KEY: /opt/sluice/certs/privkey.pem",
        &format!("- /srv/sluice/certs:{CERTS_DIR}:ro"),
    ] {
        assert!(yaml.contains(want), "no {want:?} in:\n{yaml}");
    }
}

/// The cluster compose file (origin, two edges, Redis): valid offline, refuses to start without
/// the public address or the cluster secret, every node on the one Redis with the secret, each
/// port published on the same number inside and out and on no two services, Redis on none.
#[test]
fn cluster_compose_file_validates_offline() {
    if !have("docker-compose") {
        return;
    }
    let env = [("SLUICE_PUBLIC_IP", "203.0.113.10"), ("SLUICE_CLUSTER_SECRET", "0123456789abcdef-secret")];
    let o = compose_file("docker-compose.cluster.yml", &env, &["config"]);
    assert!(o.status.success(), "docker-compose config: {}", text(&o));
    for missing in ["SLUICE_PUBLIC_IP", "SLUICE_CLUSTER_SECRET"] {
        let partial: Vec<(&str, &str)> = env.iter().copied().filter(|(k, _)| *k != missing).collect();
        let o = compose_file("docker-compose.cluster.yml", &partial, &["config", "-q"]);
        assert!(!o.status.success() && text(&o).contains(missing), "without {missing}: {}", text(&o));
    }
    let yaml = String::from_utf8_lossy(&o.stdout).to_string();
    // Each service's block of the normalized file.
    let mut services: BTreeMap<String, String> = BTreeMap::new();
    let mut current = None;
    for line in yaml.lines().skip_while(|l| *l != "services:").skip(1) {
        if !line.is_empty() && !line.starts_with(' ') {
            break;
        }
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            current = Some(line.trim().trim_end_matches(':').to_string());
        } else if let Some(c) = &current {
            services.entry(c.clone()).or_default().push_str(&format!("{}\n", line.trim()));
        }
    }
    assert_eq!(services.keys().collect::<Vec<_>>(), ["edge1", "edge2", "origin", "redis"], "{yaml}");
    let mut taken: Vec<String> = Vec::new();
    for (name, block) in &services {
        let published = published_ports(block, name);
        if name == "redis" {
            assert!(published.is_empty(), "Redis must not be published: {published:?}");
            continue;
        }
        for want in [
            "SLUICE_CLUSTER_REDIS: redis://redis:6379/",
            "SLUICE_CLUSTER_SECRET: 0123456789abcdef-secret",
            "SLUICE_PUBLIC_IP: 203.0.113.10",
            "- --health-check",
        ] {
            assert!(block.contains(want), "{name}: no {want:?} in\n{block}");
        }
        // What a node needs: wss and ws signalling, https and http REST, https pages, media
        // over UDP and TCP on its configured numbers.
        let port_of = |key: &str, default: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .unwrap_or(default)
                .trim_matches('\'')
                .to_string()
        };
        for (key, default, proto) in [
            ("SLUICE_WSS_PORT", "8443", "tcp"),
            ("SLUICE_WS_PORT", "8080", "tcp"),
            ("SLUICE_REST_HTTPS_PORT", "8444", "tcp"),
            ("SLUICE_REST_PORT", "8081", "tcp"),
            ("SLUICE_HTTPS_PORT", "8888", "tcp"),
            ("SLUICE_MEDIA_PORT", "31000", "udp"),
            ("SLUICE_MEDIA_PORT", "31000", "tcp"),
        ] {
            let p = format!("{}/{proto}", port_of(key, default));
            assert!(published.contains(&p), "{name}: {key} {p} not published: {published:?}");
        }
        for p in published {
            assert!(!taken.contains(&p), "{name}: {p} published twice on the host");
            taken.push(p);
        }
    }
}

#[test]
fn dockerfile_passes_hadolint_and_matches_the_server() {
    let env = image_env();
    for key in WRITABLE.iter().chain(&["SLUICE_STATIC_DIR"]) {
        assert!(env.get(*key).is_some_and(|p| p.starts_with('/')), "{key} absolute in ENV: {env:?}");
    }
    let exposed: Vec<String> =
        runtime("EXPOSE").iter().flat_map(|a| a.split_whitespace()).map(String::from).collect();
    for p in PORTS {
        assert!(exposed.iter().any(|x| x == p), "EXPOSE lacks {p}: {exposed:?}");
    }
    let volumes = runtime("VOLUME").join(" ");
    let run = runtime("RUN").join(" && ");
    let commands: Vec<&str> = run.split("&&").map(str::trim).collect();
    for key in WRITABLE {
        assert!(volumes.contains(&env[key]), "no VOLUME for {key}: {volumes}");
        // Created and given to the user before the VOLUME, so a new named volume is theirs.
        let dir = env[key].as_str();
        for cmd in ["mkdir", "chown"] {
            let done = commands.iter().any(|c| c.starts_with(cmd) && c.split_whitespace().any(|w| w == dir));
            assert!(done, "{dir} ({key}): no `{cmd}` of it in the runtime stage's RUN:\n{run}");
        }
    }
    // No system library: Opus is pure Rust now, nothing to install for it or to find it.
    for ins in dockerfile().iter().filter(|(k, _)| k == "RUN") {
        for lib in ["opus", "pkg-config", "cmake"] {
            assert!(!ins.1.contains(lib), "the build needs no {lib}: RUN {}", ins.1);
        }
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
    let data = under(&root, &env["SLUICE_DATA_DIR"]);
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::create_dir_all(under(&root, &workdir)).expect("workdir");

    // As the image: USER uid:gid, media, records and data theirs, everything else root's (the
    // working directory too: a certificate written anywhere but the data folder fails). Without
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
        chown(&data, uid, gid);
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
        ("SLUICE_HLS_PORT", "0"),
        ("SLUICE_RTSP_PORT", "0"),
        ("SLUICE_WSS_PORT", "0"),
        ("SLUICE_HTTPS_PORT", "0"),
        ("SLUICE_REST_HTTPS_PORT", "0"),
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
        ready_port(&line, k).unwrap_or_else(|| panic!("no {k} port in {line:?}: {}", log_text()))
    };
    let (rest, http) = (port("rest"), port("http"));
    let (wss, rest_https, https) = (port("wss"), port("rest_https"), port("https"));
    assert!(wss > 0 && rest_https > 0 && https > 0, "TLS on by default: {line}");

    if as_root {
        let uids = proc_status(child.id(), "Uid");
        assert!(uids.split_whitespace().all(|u| u == uid.to_string()), "Uid: {uids}");
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

    // The self-signed certificate, generated at first start in the data folder (the volume that
    // keeps it across upgrades), written by the image's user, the key private.
    let (cert, key) = (data.join("tls/cert.pem"), data.join("tls/key.pem"));
    for f in [&cert, &key] {
        let m = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}\n{}", f.display(), log_text()));
        if as_root {
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{} written by the image's user", f.display());
        }
    }
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key readable by others: {mode:o}");
    assert!(std::fs::read_to_string(&cert).expect("cert").contains("BEGIN CERTIFICATE"));
    // https /health (REST), the https web root and a wss:// session, with that certificate.
    if have("node") {
        let out = tls_client(wss, rest_https, https);
        assert!(out.contains("OK ESTABLISHED"), "https and wss of the image's layout: {out}\n{}", log_text());
        if have("openssl") {
            assert_eq!(
                served_fingerprint(https),
                file_fingerprint(&cert),
                "the data folder's certificate is served"
            );
        }
    }

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

/// A WCS client over TLS: https REST /health and the https web root, then `connection` over
/// wss:// answered by `getUserData` (Node's fetch and WebSocket; the certificate is
/// self-signed and not checked: NODE_TLS_REJECT_UNAUTHORIZED=0).
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

/// Run [`TLS_CLIENT`] against a server's wss, https REST and https web ports; its output.
fn tls_client(wss: u16, rest_https: u16, https: u16) -> String {
    let out = Command::new("node")
        .args(["--experimental-websocket", "--no-warnings", "--input-type=module", "-e", TLS_CLIENT])
        .arg(format!("wss://localhost:{wss}/"))
        .arg(format!("https://localhost:{rest_https}"))
        .arg(format!("https://localhost:{https}"))
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .output()
        .expect("node runs");
    text(&out)
}

/// The SHA-256 fingerprint of the certificate a TLS port serves ("AB:CD:..."), or why none.
fn served_fingerprint(port: u16) -> Result<String, String> {
    const SCRIPT: &str = r#"
import tls from 'node:tls';
const s = tls.connect({ host: '127.0.0.1', port: +process.argv[1], servername: 'localhost',
  rejectUnauthorized: false }, () => { console.log(s.getPeerCertificate().fingerprint256); s.destroy(); });
s.on('error', (e) => { console.log('ERROR ' + e.message); process.exit(1); });
setTimeout(() => { console.log('ERROR timeout'); process.exit(1); }, 5000).unref();
"#;
    let out = Command::new("node")
        .args(["--no-warnings", "--input-type=module", "-e", SCRIPT])
        .arg(port.to_string())
        .output()
        .expect("node runs");
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && t.len() == 95 {
        Ok(t)
    } else {
        Err(text(&out))
    }
}

/// The SHA-256 fingerprint of a PEM certificate file, as [`served_fingerprint`] gives it.
fn file_fingerprint(pem: &Path) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    // "sha256 Fingerprint=AB:CD:..." (OpenSSL 3) or "SHA256 Fingerprint=..." (1.1).
    let t = String::from_utf8_lossy(&out.stdout);
    match t.trim().split_once('=') {
        Some((_, f)) if out.status.success() => Ok(f.to_ascii_uppercase()),
        _ => Err(text(&out)),
    }
}

/// A fresh self-signed P-256 pair (valid two days) written to `cert` and `key`.
fn make_pair(cert: &Path, key: &Path) {
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "openssl req: {}", text(&o));
}

#[test]
fn server_serves_https_and_wss_itself() {
    if !have("node") {
        return;
    }
    let s = Server::start();
    assert!(s.wss > 0 && s.rest_https > 0 && s.https > 0, "TLS ports on by default: {}", s.log_text());
    let out = tls_client(s.wss, s.rest_https, s.https);
    assert!(out.contains("OK ESTABLISHED"), "https and wss from the server itself: {out}");
    // With the self-signed certificate it generated at first start in its data folder.
    let cert = s.media_dir.parent().expect("server dir").join("data/tls/cert.pem");
    assert!(cert.exists(), "no generated certificate at {}", cert.display());
    if have("openssl") {
        for port in [s.wss, s.rest_https, s.https] {
            assert_eq!(served_fingerprint(port), file_fingerprint(&cert), "port {port}");
        }
    }
}

#[test]
fn operator_certificate_is_served_and_renewals_are_picked_up() {
    if !have("openssl") || !have("node") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sluice-certs-{}", new_id("c")));
    std::fs::create_dir_all(dir.join("next")).expect("cert dir");
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    make_pair(&cert, &key);
    let first = file_fingerprint(&cert).expect("fingerprint");
    let (c, k) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let mut s = Server::start_with(&["--tls-cert", &c, "--tls-key", &k]);
    for port in [s.wss, s.rest_https, s.https] {
        assert_eq!(served_fingerprint(port).as_ref(), Ok(&first), "the operator's certificate on {port}");
    }
    assert!(
        !s.media_dir.parent().expect("server dir").join("data/tls/cert.pem").exists(),
        "self-signed made anyway"
    );

    // A renewal: a new pair written over the same files (key first, as ACME clients do).
    let (next_cert, next_key) = (dir.join("next/c.pem"), dir.join("next/k.pem"));
    make_pair(&next_cert, &next_key);
    let renewed = file_fingerprint(&next_cert).expect("fingerprint");
    assert_ne!(renewed, first);
    std::fs::write(&key, std::fs::read(&next_key).expect("new key")).expect("replace the key");
    std::fs::write(&cert, std::fs::read(&next_cert).expect("new cert")).expect("replace the cert");
    let replaced = Instant::now();
    // Checked every 10 s: served well within 15 s, by the same process.
    let served = loop {
        let now = served_fingerprint(s.https);
        if now.as_ref() == Ok(&renewed) || replaced.elapsed() > Duration::from_secs(15) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(served, Ok(renewed.clone()), "the renewed certificate within 15 s");
    eprintln!("renewed certificate served {:.1} s after the files changed", replaced.elapsed().as_secs_f64());
    for port in [s.wss, s.rest_https] {
        assert_eq!(served_fingerprint(port), Ok(renewed.clone()), "renewed on {port} too");
    }
    assert!(s.is_running(), "not restarted");
    assert!(s.log_text().contains("TLS certificate reloaded"), "{}", s.log_text());
    let out = tls_client(s.wss, s.rest_https, s.https);
    assert!(out.contains("OK ESTABLISHED"), "https and wss after the renewal: {out}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
