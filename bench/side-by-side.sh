#!/usr/bin/env bash
# Side by side: sluice and Janus (streaming plugin) under the same load, on this machine, one
# after the other. sluice-bench runs twice with the same arguments (passed through), first
# against sluice (target/release/sluice, spawned on random 127.0.0.1 ports), then with --janus
# (janus spawned on a generated loopback configuration, fed plain RTP), then prints both runs
# side by side (sluice-bench --compare).
#
# Everything runs in a private network namespace (unshare -n): lo, plus a veth pair whose v0
# carries 127.0.0.2/32, because Janus's ICE (libnice) ignores loopback interfaces. Janus gathers
# on 127.0.0.2 only; no packet leaves 127.0.0.0/8.
#
# Usage (root; needs iproute2, `apt-get install -y janus`, `cargo build --release`):
#   bench/side-by-side.sh --subscribers 200 --bitrate 600k --step 50 --step-secs 5
# Useful sluice-bench arguments: --stop-loss 5 (stop ramping after a step with > 5 % loss),
# --duration SECS (cap per run), --threads N (subscriber worker threads).
# Environment:
#   OUT            results folder (default target/bench-results): sluice.json, janus*.json,
#                  summary.txt, and NAME-run.txt for each run (its table as printed)
#   BENCH          sluice-bench binary (default target/release/sluice-bench)
#   SLUICE_BIN     sluice binary (default target/release/sluice)
#   JANUS_VARIANTS the Janus runs, |-separated argument sets; default "|--janus-event-loops N"
#                  with N = nproc: stock Janus (a thread per handle), then Janus sharing one
#                  event loop per core (its documented tuning for many handles)
#   JANUS_ARGS     extra arguments for every Janus run, e.g. "--janus-keyframe-buffer false"
#   SLUICE_ARGS    extra arguments for the sluice run only
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."
BENCH=${BENCH:-target/release/sluice-bench}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
OUT=${OUT:-target/bench-results}

if [ -z "${SIDE_BY_SIDE_NETNS:-}" ]; then
    for b in "$BENCH" "$SLUICE_BIN"; do
        [ -x "$b" ] || { echo "$b missing: cargo build --release && cargo build --release -p sluice-bench" >&2; exit 2; }
    done
    command -v janus >/dev/null || { echo "janus missing: apt-get install -y janus" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "needs root (unshare -n, ip link)" >&2; exit 2; }
    exec unshare -n env SIDE_BY_SIDE_NETNS=1 bash "$self" "$@"
fi

# Inside the namespace.
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 127.0.0.2/32 dev v0
ip link set v0 up
ip link set v1 up
mkdir -p "$OUT"

busy_pct() { # CPU use of the whole machine over 2 s, in percent of one core
    local a b
    a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
    local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
    echo $(( busy / 2 ))   # clock ticks are 1/100 s, over 2 s
}
run() { # run NAME ARGS...: one sluice-bench run; a failing run (exit 1) still leaves its JSON
    local name=$1 rc=0 busy
    shift
    busy=$(busy_pct)
    [ "$busy" -lt 20 ] || echo "warning: the machine is already ${busy}% busy (another job?): figures will be disturbed"
    echo "== $name: sluice-bench $* =="
    "$BENCH" "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name-run.txt" || rc=$?
    [ "$rc" = 0 ] || echo "($name: sluice-bench exited $rc)"
    echo
}
rm -f "$OUT"/*.json
# shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
run sluice --spawn "$SLUICE_BIN" ${SLUICE_ARGS:-} "$@"
files=("$OUT/sluice.json")
IFS='|' read -r -a variants <<<"${JANUS_VARIANTS-|--janus-event-loops $(nproc)}"
[ ${#variants[@]} -gt 0 ] || variants=("")
for v in "${variants[@]}"; do
    name=janus$(echo "$v" | sed 's/--janus-/-/g; s/[ =]/-/g; s/--*/-/g')
    # shellcheck disable=SC2086
    run "$name" --janus $v ${JANUS_ARGS:-} "$@"
    files+=("$OUT/$name.json")
done
existing=()
for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
[ ${#existing[@]} -gt 0 ] || { echo "no results" >&2; exit 1; }
"$BENCH" --compare "${existing[@]}" | tee "$OUT/summary.txt"
echo "results in $OUT/"
