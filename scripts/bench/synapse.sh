#!/usr/bin/env bash
# Runs Synapse (from PyPI, `matrix-synapse`) on this machine so that the feldpost-bench scenarios
# can be run against it as well as against Feldpost, and the two compared.
#
# Usage: scripts/bench/synapse.sh [--dir DIR] COMMAND
#
#   install   venv + pinned matrix-synapse, PostgreSQL cluster and database, Synapse config
#   start     start PostgreSQL and Synapse; prints Synapse's pid (also in DIR/synapse.pid)
#   stop      stop Synapse, then PostgreSQL
#   status    what runs, and where
#   env       prints SYNAPSE_URL, SYNAPSE_PID, SYNAPSE_SECRET, SYNAPSE_STATE, SYNAPSE_PG_PID
#             (PostgreSQL's postmaster) for `eval`
#   bench     runs the standard scenarios with feldpost-bench (Synapse must be started); results
#             as JSON in DIR/results/
#   clean     stop, then remove DIR entirely (database, venv, keys)
#
# Everything lives in DIR: --dir, else $SYNAPSE_DIR, else target/synapse under the repository
# (git-ignored). Settings, from the environment:
#
#   SYNAPSE_PORT       client API port on 127.0.0.1                  (18008)
#   SYNAPSE_VERSION    matrix-synapse version installed              (1.163.2)
#   SYNAPSE_DB         postgres | sqlite                             (postgres)
#   SYNAPSE_PG_PORT    PostgreSQL port; it listens on a Unix socket in DIR only, no TCP  (18432)
#   SYNAPSE_LOG_LEVEL  Synapse's log level; INFO logs every request   (WARNING)
#   SYNAPSE_PRESENCE   true | false: presence enabled                 (true, Synapse's default)
#   SYNAPSE_BCRYPT_ROUNDS  password hashing cost                      (4: only so populating is quick)
#   SYNAPSE_SYNC_RESPONSE_CACHE  caches.sync_response_cache_duration: how long an identical /sync
#                      is answered from cache; 0 turns that off    (unset: Synapse's default, 2m)
#   PYTHON             interpreter for the venv                       (python3)
#   BENCH              feldpost-bench binary                          (target/release/feldpost-bench)
#   BENCH_USERS, BENCH_CLIENTS  sizes used by `bench`                 (2000, 2000)
#
# The registration shared secret is made at install and kept in DIR/shared-secret, so
#   feldpost-bench --server "$SYNAPSE_URL" populate --users 2000 \
#     --registration "shared-secret:$SYNAPSE_SECRET"
# works. Rate limits are all set far above what a load test reaches. Synapse runs as one process
# (no workers), federation is not served and no other server is contacted.
#
# PostgreSQL comes from the distribution (on Debian: `apt-get install postgresql libpq-dev`, which
# `install` does when run as root and it is missing); its cluster is private to DIR, created with
# the C locale that Synapse requires. As root, PostgreSQL runs as the `postgres` user.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir="${SYNAPSE_DIR:-$repo/target/synapse}"
if [[ "${1:-}" == "--dir" ]]; then
  dir="$2"
  shift 2
fi
cmd="${1:-}"
dir=$(realpath -m "$dir")

port="${SYNAPSE_PORT:-18008}"
version="${SYNAPSE_VERSION:-1.163.2}"
db="${SYNAPSE_DB:-postgres}"
pg_port="${SYNAPSE_PG_PORT:-18432}"
log_level="${SYNAPSE_LOG_LEVEL:-WARNING}"
presence="${SYNAPSE_PRESENCE:-true}"
bcrypt_rounds="${SYNAPSE_BCRYPT_ROUNDS:-4}"
sync_cache="${SYNAPSE_SYNC_RESPONSE_CACHE:-}"
python="${PYTHON:-python3}"
bench="${BENCH:-$repo/target/release/feldpost-bench}"

