#!/usr/bin/env bash
# End-to-end encryption interoperability with the matrix-sdk crate: two clients in an encrypted
# room, cross-signing, key backup and recovery on a third device (tests/sdk-interop). That crate
# is a workspace of its own, so ordinary builds of Feldpost never compile matrix-sdk; its target
# directory lives under the repository's target/ so that a clone builds it once.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${FELDPOST_BIN:?FELDPOST_BIN must name the feldpost binary to test}"
export CARGO_TARGET_DIR="$PWD/target/sdk-interop"
cargo build --locked --manifest-path tests/sdk-interop/Cargo.toml
"$CARGO_TARGET_DIR/debug/feldpost-sdk-interop"
