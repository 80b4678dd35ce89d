#!/usr/bin/env bash
# Compares the server CPU that two Feldpost builds spend per sync cycle (a long poll answered and
# the client's next one parked), side by side: both servers run at the same time, each on its
# own copy of a populated world and under the same load from its own feldpost-bench, and their
# CPU is read over the same window. Drift of the machine's speed (which on a shared virtual
# machine moved single runs by 20 % and more) hits both alike; the ratio is what to read.
#
# Usage: scripts/bench/paired.sh WORK_DIR SERVER_A SERVER_B
#
#   WORK_DIR  holds load-test.toml (a server configuration whose data_dir is the populated
#             world) and state.json (its feldpost-bench state file). The world is copied once to
#             WORK_DIR/paired-b and served from there by the second server, on LISTEN_PORT + 1.
#   SERVER_A, SERVER_B  feldpost binaries.
#
# Settings, from the environment:
#
#   CLIENTS        syncing clients per server                              (10000)
#   LONG_POLL_MS   the clients' long-poll timeout; with CLIENTS, the cycles per second  (5000)
#   RAMP           seconds over which clients start                         (100)
#   WINDOW         seconds over which CPU is read, after sending starts + 10 s  (40)
#   BENCH          feldpost-bench binary                  (target/release/feldpost-bench)
#
# Prints, and writes to WORK_DIR/paired.txt: microseconds of server CPU per sync cycle for A and
# for B, and B/A. Swap A and B in a second run: the two positions are not quite equal.
set -euo pipefail

dir=$1
a=$(realpath "$2")
b=$(realpath "$3")
repo=$(cd "$(dirname "$0")/../.." && pwd)
bench=$(realpath "${BENCH:-$repo/target/release/feldpost-bench}")
clients=${CLIENTS:-10000}
long_poll=${LONG_POLL_MS:-5000}
ramp=${RAMP:-100}
window=${WINDOW:-40}
cd "$dir"

listen=$(sed -n 's/^listen *= *"\(.*\)"/\1/p' load-test.toml)
data=$(sed -n 's/^data_dir *= *"\(.*\)"/\1/p' load-test.toml)
host=${listen%:*}
port=${listen##*:}
if [ ! -d paired-b ]; then
    cp -a "$data" paired-b
fi
sed -e "s/^listen *=.*/listen = \"$host:$((port + 1))\"/" \
    -e 's/^data_dir *=.*/data_dir = "paired-b"/' load-test.toml > paired-b.toml

"$a" serve --config load-test.toml > paired-a.log 2>&1 &
pid_a=$!
"$b" serve --config paired-b.toml > paired-b.log 2>&1 &
pid_b=$!
trap 'kill $pid_a $pid_b 2> /dev/null || true' EXIT
sleep 5

run() {
    "$bench" --server "http://$host:$1" --state state.json --out "paired-$2.json" \
        sync --clients "$clients" --http2 --streams-per-connection 100 --rate 1 \
        --duration $((window + 20)) --ramp "$ramp" --long-poll-ms "$long_poll" --seed 1 \
        > /dev/null 2> "paired-$2.err"
}
run "$port" a &
gen_a=$!
run $((port + 1)) b &
gen_b=$!
until grep -q "sending:" paired-a.err 2> /dev/null && grep -q "sending:" paired-b.err 2> /dev/null; do
    sleep 0.5
done
sleep 10

# utime + stime, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
a0=$(ticks $pid_a); b0=$(ticks $pid_b)
sleep "$window"
a1=$(ticks $pid_a); b1=$(ticks $pid_b)
wait $gen_a $gen_b

hz=$(getconf CLK_TCK)
cycles=$((clients * 1000 / long_poll * window))
per_cycle() { echo $(( ($1) * 1000000 / hz / cycles )); }
echo "A $(per_cycle "a1 - a0") us/cycle, B $(per_cycle "b1 - b0") us/cycle, B/A $(( (b1 - b0) * 1000 / (a1 - a0) ))/1000 ($clients clients per server, long polls of $long_poll ms)" \
    | tee paired.txt
for side in a b; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); e=d['errors']; sys.exit('errors on side $side: %s' % e if e else 0)" "paired-$side.json"
done