venv="$dir/venv"
pg_data="$dir/pg/data"
pg_run="$dir/pg/run"
pg_log="$dir/pg/postgres.log"
pid_file="$dir/synapse.pid"
url="http://127.0.0.1:$port"

die() { echo "synapse.sh: $*" >&2; exit 1; }
log() { echo "synapse.sh: $*" >&2; }

pg_bin() {
  local b="${PG_BINDIR:-}"
  if [[ -z "$b" ]] && command -v pg_config > /dev/null; then
    b=$(pg_config --bindir)
  fi
  [[ -n "$b" && -x "$b/initdb" ]] || return 1
  echo "$b"
}

# Runs a PostgreSQL tool as the cluster's owner: `postgres` when we are root (PostgreSQL refuses
# to run as root), else ourselves.
as_pg() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_postgres_packages() {
  if pg_bin > /dev/null; then
    return
  fi
  [[ $(id -u) == 0 ]] || die "PostgreSQL (initdb, pg_config) not found; install postgresql and libpq-dev"
  command -v apt-get > /dev/null || die "PostgreSQL not found and no apt-get to install it"
  log "installing postgresql and libpq-dev"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql libpq-dev > /dev/null
  pg_bin > /dev/null || die "PostgreSQL still not found after installing it"
}

pg_running() {
  local b
  b=$(pg_bin) || return 1
  [[ -f "$pg_data/PG_VERSION" ]] && as_pg "$b/pg_ctl" -D "$pg_data" status > /dev/null 2>&1
}

pg_start() {
  local b
  b=$(pg_bin) || die "PostgreSQL not installed; run install"
  if pg_running; then
    return
  fi
  as_pg "$b/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t 60 start > /dev/null
}

pg_stop() {
  local b
  b=$(pg_bin) || return 0
  if pg_running; then
    as_pg "$b/pg_ctl" -D "$pg_data" -m fast -w -t 60 stop > /dev/null
    log "PostgreSQL stopped"
  fi
}

pg_init() {
  local b
  b=$(pg_bin)
  if [[ ! -f "$pg_data/PG_VERSION" ]]; then
    mkdir -p "$pg_data" "$pg_run"
    if [[ $(id -u) == 0 ]]; then
      chown -R postgres: "$dir/pg"
    fi
    chmod 700 "$pg_data"
    # C collation and ctype as Synapse requires; trust is safe as there is no TCP listener and
    # the socket lives in DIR.
    as_pg "$b/initdb" -D "$pg_data" -U synapse --encoding=UTF8 --locale=C --auth=trust > /dev/null
    cat >> "$pg_data/postgresql.conf" <<CONF

# feldpost bench: Unix socket in DIR only.
listen_addresses = ''
port = $pg_port
unix_socket_directories = '$pg_run'
max_connections = 50
shared_buffers = 256MB
CONF
  fi
  pg_start
  if ! as_pg "$b/psql" -h "$pg_run" -p "$pg_port" -U synapse -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'synapse'" | grep -q 1; then
    as_pg "$b/createdb" -h "$pg_run" -p "$pg_port" -U synapse --template=template0 \
      --encoding=UTF8 --lc-collate=C --lc-ctype=C synapse
    log "created database synapse (C collation)"
  fi
}

