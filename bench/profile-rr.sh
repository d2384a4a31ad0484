#!/bin/bash
# Where an RR primary's time goes: perf profile of rcluster's core thread
# (or node:cluster's main thread: `bench/profile-rr.sh node`) under one
# connection per request. Needs perf and wrk. Prints the perf report.
set -e
M=${1:-rcluster}
DIR=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
PORT=$((18000 + RANDOM % 1000))
M=$M PORT=$PORT node "$DIR/profile-rr-server.js" > "$OUT/server.out" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$OUT"' EXIT
for _ in $(seq 50); do grep -q ready "$OUT/server.out" && break; sleep 0.2; done
wrk -t1 -c64 -d1 -H 'Connection: close' "http://127.0.0.1:$PORT/" > /dev/null
TID=$SERVER
[ "$M" = rcluster ] && TID=$(grep -l rcluster-core /proc/$SERVER/task/*/comm | cut -d/ -f5)
wrk -t1 -c64 -d6 -H 'Connection: close' "http://127.0.0.1:$PORT/" > "$OUT/wrk.out" &
LOAD=$!
sleep 0.5
perf record -F 2000 -g -t "$TID" -o "$OUT/perf.data" -- sleep 4 > /dev/null 2>&1
wait $LOAD
grep Requests/sec "$OUT/wrk.out"
echo "## with children"
perf report -i "$OUT/perf.data" --stdio --children --sort sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "## self"
perf report -i "$OUT/perf.data" --stdio --no-children --sort sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40
