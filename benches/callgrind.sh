#!/usr/bin/env bash
# Instructions the agent spends on a fixed workload, counted by callgrind:
# repeatable for the same binary whatever else the machine does (timings on
# this shared 2-core machine swing by 15 %). Compare two builds:
#
#   benches/callgrind.sh target/release/log-capturer /tmp/log-capturer-before
#
# Workload: the Docker API double (release build) with 100 containers that
# have written 2 000 lines of 100 bytes each before the agent starts; the
# agent (--from-beginning, output /dev/null) reads all 200 000 and is
# stopped with SIGTERM. Prints the total per binary and per line.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --locked -p docker-double --quiet
double=target/release/docker-double
lines=200000
for bin in "$@"; do
    dir=$(mktemp -d /tmp/lc-callgrind.XXXXXX)
    "$double" --socket "$dir/d.sock" --containers 100 --rate 2000 --max-lines 2000 --line-len 100 \
        --ignore-stdin >"$dir/double.out" 2>&1 &
    dpid=$!
    for _ in $(seq 100); do grep -q ready "$dir/double.out" && break; sleep 0.1; done
    sleep 2 # every line written before the agent starts
    port=$((20000 + RANDOM % 20000))
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" --docker-host "unix://$dir/d.sock" \
        --output /dev/null --state-dir "$dir/state" --metrics-addr "127.0.0.1:$port" --from-beginning \
        >"$dir/agent.out" 2>&1 &
    apid=$!
    n=0
    for _ in $(seq 1200); do
        n=$( (curl -s "127.0.0.1:$port/metrics" || true) | awk '/^log_capturer_lines_total/ {s+=$2} END {print s+0}')
        [[ $n -ge $lines ]] && break
        sleep 0.5
    done
    kill -TERM "$apid"; wait "$apid" || true
    kill "$dpid"; wait "$dpid" 2>/dev/null || true
    total=$(callgrind_annotate "$dir/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$bin: $n lines, $total instructions, $((total / lines)) per line"
    rm -rf "$dir"
done
