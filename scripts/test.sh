#!/usr/bin/env bash
# Runs every test of Feldpost, installing what the tests need first. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Tools"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

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
