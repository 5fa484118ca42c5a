#!/usr/bin/env bash
# Re-create the raw HTTP captures in this directory from a real dockerd.
#
#   eval "$(tests/docker/up.sh)"   # private daemon + busybox:local image
#   tests/data/capture.sh          # writes tests/data/*.http
#   tests/docker/down.sh
#
# Each *.http file is a full HTTP/1.1 response exactly as on the wire
# (`curl --raw -i`): status line, headers, CRLFs, chunk-size lines and, for
# finished responses, the terminating 0-size chunk. Timestamps, ids and Date
# headers change on every run; the message contents do not (see README.md).
#
# Env: LC_DOCKER_DIR (state dir of the private daemon), OUT (output dir,
# default: this script's directory).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../docker/env.sh
source "$here/../docker/env.sh"
SOCK="$LC_DOCKER_SOCK"
IMG="$LC_DOCKER_IMAGE"
OUT="${OUT:-$here}"
PREFIX=lc-cap-

log() { echo "capture.sh: $*" >&2; }

if [[ "$(curl -s --max-time 5 --unix-socket "$SOCK" http://x/_ping 2>/dev/null || true)" != OK ]]; then
    log "no dockerd at $SOCK; run: eval \"\$(tests/docker/up.sh)\""
    exit 1
fi
docker image inspect "$IMG" >/dev/null

# API version from /_ping's Api-Version header.
API="$(curl -s -i --unix-socket "$SOCK" http://localhost/_ping |
    tr -d '\r' | awk -F': ' 'tolower($1) == "api-version" {print $2}')"
[[ "$API" =~ ^[0-9]+\.[0-9]+$ ]] || { log "could not read Api-Version"; exit 1; }
log "dockerd $(docker version -f '{{.Server.Version}}'), API $API -> $OUT"

# capture FILE PATH_AND_QUERY [extra curl args...]
capture() {
    local file="$1" path="$2"
    shift 2
    curl -s --raw -i --unix-socket "$SOCK" "$@" "http://localhost/v$API$path" >"$OUT/$file"
    log "$(printf '%-26s %7d bytes  %s' "$file" "$(wc -c <"$OUT/$file")" "$(head -1 "$OUT/$file" | tr -d '\r')")"
}

cleanup() {
    local ids
    ids="$(docker ps -aq --filter "name=^/$PREFIX" 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [[ -z "$ids" ]] || docker rm -f $ids >/dev/null 2>&1 || true
}
cleanup
trap cleanup EXIT

# run_exited NAME [docker-run-args...] -- CMD...: run detached, wait for exit.
run_exited() {
    local name="$PREFIX$1"
    shift
    docker run -d --name "$name" --network none --label lc.test=capture "$@" >/dev/null
    docker wait "$name" >/dev/null
    docker inspect -f '{{.Id}}' "$name"
}

# --- logs -------------------------------------------------------------------
# 20 numbered lines, odd -> stdout, even -> stderr; the short sleep keeps the
# two pipes' order deterministic in the log file.
# shellcheck disable=SC2016 # expanded by the container's sh
id_inter="$(run_exited interleaved "$IMG" sh -c '
    i=1
    while [ $i -le 20 ]; do
        if [ $((i % 2)) -eq 1 ]; then
            printf "line %02d stdout\n" $i
        else
            printf "line %02d stderr\n" $i >&2
        fi
        i=$((i + 1))
        sleep 0.05
    done')"
capture interleaved.http "/containers/$id_inter/logs?stdout=1&stderr=1&timestamps=1"
capture no-timestamps.http "/containers/$id_inter/logs?stdout=1&stderr=1"
capture stdout-only.http "/containers/$id_inter/logs?stdout=1&timestamps=1"
capture tail-3.http "/containers/$id_inter/logs?stdout=1&stderr=1&timestamps=1&tail=3"
capture no-streams.http "/containers/$id_inter/logs?timestamps=1"

# One line of 40000 bytes ("0123456789" x 4000), newline, then a short line.
id_long="$(run_exited long-line "$IMG" sh -c '
    yes 0123456789 | head -n 4000 | tr -d "\n"
    printf "\n"
    echo "short line after long"')"
capture long-line.http "/containers/$id_long/logs?stdout=1&stderr=1&timestamps=1"

