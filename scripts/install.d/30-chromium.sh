#!/usr/bin/env bash
# The browser tests' tools: Debian's Chromium, and the test's npm packages (Playwright's library
# only, which downloads no browser of its own).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
cd tests/browser
npm ci --no-audit --no-fund --loglevel=error
