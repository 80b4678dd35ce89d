#!/usr/bin/env bash
# libolm (Debian's libolm-dev) for the end-to-end encryption interop tests: python-olm, which
# matrix-nio's encryption support needs, builds against it.
set -euo pipefail
if dpkg -s libolm-dev >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y libolm-dev
