#!/usr/bin/env bash
# fuzz/run.sh <seconds> [target...]: fuzz each target (all of fuzz_targets/ by default) for that
# many seconds, one after another, with libFuzzer (cargo fuzz, stable toolchain, no sanitizer),
# and print per target: executions, executions per second, crashes, corpus size.
#
# Each run starts from fuzz/corpus/<target>/ (the committed seeds) and works in
# fuzz/corpus-run/<target>/ (not committed); afterwards fuzz/corpus/<target>/ is made the seeds
# plus a smallest set of inputs covering all the code reached so far (FUZZ_MERGE=0 skips that). A crash, out-of-memory or timeout
# leaves its input in fuzz/artifacts/<target>/ and makes the script exit 1: minimize it
# (`cargo fuzz tmin -s none <target> <file>`), fix the parser, and keep the input in
# fuzz/regressions/<target>/ (replayed by `cargo test`, actors/tests/fuzz_corpus.rs).
#
# Environment: FUZZ_JOBS (build jobs, default 2), FUZZ_MERGE (1), FUZZ_RSS_MB (2048),
# FUZZ_NO_BUILD=1 (run the binaries already built).
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:?usage: fuzz/run.sh <seconds> [target...]}
shift
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

# One build of every target, in fuzz/target (never the workspace's target dir).
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  (cd .. && CARGO_BUILD_JOBS="${FUZZ_JOBS:-2}" nice -n 10 cargo fuzz build -s none --codegen-units 16) || exit 2
fi
bin=target/x86_64-unknown-linux-gnu/release

max_len() {
  case $1 in
    mp4_reader | flv_tags | rtmp_ingest) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

mkdir -p logs
failed=0
summary=()
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || { echo "no such target: $t" >&2; exit 2; }
  mkdir -p "corpus-run/$t" "artifacts/$t" "corpus/$t"
  before=$(ls "artifacts/$t" | wc -l)
  log=logs/$t.log
  echo "== $t: ${secs}s" >&2
  nice -n 10 "$bin/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -max_len="$(max_len "$t")" \
    -artifact_prefix="artifacts/$t/" "corpus-run/$t" "corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  crashes=$(( $(ls "artifacts/$t" | wc -l) - before ))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
  if [ "$crashes" -gt 0 ]; then
    failed=1
    echo "!! $t: crash (exit $rc), see fuzz/$log and fuzz/artifacts/$t/" >&2
    grep -m 5 -E "panicked|ERROR|SUMMARY|Test unit written" "$log" >&2
  elif [ "${FUZZ_MERGE:-1}" = 1 ]; then
    # The committed corpus becomes the seeds plus a smallest set of inputs (greedy set cover)
    # reaching every code edge the old corpus and this run reached (edges only, not hit counts
    # or comparisons: that keeps it small enough to commit; corpus-run/ keeps the rest).
    merged=$(mktemp -d)
    cp "corpus/$t"/seed-* "$merged/" 2>/dev/null
    if nice -n 10 "$bin/$t" -set_cover_merge=1 -use_counters=0 -use_cmp=0 -max_len="$(max_len "$t")" \
      "$merged" "corpus/$t" "corpus-run/$t" \
      >"logs/$t.merge.log" 2>&1; then
      rm -f "corpus/$t"/*
      cp "$merged"/* "corpus/$t/"
    fi
    rm -rf "$merged"
  fi
  files=$(ls "corpus/$t" | wc -l)
  bytes=$(cat "corpus/$t"/* 2>/dev/null | wc -c)
  line=$(printf '%-15s %6ss %12s execs %8s exec/s %3s crashes   corpus %4s files %8s bytes' \
    "$t" "$secs" "${execs:-?}" "${rate:-?}" "$crashes" "$files" "$bytes")
  echo "$line"
  summary+=("$line")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
