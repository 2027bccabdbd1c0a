#!/bin/bash
# Topology tests: the configurations users run, end to end. Two network namespaces joined by a
# veth pair in 198.18.0.0/24 (server 198.18.0.1, client 198.18.0.2); the server started in the
# server namespace exactly as `cargo run --release` starts it (the binary, no flags, cwd = the
# repository root); headless Chromium, ffmpeg and node in the client namespace.
#
#   1. defaults  no flags: the printed URL is https://198.18.0.1:8888/; index -> Streamer
#                publishes, Player plays (tests/topology/defaults.spec.mjs)
#   2. nat       SLUICE_PUBLIC_IP=198.18.0.100, the client DNATs 198.18.0.100 -> 198.18.0.1:
#                Streamer/Player, Firewall Traversal over TURN UDP and TCP, the official Web
#                SDK, RTMP ingest, a WebRTC pull from a second sluice (the origin) started with
#                no flags on the client host (tests/topology/nat.spec.mjs)
#   3. lossy     (only when named) tc netem loss, delay and reordering on both legs while
#                a browser publishes and another plays: figures per condition
#                (tests/topology/lossy.spec.mjs)
#
# Usage (root; from anywhere): tests/topology/run.sh [defaults|nat|lossy ...]
# Environment: SLUICE_BIN (server binary, default target/debug/sluice), CHROMIUM (default
# /usr/bin/chromium), RUST_LOG (passed to the server), KEEP_LOGS=1 (keep the logs when passing).
# Needs: ip (iproute2), nft (nftables), node >= 20 with `npm ci` done in tests/, chromium, ffmpeg.
set -uo pipefail

TOPO_LABEL=topology
. "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"
command -v ip >/dev/null || die "ip not found: apt-get install iproute2"
command -v nft >/dev/null || die "nft not found: apt-get install nftables"
command -v node >/dev/null || die "node not found"
command -v ffmpeg >/dev/null || die "ffmpeg not found: apt-get install ffmpeg"
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || die "${CHROMIUM:-/usr/bin/chromium} not found: apt-get install chromium"
[ -d "$repo/tests/node_modules/playwright-core" ] && [ -d "$repo/tests/node_modules/@flashphoner/websdk" ] \
    || die "tests/node_modules missing: run 'npm ci' in $repo/tests"
[ -x "$bin" ] || die "server binary $bin not found: build it (or set SLUICE_BIN)"
exec 2>&1  # one stream, in order (failure details go with the step that failed)

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(defaults nat)
for s in "${scenarios[@]}"; do
    case "$s" in defaults|nat|lossy) ;; *) die "unknown scenario $s (defaults, nat, lossy)" ;; esac
done

PREFIX=sluice-topo
SRV="$PREFIX-$$-srv"
CLI="$PREFIX-$$-cli"
SERVER_IP=198.18.0.1
CLIENT_IP=198.18.0.2
PUBLIC_IP=198.18.0.100
API_KEY="topo-key-$$"
export TOPO_API_KEY="$API_KEY"
work="$(mktemp -d /tmp/sluice-topo.XXXXXX)"
server_pid=""
failed=0
passed=0
failed_names=()

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# End what runs in one of our namespaces (processes this script started there: the server,
# node, Chromium, ffmpeg), by their ids.
kill_ns_pids() {
    local ns="$1" pids
    pids="$(ip netns pids "$ns" 2>/dev/null)" || return 0
    [ -n "$pids" ] || return 0
    kill $pids 2>/dev/null
    sleep 0.5
    pids="$(ip netns pids "$ns" 2>/dev/null)"
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null
}

# Namespaces left by a run that was killed (its pid is gone): end their processes, delete them.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-[0-9]*-\(srv\|cli\)$"); do
    owner="${ns#"$PREFIX"-}"; owner="${owner%-*}"
    if ! kill -0 "$owner" 2>/dev/null; then
        echo "topology: removing stale namespace $ns"
        kill_ns_pids "$ns"
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    fi
done

stop_server() {
    [ -n "$server_pid" ] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null
    fi
    wait "$server_pid" 2>/dev/null
    server_pid=""
}

