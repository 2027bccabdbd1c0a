#!/bin/bash
# Load spread over a cluster: a redis-server and three sluice nodes on loopback (an origin and
# two edges, each its own process on its own ports), then sluice-bench publishes on the origin
# and adds subscribers round-robin on the two edges (--edge). It prints, per step, each node's
# CPU and the viewers per edge, and at the end the delay the edge hop adds over a viewer of the
# origin (p50, p99). Everything it started is stopped at the end.
#
# Usage: bench/cluster.sh [sluice-bench arguments...]
#   e.g. bench/cluster.sh --subscribers 100 --step 50 --step-secs 10 --bitrate 600k
# Environment: SLUICE_BIN (default target/release/sluice), BENCH_BIN (default
# target/release/sluice-bench). Needs redis-server (apt-get install redis-server).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SLUICE_BIN:-$repo/target/release/sluice}"
bench="${BENCH_BIN:-$repo/target/release/sluice-bench}"
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 2; }
work="$(mktemp -d /tmp/sluice-cluster-bench.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=($!)

# start_node NAME: a node on random loopback ports; sets ws_NAME and pid_NAME.
start_node() {
    local n="$1" line
    mkfifo "$work/$n.fifo"
    "$bin" --public-ip 127.0.0.1 --no-tls --no-ice-tcp --ws-port 0 --rest-port 0 --http-port 0 \
        --media-port 0 --turn-port 0 --rtmp-port 0 --hls-port 0 --data-dir "$work/$n" \
        --cluster-redis "redis://127.0.0.1:$port/" --cluster-secret "cluster-bench-secret-$$" \
        --cluster-node-id "$n" >"$work/$n.fifo" 2>"$work/$n.log" &
    pids+=($!)
    eval "pid_$n=$!"
    read -r line <"$work/$n.fifo"
    cat "$work/$n.fifo" >/dev/null &
    eval "ws_$n=ws://127.0.0.1:$(sed -n 's/.* ws=\([0-9]*\).*/\1/p' <<<"$line")/"
}
for n in origin edge1 edge2; do start_node "$n"; done
sleep 1.5 # every node has written its record once
echo "origin $ws_origin (pid $pid_origin), edge1 $ws_edge1 (pid $pid_edge1), edge2 $ws_edge2 (pid $pid_edge2)"
"$bench" --ws "$ws_origin" --pid "$pid_origin" --edge "$ws_edge1" --edge-pid "$pid_edge1" \
    --edge "$ws_edge2" --edge-pid "$pid_edge2" "$@"
