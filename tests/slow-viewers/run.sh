#!/bin/bash
# Viewers on slow links (issue 24), end to end. One server namespace and four client namespaces,
# each joined to the server by a veth pair of its own (198.18.20.0/24 and up):
#
#   pub  198.18.20.2  the publisher (Streamer page, simulcast by default) and node itself
#   v1   198.18.21.2  a viewer, unlimited
#   v2   198.18.22.2  a viewer, the server's side of its link limited to 600 kbit/s (tc tbf)
#   v3   198.18.23.2  a viewer, limited to 250 kbit/s, then lifted during the test
#
# The server runs in srv exactly as `cargo run --release` starts it (no flags; an API key in
# its environment for the REST checks), its address detected as 198.18.20.1 (its default
# route). Each viewer's Chromium runs in its own namespace (a wrapper executable), so tc on the
# server's side of a veth limits exactly one viewer. tests/slow-viewers/slow.spec.mjs measures.
#
# Usage (root): tests/slow-viewers/run.sh   Environment: SLUICE_BIN (default target/debug/sluice),
# CHROMIUM (default /usr/bin/chromium), KEEP_LOGS=1.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${SLUICE_BIN:-$repo/target/debug/sluice}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
chromium="${CHROMIUM:-/usr/bin/chromium}"
die() { echo "slow-viewers: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
command -v tc >/dev/null || die "tc not found: apt-get install iproute2"
[ -x "$bin" ] || die "server binary $bin not found: build it (or set SLUICE_BIN)"
[ -d "$repo/tests/node_modules/playwright-core" ] || die "tests/node_modules missing: run 'npm ci' in $repo/tests"
exec 2>&1

P="sluice-slow-$$"
SRV="$P-srv"
CLIENTS=(pub v1 v2 v3)
work="$(mktemp -d /tmp/sluice-slow.XXXXXX)"
server_pid=""
status=1

kill_ns_pids() {
    local pids
    pids="$(ip netns pids "$1" 2>/dev/null)" || return 0
    [ -n "$pids" ] || return 0
    kill $pids 2>/dev/null; sleep 0.5
    pids="$(ip netns pids "$1" 2>/dev/null)"
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null
}

cleanup() {
    for c in "${CLIENTS[@]}"; do kill_ns_pids "$P-$c"; done
    [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    kill_ns_pids "$SRV"
    for ns in "$SRV" "${CLIENTS[@]/#/$P-}"; do ip netns del "$ns" 2>/dev/null; rm -rf "/etc/netns/$ns"; done
    if [ "$status" -eq 0 ] && [ -z "${KEEP_LOGS:-}" ]; then rm -rf "$work"; else echo "slow-viewers: logs kept in $work"; fi
}
trap cleanup EXIT

# Stale namespaces of a killed run.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sluice-slow-[0-9]*-'); do
    owner="${ns#sluice-slow-}"; owner="${owner%%-*}"
    kill -0 "$owner" 2>/dev/null || { kill_ns_pids "$ns"; ip netns del "$ns" 2>/dev/null; rm -rf "/etc/netns/$ns"; }
done

nsprep() {
    mkdir -p "/etc/netns/$1" && echo "nameserver 127.0.0.1" >"/etc/netns/$1/resolv.conf"
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$1" link set lo up
}

ip netns add "$SRV" || die "ip netns add"
nsprep "$SRV"
i=20
for c in "${CLIENTS[@]}"; do
    ns="$P-$c"
    ip netns add "$ns" || die "ip netns add $ns"
    nsprep "$ns"
    ip link add "s-$c" netns "$SRV" type veth peer name eth0 netns "$ns" || die "veth $c"
    ip -n "$SRV" addr add "198.18.$i.1/24" dev "s-$c"
    ip -n "$SRV" link set "s-$c" up
    ip -n "$ns" addr add "198.18.$i.2/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "198.18.$i.1"
    # A wrapper that starts Chromium in this namespace (playwright's pipe survives `ip netns exec`).
    printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$ns" "$chromium" >"$work/chromium-$c"
    chmod +x "$work/chromium-$c"
    i=$((i + 1))
done
# The server's default route: its detected address is 198.18.20.1. Nothing forwards anywhere.
ip -n "$SRV" route add default via 198.18.20.2

echo "== server (no flags) in $SRV"
(cd "$repo" && exec ip netns exec "$SRV" env SLUICE_API_KEY="slow-key-$$" SLUICE_DATA_DIR="$work/data" \
    RUST_LOG="${RUST_LOG:-info,sluice_actors::webrtc::publisher=debug,sluice_actors::webrtc::subscriber=debug,sluice_actors::streams::fanout=trace}" "$bin" >"$work/server.log" 2>&1) &
server_pid=$!
for _ in $(seq 100); do grep -q "sluice .* started" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q "public_ips=\[198.18.20.1\]" "$work/server.log" || { cat "$work/server.log"; die "server did not start on 198.18.20.1"; }

echo "== tests (node in $P-pub; viewers' Chromium in $P-v1..v3)"
ip netns exec "$P-pub" env SLOW_ORIGIN="https://198.18.20.1:8888" SLOW_API_KEY="slow-key-$$" \
    SLOW_SRV_NS="$SRV" SLOW_CHROMIUM_DIR="$work" SLOW_SERVER_LOG="$work/server.log" \
    node --test --test-concurrency=1 "$repo/tests/slow-viewers/slow.spec.mjs"
status=$?
exit $status