cleanup() {
    kill_ns_pids "$CLI"   # the clients first: a test should not see the server go away
    stop_server
    kill_ns_pids "$SRV"
    ip netns del "$CLI" 2>/dev/null
    ip netns del "$SRV" 2>/dev/null
    rm -rf "/etc/netns/$CLI" "/etc/netns/$SRV"
    if [ "$failed" -eq 0 ] && [ -z "${KEEP_LOGS:-}" ]; then
        rm -rf "$work"
    else
        echo "topology: logs kept in $work"
    fi
}
trap cleanup EXIT
trap 'echo "topology: interrupted"; failed=$((failed + 1)); exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The network: srv (198.18.0.1) <-veth-> cli (198.18.0.2), each the other's default route (so
# the server detects 198.18.0.1 as its address). Neither namespace forwards, and an nftables
# guard in each drops anything sent to an address outside 198.18.0.0/24 (counted, reported).

setup_network() {
    ip netns add "$SRV" || return 1
    ip netns add "$CLI" || return 1
    # Created inside the namespaces: the veth names never exist in the root namespace.
    ip link add vs netns "$SRV" type veth peer name vc netns "$CLI" || return 1
    local ns
    for ns in "$SRV" "$CLI"; do
        # Name lookups (Chromium asks for its update server even with background networking
        # off) go to 127.0.0.1 in the namespace, where nothing answers, instead of the host's
        # resolver (`ip netns exec` mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf).
        mkdir -p "/etc/netns/$ns" && echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf" || return 1
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || return 1
        ip -n "$ns" link set lo up || return 1
        ip netns exec "$ns" nft -f - <<'EOF' || return 1
table inet topo_guard {
    chain out {
        type filter hook output priority 0; policy accept;
        oif "lo" accept
        ip daddr 198.18.0.0/24 accept
        ip daddr 224.0.0.0/24 accept  # link-local multicast (IGMP reports): never leaves the veth
        add @dropped { ip daddr . meta l4proto . th dport }
        counter drop
    }
    set dropped {
        type ipv4_addr . inet_proto . inet_service
        size 64
        flags dynamic
    }
}
EOF
    done
    ip -n "$SRV" addr add "$SERVER_IP/24" dev vs || return 1
    ip -n "$SRV" link set vs up || return 1
    ip -n "$SRV" route add default via "$CLIENT_IP" || return 1
    ip -n "$CLI" addr add "$CLIENT_IP/24" dev vc || return 1
    ip -n "$CLI" link set vc up || return 1
    ip -n "$CLI" route add default via "$SERVER_IP" || return 1
}

# 1:1 NAT as a container or cloud VM has it: the client reaches the public address 198.18.0.100,
# which is translated to the server's own 198.18.0.1.
nat_on() {
    ip netns exec "$CLI" nft -f - <<EOF
table ip topo_nat {
    chain out {
        type nat hook output priority -100; policy accept;
        ip daddr $PUBLIC_IP dnat to $SERVER_IP
    }
}
EOF
}
nat_off() { ip netns exec "$CLI" nft delete table ip topo_nat 2>/dev/null; return 0; }

guard_drops() {
    ip netns exec "$1" nft list chain inet topo_guard out 2>/dev/null \
        | awk '/counter packets/ { for (i = 1; i <= NF; i++) if ($i == "packets") print $(i + 1) }'
}

# ---------------------------------------------------------------------------------------------
# The server: the binary, no flags, cwd = the repository root, the environment a user's shell
# would give it (PATH, HOME) plus the variables passed as arguments (NAME=value).

# start_server LABEL [NAME=value ...]: sets server_out, server_log, demo_url.
start_server() {
    local label="$1"; shift
    server_out="$work/$label.server.out"
    server_log="$work/$label.server.log"
    (cd "$repo" && exec ip netns exec "$SRV" env -i PATH="$PATH" HOME="${HOME:-/root}" \
        ${RUST_LOG:+RUST_LOG="$RUST_LOG"} "$@" "$bin") >"$server_out" 2>"$server_log" &
    server_pid=$!
    local ready="" i
    for i in $(seq 150); do
        ready="$(grep -m1 '^sluice ready ' "$server_out" 2>/dev/null)"
        demo_url="$(sed -n 's/^Open the demo: *//p' "$server_out" 2>/dev/null | head -n1 | tr -d '\r')"
        [ -n "$ready" ] && [ -n "$demo_url" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$ready" ] || [ -z "$demo_url" ]; then
        echo "topology: the server printed no ready line and demo URL within 15 s" >&2
        echo "--- stdout" >&2; cat "$server_out" >&2
        echo "--- stderr (last 50 lines)" >&2; tail -n 50 "$server_log" >&2
        return 1
    fi
    echo "  server: $ready"
    echo "  server: Open the demo: $demo_url"
    case "$ready" in
        *" https="*) ;;
        *) echo "topology: the ready line has no https= port: this server serves no https pages" >&2; return 1 ;;
    esac
}

