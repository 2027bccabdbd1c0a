#!/usr/bin/env bash
# TURN relay benchmark: coturn's turnutils_uclient against sluice's embedded TURN server and
# against coturn's own turnserver, one after the other, on 127.0.0.1, with the same loads. For
# each run it prints uclient's summary (messages, loss, RTT, jitter), the wall time, the
# throughput and the server's CPU time (utime + stime of the whole process, from /proc).
#
# Usage: bench/turn_uclient.sh [LOAD...]   (needs `cargo build --release` and Debian's coturn)
# A LOAD is clients:messages:length:interval_ms; default: the uclient default rate (10 clients,
# 100 messages of 170 bytes every 20 ms) and a heavier one.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE_BIN:-target/release/sluice}
loads=("$@")
[ ${#loads[@]} -gt 0 ] || loads=(10:100:170:20 40:2000:1000:2)
SPORT=${SLUICE_TURN_BENCH_PORT:-13478}
CPORT=${COTURN_BENCH_PORT:-13479}
work=$(mktemp -d /tmp/turn-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

ticks() { # utime + stime of a process, in clock ticks (fields 14, 15 after the comm field)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
hz=$(getconf CLK_TCK)

extra=()
"$SLUICE" --help | grep -q -- '--rtmp-port' && extra+=(--rtmp-port 0)
"$SLUICE" --bind 127.0.0.1 --public-ip 127.0.0.1 --ws-port 0 --rest-port 0 --http-port 0 \
    --media-port 0 "${extra[@]}" --turn-port "$SPORT" --turn-allow-peer 127.0.0.0/8 \
    --turn-user probe:probe-secret --turn-user-quota 1000 --turn-user-kbps 0 \
    --static-dir static --media-dir "$work/media" >"$work/sluice.out" 2>"$work/sluice.log" &
spid=$!; pids+=("$spid")
turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$CPORT" \
    --lt-cred-mech --user=probe:probe-secret --realm=sluice --fingerprint --no-tls --no-dtls \
    --no-cli --allow-loopback-peers --min-port=40000 --max-port=60000 \
    --log-file="$work/coturn.log" --simple-log >/dev/null 2>&1 &
cpid=$!; pids+=("$cpid")
sleep 1

echo "| server | control | clients x msgs x bytes / interval | sent | received | lost | RTT ms | jitter ms | wall s | relayed kB/s | server CPU s | CPU % |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for load in "${loads[@]}"; do
    IFS=: read -r m n l z <<<"$load"
    for server in sluice coturn; do
        if [ "$server" = sluice ]; then pid=$spid; port=$SPORT; else pid=$cpid; port=$CPORT; fi
        for control in TCP UDP; do
            flag=(); [ "$control" = TCP ] && flag=(-t)
            c0=$(ticks "$pid"); t0=$(date +%s.%N)
            turnutils_uclient "${flag[@]}" -y -c -X -L 127.0.0.1 -p "$port" -u probe -w probe-secret \
                -m "$m" -n "$n" -l "$l" -z "$z" 127.0.0.1 >"$work/out" 2>&1 || true
            t1=$(date +%s.%N); c1=$(ticks "$pid")
            awk -v s="$server" -v c="$control" -v load="$m x $n x $l / $z ms" -v t0="$t0" -v t1="$t1" \
                -v c0="$c0" -v c1="$c1" -v hz="$hz" '
                /start_mclient: tot_send_msgs=/ { split($0, a, "tot_send_msgs="); sent = a[2] + 0;
                                                  split($0, b, "tot_recv_msgs="); recv = b[2] + 0 }
                /start_mclient: tot_send_bytes/ { split($0, a, "tot_recv_bytes ~ "); bytes = a[2] + 0 }
                /Total lost packets/ { split($0, a, "("); lost = a[2]; sub(/\).*/, "", lost) }
                /Average round trip delay/ { split($0, a, "delay "); rtt = a[2] + 0 }
                /Average jitter/ { split($0, a, "jitter "); jit = a[2] + 0 }
                END { wall = t1 - t0; cpu = (c1 - c0) / hz;
                      printf "| %s | %s | %s | %d | %d | %s | %.3f | %.3f | %.1f | %.0f | %.2f | %.1f |\n",
                             s, c, load, sent, recv, lost, rtt, jit, wall, bytes / wall / 1000, cpu, 100 * cpu / wall }' "$work/out"
        done
    done
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status"); crss=$(awk '/VmRSS/ {print $2}' "/proc/$cpid/status")
echo
echo "RSS after the runs: sluice ${rss} KiB, coturn ${crss} KiB"