# TTY container: raw stream, ONLCR turns \n into \r\n.
id_tty="$(run_exited tty -t "$IMG" sh -c '
    printf "tty line 1\n"
    printf "tty line 2\n"
    printf "tty line 3\n"')"
capture tty.http "/containers/$id_tty/logs?stdout=1&stderr=1&timestamps=1"
capture tty-no-timestamps.http "/containers/$id_tty/logs?stdout=1&stderr=1"

# TTY container with a 40000-byte line: without frames, dockerd's 16 KiB
# partials show only as a repeated timestamp prefix inside the line.
id_ttylong="$(run_exited tty-long-line -t "$IMG" sh -c '
    yes 0123456789 | head -n 4000 | tr -d "\n"
    printf "\n"
    echo "short line after long"')"
capture tty-long-line.http "/containers/$id_ttylong/logs?stdout=1&stderr=1&timestamps=1"

# Last output without a trailing newline.
id_nonl="$(run_exited exited-no-newline "$IMG" sh -c '
    printf "first\n"
    sleep 0.1
    printf "last"')"
capture exited-no-newline.http "/containers/$id_nonl/logs?stdout=1&stderr=1&timestamps=1"

# Invalid UTF-8 (0xff 0xfe) and a valid multibyte char (U+20AC, e2 82 ac).
utf8_cmd='printf "bad \377\376 euro \342\202\254 end\n"; printf "next line\n"'
id_utf8="$(run_exited invalid-utf8 "$IMG" sh -c "$utf8_cmd")"
capture invalid-utf8.http "/containers/$id_utf8/logs?stdout=1&stderr=1&timestamps=1"
# Same with the "local" log driver, which stores raw bytes (json-file does not).
id_utf8l="$(run_exited invalid-utf8-local --log-driver local "$IMG" sh -c "$utf8_cmd")"
capture invalid-utf8-local.http "/containers/$id_utf8l/logs?stdout=1&stderr=1&timestamps=1"

# Nothing printed at all.
id_empty="$(run_exited empty "$IMG" true)"
capture empty.http "/containers/$id_empty/logs?stdout=1&stderr=1&timestamps=1"

# A container id that does not exist.
capture not-found.http "/containers/0000000000000000000000000000000000000000000000000000000000000000/logs?stdout=1&stderr=1&timestamps=1"

# follow=1 on a running container: 5 lines 0.2 s apart, the response ends
# when the container exits.
docker run -d --name "${PREFIX}follow" --network none --label lc.test=capture "$IMG" sh -c '
    sleep 1
    for i in 1 2 3 4 5; do echo "follow line $i"; sleep 0.2; done' >/dev/null
id_follow="$(docker inspect -f '{{.Id}}' "${PREFIX}follow")"
capture follow.http "/containers/$id_follow/logs?stdout=1&stderr=1&timestamps=1&follow=1" --max-time 30
docker wait "${PREFIX}follow" >/dev/null

# --- other endpoints --------------------------------------------------------
capture ping.http "/_ping"
capture version.http "/version"

docker run -d --name "${PREFIX}running" --network none --label lc.test=capture \
    --label com.example.app=demo -e DEMO=1 "$IMG" sleep 300 >/dev/null
id_run="$(docker inspect -f '{{.Id}}' "${PREFIX}running")"
capture containers-list.http "/containers/json"
capture containers-list-all.http "/containers/json?all=1"
capture inspect.http "/containers/$id_run/json"
capture inspect-tty.http "/containers/$id_tty/json"
capture inspect-not-found.http "/containers/0000000000000000000000000000000000000000000000000000000000000000/json"

# Event stream: curl is cut by --max-time 8 (exit 28), so no final chunk.
filters='%7B%22type%22%3A%5B%22container%22%5D%7D' # {"type":["container"]}
(capture events.http "/events?filters=$filters" --max-time 8 || true) &
ev_pid=$!
sleep 1
docker create --name "${PREFIX}events" --network none --label lc.test=capture "$IMG" sleep 60 >/dev/null
docker start "${PREFIX}events" >/dev/null
sleep 0.5
docker stop -t 1 "${PREFIX}events" >/dev/null
docker rm "${PREFIX}events" >/dev/null
wait "$ev_pid" || true

log "done"
