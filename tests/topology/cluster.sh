#!/bin/bash
# Cluster topology test: three sluice nodes, each in a network namespace of its own, a real
# redis-server, and Chromium in a fifth namespace, all on one bridge in 198.18.1.0/24:
#
#   hub  198.18.1.254  the bridge br0 and redis-server (every namespace's default route)
#   a    198.18.1.1    sluice, the origin
#   b    198.18.1.2    sluice, an edge (later the origin of the republish)
#   c    198.18.1.3    sluice, an edge
#   cli  198.18.1.10   node + Chromium (tests/topology/cluster.spec.mjs)
#
# Each node is the binary started as `cargo run --release` starts it (cwd = the repository
# root, no flags), joined to the cluster through the environment (SLUICE_CLUSTER_REDIS,
# SLUICE_CLUSTER_SECRET), with an API key so the test may read /rest-api/cluster/... from the
# client's host and a data folder of its own (three machines, three certificates).
# The spec publishes on A, plays on B and C, then asks this script (a file in $TOPO_WORK) to
# kill A with SIGKILL, and goes on with the republish on B.
#
# Usage (root): tests/topology/cluster.sh. Environment: SLUICE_BIN (default
# target/debug/sluice), RUST_LOG, KEEP_LOGS=1. Needs: ip, redis-server, node with `npm ci` done
# in tests/, chromium.
set -uo pipefail

TOPO_LABEL="cluster topology"
. "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"
command -v redis-server >/dev/null || die "redis-server not found: apt-get install redis-server"
command -v node >/dev/null || die "node not found"
[ -x "$bin" ] || die "server binary $bin not found: build it (or set SLUICE_BIN)"
exec 2>&1

P="sluice-cl-$$"
NETS=(hub a b c cli)
declare -A IP=([hub]=198.18.1.254 [a]=198.18.1.1 [b]=198.18.1.2 [c]=198.18.1.3 [cli]=198.18.1.10)
work="$(mktemp -d /tmp/sluice-cluster.XXXXXX)"
declare -A PID=()
rc=1

# End the processes this script started in its namespaces, by their ids, then the namespaces.
cleanup() {
    local n pids
    for n in cli a b c hub; do
        pids="$(ip netns pids "$P-$n" 2>/dev/null)"
        [ -z "$pids" ] || kill $pids 2>/dev/null
    done
    sleep 0.5
    for n in "${NETS[@]}"; do
        pids="$(ip netns pids "$P-$n" 2>/dev/null)"
        [ -z "$pids" ] || kill -9 $pids 2>/dev/null
        ip netns del "$P-$n" 2>/dev/null
        rm -rf "/etc/netns/$P-$n"
    done
    if [ "$rc" -eq 0 ] && [ -z "${KEEP_LOGS:-}" ]; then rm -rf "$work"; else echo "cluster topology: logs in $work"; fi
}
trap cleanup EXIT
trap 'echo "cluster topology: interrupted"; exit 130' INT TERM

# Namespaces left by a killed run (owner pid gone).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sluice-cl-[0-9]*-'); do
    owner="${ns#sluice-cl-}"; owner="${owner%%-*}"
    kill -0 "$owner" 2>/dev/null || { ip netns del "$ns" 2>/dev/null; rm -rf "/etc/netns/$ns"; }
done

setup_network() {
    local n
    for n in "${NETS[@]}"; do
        ip netns add "$P-$n" || return 1
        mkdir -p "/etc/netns/$P-$n" && echo "nameserver 127.0.0.1" >"/etc/netns/$P-$n/resolv.conf"
        ip netns exec "$P-$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$P-$n" link set lo up || return 1
    done
    ip -n "$P-hub" link add br0 type bridge || return 1
    ip -n "$P-hub" addr add "${IP[hub]}/24" dev br0 || return 1
    ip -n "$P-hub" link set br0 up || return 1
    for n in a b c cli; do
        ip link add v0 netns "$P-$n" type veth peer name "h$n" netns "$P-hub" || return 1
        ip -n "$P-hub" link set "h$n" master br0 || return 1
        ip -n "$P-hub" link set "h$n" up || return 1
        ip -n "$P-$n" addr add "${IP[$n]}/24" dev v0 || return 1
        ip -n "$P-$n" link set v0 up || return 1
        ip -n "$P-$n" route add default via "${IP[hub]}" || return 1
    done
}

start_redis() {
    # Protected mode refuses clients from other hosts when Redis has no password: these are
    # the cluster's own private namespaces.
    ip netns exec "$P-hub" redis-server --bind "${IP[hub]}" --port 6379 --save "" --appendonly no --protected-mode no \
        --dir "$work" >"$work/redis.log" 2>&1 &
    PID[redis]=$!
}

# start_node NAME: the binary in its namespace, cwd = the repository root; waits for its ready line.
start_node() {
    local n="$1" i
    (cd "$repo" && exec ip netns exec "$P-$n" env -i PATH="$PATH" HOME="${HOME:-/root}" \
        ${RUST_LOG:+RUST_LOG="$RUST_LOG"} SLUICE_CLUSTER_REDIS="redis://${IP[hub]}:6379" \
        SLUICE_CLUSTER_SECRET="topology-cluster-secret-$$" SLUICE_API_KEY="cluster-key-$$" \
        SLUICE_DATA_DIR="$work/$n-data" "$bin") >"$work/$n.out" 2>"$work/$n.log" &
    PID[$n]=$!
    disown "${PID[$n]}" # its SIGKILL later is the test, not news
    for i in $(seq 150); do
        grep -q '^sluice ready ' "$work/$n.out" 2>/dev/null && { echo "  $n: $(head -n1 "$work/$n.out")"; return 0; }
        kill -0 "${PID[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "cluster topology: node $n did not start" >&2; tail -n 30 "$work/$n.log" >&2
    return 1
}

t0="$(date +%s)"
setup_network || die "network setup failed"
start_redis
for n in a b c; do start_node "$n" || exit 1; done

# The spec asks for A's death by creating $work/kill-a; this loop does it (SIGKILL: a crash).
( while [ ! -e "$work/kill-a" ]; do sleep 0.1; done; kill -9 "${PID[a]}"; touch "$work/killed-a" ) &
watcher=$!

(cd "$repo" && exec ip netns exec "$P-cli" env TOPO_WORK="$work" TOPO_API_KEY="cluster-key-$$" \
    TOPO_URL="https://${IP[a]}:8888/" TOPO_HOST="${IP[a]}" \
    TOPO_NODES="${IP[a]},${IP[b]},${IP[c]}" TOPO_SERVER_LOG="$work/a.log" \
    node --test --test-concurrency=1 --test-reporter=spec tests/topology/cluster.spec.mjs) 2>&1 | sed 's/^/  /'
rc="${PIPESTATUS[0]}"
kill "$watcher" 2>/dev/null
for n in b c; do
    kill -0 "${PID[$n]}" 2>/dev/null || { echo "cluster topology: node $n exited during the test" >&2; tail -n 30 "$work/$n.log" >&2; rc=1; }
done
echo "cluster topology: $([ "$rc" -eq 0 ] && echo PASS || echo FAIL) in $(( $(date +%s) - t0 )) s"
exit "$rc"
