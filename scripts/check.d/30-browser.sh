#!/usr/bin/env bash
# Browser test of the admin console and the enrollment page with Debian's Chromium: starts
# Feldpost on a free port with a fresh data directory (registration closed, the default), creates
# the first admin with `feldpost admin`, then runs tests/browser. Screenshots are kept in
# target/browser-screenshots.
set -euo pipefail
cd "$(dirname "$0")/../.."
FELDPOST_BIN="${FELDPOST_BIN:-$PWD/target/debug/feldpost}"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/feldpost.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
[registration]
argon2_memory_kib = 64
argon2_iterations = 1
[rate_limits]
enabled = false
[log]
level = "warn"
TOML
password="browser-$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"
printf '%s\n' "$password" | "$FELDPOST_BIN" admin --config "$work/feldpost.toml" user create admin --admin --password-stdin
"$FELDPOST_BIN" serve --config "$work/feldpost.toml" > "$work/server.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_matrix/client/versions", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("feldpost did not start")
PY
mkdir -p target/browser-screenshots
cd tests/browser
if ! FELDPOST_URL="http://127.0.0.1:$port" FELDPOST_ADMIN=admin FELDPOST_ADMIN_PASSWORD="$password" \
  SCREENSHOT_DIR="$PWD/../../target/browser-screenshots" node --test console.test.mjs; then
  echo "--- feldpost server log (tail)"
  tail -n 40 "$work/server.log"
  exit 1
fi