# bench.yaml overrides the generated homeserver.yaml (later config files win per top-level key).
write_bench_config() {
  local secret database
  secret=$(cat "$dir/shared-secret")
  if [[ "$db" == postgres ]]; then
    database="database:
  name: psycopg2
  args:
    user: synapse
    dbname: synapse
    host: $pg_run
    port: $pg_port
    cp_min: 5
    cp_max: 10"
  else
    database="database:
  name: sqlite3
  args:
    database: $dir/data/homeserver.db"
  fi
  # Every client-facing rate limiter Synapse has (synapse/config/ratelimiting.py), set far above
  # what the load test reaches.
  local rl="{per_second: 100000, burst_count: 100000}"
  local caches=""
  if [[ -n "$sync_cache" ]]; then
    caches="caches:
  sync_response_cache_duration: $sync_cache"
  fi
  cat > "$dir/bench.yaml" <<YAML
# Written by scripts/bench/synapse.sh; changes are overwritten on the next start.
server_name: localhost
public_baseurl: $url/
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
$database
pid_file: $dir/data/homeserver.pid
media_store_path: $dir/data/media_store
log_config: $dir/log.yaml
registration_shared_secret: "$secret"
enable_registration: false
bcrypt_rounds: $bcrypt_rounds
report_stats: false
enable_metrics: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
url_preview_enabled: false
presence:
  enabled: $presence
$caches
rc_message: $rl
rc_registration: $rl
rc_registration_token_validity: $rl
rc_login:
  address: $rl
  account: $rl
  failed_attempts: $rl
rc_admin_redaction: $rl
rc_joins:
  local: $rl
  remote: $rl
rc_joins_per_room: $rl
rc_3pid_validation: $rl
rc_invites:
  per_room: $rl
  per_user: $rl
  per_issuer: $rl
rc_third_party_invite: $rl
rc_key_requests: $rl
rc_media_create: $rl
rc_presence:
  per_user: $rl
rc_delayed_event_mgmt: $rl
rc_room_creation: $rl
rc_reports: $rl
rc_user_directory: $rl
rc_profile: $rl
YAML
  cat > "$dir/log.yaml" <<YAML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: $log_level
  handlers: [file]
disable_existing_loggers: false
YAML
}

do_install() {
  command -v "$python" > /dev/null || die "$python not found"
  if [[ "$db" == postgres ]]; then
    ensure_postgres_packages
  fi
  mkdir -p "$dir"
  if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
  fi
  local spec="matrix-synapse==$version"
  if [[ "$db" == postgres ]]; then
    # psycopg2 builds against libpq (pg_config) when no wheel fits.
    spec="matrix-synapse[postgres]==$version"
  fi
  log "pip install $spec"
  "$venv/bin/pip" install -q --disable-pip-version-check "$spec"
  mkdir -p "$dir/data"
  if [[ ! -f "$dir/homeserver.yaml" ]]; then
    (cd "$dir" && "$venv/bin/python" -m synapse.app.homeserver --server-name localhost \
      --config-path "$dir/homeserver.yaml" --data-directory "$dir/data" \
      --generate-config --report-stats=no > /dev/null)
  fi
  if [[ ! -f "$dir/shared-secret" ]]; then
    (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_hex(24))' > "$dir/shared-secret")
  fi
  if [[ "$db" == postgres ]]; then
    pg_init
  fi
  write_bench_config
  log "installed $("$venv/bin/python" -c 'import synapse; print(synapse.__version__)') in $dir ($db)"
}

synapse_pid() {
  [[ -f "$pid_file" ]] || return 1
  local p
  p=$(cat "$pid_file")
  kill -0 "$p" 2> /dev/null || return 1
  echo "$p"
}

do_start() {
  [[ -x "$venv/bin/python" && -f "$dir/homeserver.yaml" ]] || die "not installed in $dir; run install"
  if p=$(synapse_pid); then
    log "already running"
    echo "$p"
    return
  fi
  if [[ "$db" == postgres ]]; then
    pg_start
  fi
  write_bench_config
  # Its own session, so that it outlives this script and its terminal.
  setsid "$venv/bin/python" -m synapse.app.homeserver \
    --config-path "$dir/homeserver.yaml" --config-path "$dir/bench.yaml" \
    >> "$dir/synapse.out" 2>&1 < /dev/null &
  local p=$!
  echo "$p" > "$pid_file"
  # The first start runs the schema migrations; allow two minutes.
  local i
  for i in $(seq 1 240); do
    if ! kill -0 "$p" 2> /dev/null; then
      tail -n 30 "$dir/synapse.out" >&2
      die "Synapse exited during start-up (see $dir/synapse.out, $dir/homeserver.log)"
    fi
    if "$venv/bin/python" - "$url" <<'PY' 2> /dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/_matrix/client/versions", timeout=1)
PY
      log "Synapse $("$venv/bin/python" -c 'import synapse; print(synapse.__version__)') up at $url ($db), pid $p"
      echo "$p"
      return
    fi
    sleep 0.5
  done
  kill "$p" 2> /dev/null || true
  die "Synapse did not answer within 120 s"
}

