# Sourced by the topology scripts (run.sh, cluster.sh): the repository, the server binary
# (SLUICE_BIN, default target/debug/sluice, made absolute) and the root check. The script sets
# TOPO_LABEL first (its name in messages).
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${SLUICE_BIN:-$repo/target/debug/sluice}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac

die() { echo "$TOPO_LABEL: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