# run_node LABEL SPEC HOST: the spec file with node's test runner in the client namespace.
# Waited for in the background, so that a signal to this script is handled at once.
run_node() {
    local label="$1" spec="$2" host="$3" out rc out_pid node_pid
    exec {out}> >(tee "$work/$label.node.log" | sed 's/^/  /')
    out_pid=$!
    (cd "$repo" && exec ip netns exec "$CLI" env TOPO_URL="$demo_url" TOPO_HOST="$host" \
        TOPO_SERVER_LOG="$server_log" TOPO_BIN="$bin" TOPO_WORK="$work" TOPO_NETNS="$SRV $CLI" \
        ${LOSSY_WINDOW_MS:+LOSSY_WINDOW_MS="$LOSSY_WINDOW_MS"} node --test --test-concurrency=1 --test-reporter=spec "$spec") \
        >&"$out" 2>&1 &
    node_pid=$!
    wait "$node_pid"
    rc=$?
    exec {out}>&-
    wait "$out_pid" 2>/dev/null
    return "$rc"
}

server_alive() {
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "topology: the server exited during the scenario; last log lines:" >&2
        tail -n 50 "$server_log" >&2
        return 1
    fi
}

scenario_defaults() {
    start_server defaults || return 1
    case "$demo_url" in
        "https://$SERVER_IP:8888/") ;;
        *) echo "topology: printed URL $demo_url, want https://$SERVER_IP:8888/" >&2; return 1 ;;
    esac
    run_node defaults tests/topology/defaults.spec.mjs "$SERVER_IP" || return 1
    server_alive
}

scenario_nat() {
    nat_on || return 1
    # As an operator deploys it: the public address, and an API key so that the management REST
    # API answers from other hosts (without one it answers this host only).
    # It may pull streams over WebRTC from an origin on the client's network (the pull test).
    start_server nat SLUICE_PUBLIC_IP="$PUBLIC_IP" SLUICE_API_KEY="$API_KEY" SLUICE_PULL_ALLOW="$CLIENT_IP" || return 1
    case "$demo_url" in
        "https://$PUBLIC_IP:8888/") ;;
        *) echo "topology: printed URL $demo_url, want https://$PUBLIC_IP:8888/" >&2; return 1 ;;
    esac
    run_node nat tests/topology/nat.spec.mjs "$PUBLIC_IP" || return 1
    server_alive
}

# Loss (tc netem, or nftables drops where the kernel has no netem) on both legs while a browser
# publishes and another plays (not in the default list: tests/run-all.sh names it with short
# windows; its figures in BENCHMARKS.md; LOSSY_WINDOW_MS sets each window).
scenario_lossy() {
    command -v tc >/dev/null || { echo "topology: tc not found: apt-get install iproute2" >&2; return 1; }
    # An API key, as in the NAT scenario: the test reads /metrics from the client's namespace.
    start_server lossy SLUICE_API_KEY="$API_KEY" || return 1
    run_node lossy tests/topology/lossy.spec.mjs "$SERVER_IP" || return 1
    server_alive
}

# ---------------------------------------------------------------------------------------------

t_all="$(now)"
echo "== topology: server $bin"
t0="$(now)"
if ! setup_network; then
    failed=1
    die "network setup failed"
fi
echo "== network: $SRV ($SERVER_IP) <-> $CLI ($CLIENT_IP), $(elapsed "$t0") s"

for s in "${scenarios[@]}"; do
    echo "== scenario $s"
    t0="$(now)"
    if "scenario_$s"; then
        passed=$((passed + 1))
        echo "PASS $s ($(elapsed "$t0") s)"
    else
        failed=$((failed + 1))
        failed_names+=("$s")
        echo "FAIL $s ($(elapsed "$t0") s); server log: $server_log"
    fi
    stop_server
    nat_off
done

for ns in "$SRV" "$CLI"; do
    d="$(guard_drops "$ns")"
    [ "${d:-0}" = 0 ] || echo "topology: note: $ns tried to send $d packets outside 198.18.0.0/24 (dropped): $(
        ip netns exec "$ns" nft list set inet topo_guard dropped 2>/dev/null | tr -d '\n' | sed -n 's/.*elements = { *\([^}]*\)}.*/\1/p')"
done
echo "== topology: ${scenarios[*]} in $(elapsed "$t_all") s"
[ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "topology: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