do_stop() {
  local p i
  if p=$(synapse_pid); then
    kill -TERM "$p"
    for i in $(seq 1 60); do
      kill -0 "$p" 2> /dev/null || break
      sleep 0.5
    done
    if kill -0 "$p" 2> /dev/null; then
      log "Synapse did not stop in 30 s; killing it"
      kill -KILL "$p" 2> /dev/null || true
    fi
    log "Synapse stopped"
  fi
  rm -f "$pid_file"
  pg_stop
}

do_status() {
  local p
  if p=$(synapse_pid); then
    echo "synapse: running, pid $p, $url, dir $dir"
  else
    echo "synapse: stopped, dir $dir"
  fi
  if pg_running; then
    echo "postgres: running, socket $pg_run port $pg_port"
  else
    echo "postgres: stopped"
  fi
}

do_env() {
  local p=""
  p=$(synapse_pid) || true
  echo "SYNAPSE_URL=$url"
  echo "SYNAPSE_PID=$p"
  echo "SYNAPSE_SECRET=$(cat "$dir/shared-secret" 2> /dev/null || true)"
  echo "SYNAPSE_STATE=$dir/bench-state.json"
  echo "SYNAPSE_PG_PID=$(postmaster_pid || true)"
}

postmaster_pid() {
  [[ "$db" == postgres && -f "$pg_data/postmaster.pid" ]] || return 1
  head -n 1 "$pg_data/postmaster.pid"
}

do_bench() {
  local p pg secret state out users clients
  p=$(synapse_pid) || die "Synapse is not running; run start"
  [[ -x "$bench" ]] || die "$bench not found; cargo build --release -p feldpost-bench"
  secret=$(cat "$dir/shared-secret")
  state="$dir/bench-state.json"
  out="$dir/results"
  users="${BENCH_USERS:-2000}"
  clients="${BENCH_CLIENTS:-2000}"
  mkdir -p "$out"
  # One connection per sync client.
  ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
  # feldpost-bench samples Synapse's process (--server-pid); tree-usage.py also samples
  # PostgreSQL's processes, whose CPU and memory are Synapse's too.
  local trees=(--pid "$p")
  if pg=$(postmaster_pid); then
    trees+=(--pid "$pg")
  fi
  run() {
    local name="$1" limit="$2"
    shift 2
    log "$name"
    timeout "$limit" "$python" "$repo/scripts/bench/tree-usage.py" "${trees[@]}" \
      --out "$out/$name.usage.json" -- \
      "$bench" --server "$url" --state "$state" --server-pid "$p" --out "$out/$name.json" "$@"
  }
  # Every run is bounded: the scenarios stop by themselves, timeout is the backstop.
  run populate 3600 populate --users "$users" --registration "shared-secret:$secret"
  run send 300 send --senders 10 --duration 15
  run "sync-${clients}c-20mps" 600 \
    sync --clients "$clients" --rate 20 --duration 20 --ramp 5 --plot "$out/sync-${clients}c-20mps.svg"
  run initial-sync 1800 initial-sync --rooms 300 --repeats 5 --registration "shared-secret:$secret"
  log "results in $out"
}

case "$cmd" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) do_env ;;
  bench) do_bench ;;
  clean)
    do_stop
    rm -rf "$dir"
    ;;
  *)
    sed -n '2,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "$0"
    [[ -z "$cmd" || "$cmd" == -h || "$cmd" == --help || "$cmd" == help ]] || exit 2
    ;;
esac
