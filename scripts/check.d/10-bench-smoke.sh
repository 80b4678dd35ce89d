#!/usr/bin/env bash
# A small smoke run of feldpost-bench against a fresh server, so the load generator keeps working:
# a few hundred users, a few seconds of the sync, send and initial-sync scenarios.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --locked -p feldpost-bench
BENCH="$PWD/target/debug/feldpost-bench"
FELDPOST_BIN="${FELDPOST_BIN:-$PWD/target/debug/feldpost}"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/feldpost.toml" <<TOML
[registration]
open = true
argon2_memory_kib = 64
argon2_iterations = 1
[rate_limits]
enabled = false
[log]
level = "warn"
TOML
"$FELDPOST_BIN" serve --config "$work/feldpost.toml" --listen "127.0.0.1:$port" --data-dir "$work/data" > "$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_matrix/client/versions", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
PY
url="http://127.0.0.1:$port"
"$BENCH" --server "$url" --state "$work/state.json" populate --users 200 > /dev/null
"$BENCH" --server "$url" --state "$work/state.json" --server-pid "$pid" --out "$work/sync.json" \
  sync --clients 200 --rate 20 --duration 3 --ramp 1 --plot "$work/sync.svg" > /dev/null
# The same over HTTP/2, 50 clients per connection.
"$BENCH" --server "$url" --state "$work/state.json" --out "$work/sync-h2.json" \
  sync --clients 200 --http2 --streams-per-connection 50 --rate 20 --duration 3 --ramp 1 > /dev/null
"$BENCH" --server "$url" --state "$work/state.json" --out "$work/send.json" send --senders 4 --duration 2 > /dev/null
"$BENCH" --server "$url" --state "$work/state.json" --out "$work/initial.json" initial-sync --rooms 20 --repeats 2 > /dev/null
python3 - "$work" <<'PY'
import json, sys, os
w = sys.argv[1]
s = json.load(open(os.path.join(w, "sync.json")))
assert s["sent"] > 0 and s["missing"] == 0 and not s["errors"], s
assert s["delivery_latency_ms"]["count"] == s["expected_deliveries"], s
assert open(os.path.join(w, "sync.svg")).read().startswith("<svg")
h2 = json.load(open(os.path.join(w, "sync-h2.json")))
assert h2["sent"] > 0 and h2["missing"] == 0 and not h2["errors"], h2
assert h2["transport"].startswith("http2"), h2
send = json.load(open(os.path.join(w, "send.json")))
assert send["sent"] > 0 and not send["errors"], send
init = json.load(open(os.path.join(w, "initial.json")))
assert init["latency_ms"]["count"] == 2 and init["response_bytes"] > 0, init
print(f"bench smoke: {s['sent']} messages, {s['delivered']} deliveries, p99 {s['delivery_latency_ms']['p99']:.1f} ms "
      f"(HTTP/2: {h2['delivered']} deliveries, p99 {h2['delivery_latency_ms']['p99']:.1f} ms); "
      f"send {send['messages_per_sec']:.0f} msg/s; initial sync of 20 rooms p50 {init['latency_ms']['p50']:.1f} ms")
PY
