#!/usr/bin/env bash
# What one stream reopen costs dockerd, with `since` alone and with
# `tail=K&since=`, on a container with a large json-file log.
#
#   eval "$(tests/docker/up.sh)"; benches/rotation-cost.sh [LINES]
#
# Prints wall time and dockerd CPU (utime+stime from /proc) per request,
# as the median of 5 requests each, resuming 1 s before the newest line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tests/docker/env.sh
source "$here/tests/docker/env.sh"
LINES="${1:-700000}"
NAME=lc-rotation-cost
SOCK="$LC_DOCKER_SOCK"
pid="$(cat "$LC_DOCKER_PIDFILE")"
hz="$(getconf CLK_TCK)"

docker rm -f "$NAME" >/dev/null 2>&1 || true
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$NAME" --network none busybox:local sh -c \
    "yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 | head -n $LINES; sleep 3600" >/dev/null
id="$(docker inspect -f '{{.Id}}' "$NAME")"
logpath="$(docker inspect -f '{{.LogPath}}' "$NAME")"
# Wait until every line is in the log file.
until [[ "$(curl -s --unix-socket "$SOCK" "http://d/v1.41/containers/$id/logs?stdout=1&tail=1" | wc -c)" -gt 0 ]] &&
      [[ "$(wc -l <"$logpath")" -ge "$LINES" ]]; do sleep 1; done
size_mb=$(( $(stat -c %s "$logpath") / 1000000 ))
last_ts="$(curl -s --unix-socket "$SOCK" "http://d/v1.41/containers/$id/logs?stdout=1&tail=1&timestamps=1" | cut -c9-38)"
since_ns=$(( $(date -d "$last_ts" +%s%N) - 1000000000 ))
since="$((since_ns / 1000000000)).$(printf '%09d' $((since_ns % 1000000000)))"

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
measure() {
    local query="$1" t0 c0 t1 c1 out=()
    for _ in 1 2 3 4 5; do
        c0=$(cpu); t0=$(date +%s%N)
        curl -s --unix-socket "$SOCK" "http://d/v1.41/containers/$id/logs?stdout=1&stderr=1&timestamps=1&$query" >/dev/null
        t1=$(date +%s%N); c1=$(cpu)
        out+=("$(( (t1 - t0) / 1000000 )) $(( (c1 - c0) * 1000 / hz ))")
    done
    printf '%s\n' "${out[@]}" | sort -n | sed -n 3p
}
read -r wall_since cpu_since < <(measure "since=$since")
read -r wall_tail cpu_tail < <(measure "tail=1000&since=$since")
echo "dockerd $(docker version -f '{{.Server.Version}}'), json-file log of $LINES lines, ${size_mb} MB"
printf '%-28s %10s %14s\n' request "wall (ms)" "dockerd CPU (ms)"
printf '%-28s %10s %14s\n' "since=<last-1s>" "$wall_since" "$cpu_since"
printf '%-28s %10s %14s\n' "tail=1000&since=<last-1s>" "$wall_tail" "$cpu_tail"
