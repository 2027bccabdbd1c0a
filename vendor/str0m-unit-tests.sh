#!/usr/bin/env bash
# Runs str0m's own unit tests (`cargo test --lib`) on the patched copy in vendor/str0m.
# The copy is not a workspace member (its dev-dependencies and optional crypto back ends are not
# in our lock file), so this builds a scratch crate in a temporary folder: the copy's sources, its
# manifest without the optional back ends (openssl, rust-crypto, apple, windows, drv), the two
# dev-dependencies its unit tests use, and our Cargo.lock; `docs/chrome-sdp.json`, which one SDP
# test reads, is taken from the published crate in cargo's registry cache.
# Usage: vendor/str0m-unit-tests.sh [test name filter]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d /tmp/str0m-unit.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cp -r "$here/vendor/str0m/src" "$here/vendor/str0m/Cargo.toml" "$scratch/"
cp "$here/Cargo.lock" "$scratch/"
published=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/str0m-0.25.0 2>/dev/null | head -n 1 || true)
if [ -n "$published" ] && [ -d "$published/docs" ]; then
  cp -r "$published/docs" "$scratch/"
else
  echo "str0m 0.25.0 is not in cargo's registry cache (build the workspace once first)" >&2
  exit 1
fi
python3 - "$scratch/Cargo.toml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
drop = ("str0m-openssl", "str0m-rust-crypto", "str0m-apple-crypto", "str0m-wincrypto", "dependencies.drv")
parts = re.split(r"(?m)^(?=\[)", text)
text = "".join(p for p in parts if not any(d in p.split("\n", 1)[0] for d in drop))
text = re.sub(r"(?m)^(drv|openssl|openssl-dimpl|rust-crypto|vendored|wincrypto|wincrypto-dimpl|apple-crypto) = \[[^\]]*\]\n", "", text)
text += '\n[dev-dependencies]\nserde_json = "1"\ntracing-subscriber = "0.3"\n\n[workspace]\n'
open(path, "w").write(text)
PY
# One unit test imports Duration through a dev-dependency we leave out (systemstat).
sed -i 's/use systemstat::Duration;/use std::time::Duration;/' "$scratch/src/bwe/loss_controller.rs"
cd "$scratch"
CARGO_TARGET_DIR="${STR0M_TARGET_DIR:-$here/target/str0m-unit}" cargo test --offline --lib -- "$@"
