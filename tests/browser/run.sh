#!/bin/bash
# Run the browser end-to-end tests (node's test runner, headless Chromium) inside a new network
# namespace that has only the loopback interface: there Chromium gathers ICE candidates on
# 127.0.0.1 only, which the server (default bind address; it detects 127.0.0.1 there) answers. Needs root
# (or unprivileged user namespaces: then use `unshare -rn`), node >= 20, /usr/bin/chromium,
# `npm ci` in tests/ and a built server (cargo build; SLUICE_BIN overrides the binary).
# Arguments replace the default file list (tests/browser/*.spec.mjs), e.g.
#   tests/browser/run.sh tests/browser/player.spec.mjs
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ ! -d "$repo/tests/node_modules/playwright-core" ]; then
    echo "run.sh: tests/node_modules missing: run 'npm ci' in $repo/tests first" >&2
    exit 2
fi
cd "$repo"
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    # Named explicitly: `node --test <dir>` only picks *.test.mjs-style names, not *.spec.mjs,
    # and would pass with zero tests.
    files=(tests/browser/*.spec.mjs)
fi
exec unshare -n bash -c 'ip link set lo up && cd "$0" && exec node --test --test-concurrency=1 "${@}"' \
    "$repo" "${files[@]}"
