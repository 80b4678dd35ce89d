#!/usr/bin/env bash
# Runs every test of Feldpost, installing what the tests need first. Used by .ci/run.
#   scripts/install.d/*.sh  install what a test stage needs (Debian packages, tools), in name order
#   scripts/check.d/*.sh    further test stages (browser tests, third-party clients), in name order
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== Tools"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
for f in scripts/install.d/*.sh; do
  [ -e "$f" ] || continue
  echo "== Install: $f"
  bash "$f"
done

echo "== Format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Rust tests (unit and integration)"
cargo nextest run --workspace --locked --no-fail-fast

echo "== Interoperability tests (matrix-nio)"
cargo build --locked -p feldpost
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
FELDPOST_BIN="$PWD/target/debug/feldpost" .venv/bin/python -m pytest -q tests/interop

for f in scripts/check.d/*.sh; do
  [ -e "$f" ] || continue
  echo "== Check: $f"
  FELDPOST_BIN="$PWD/target/debug/feldpost" bash "$f"
done
echo "== All tests passed"
