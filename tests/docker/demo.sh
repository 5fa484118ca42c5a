#!/usr/bin/env bash
# The agent in 20 seconds: three busybox containers log (one plain, one with
# stderr, one TTY), the agent follows them and prints their lines, its
# streams are reopened every ~5 s, then its key metrics are shown and the
# sequence numbers are checked (nothing lost, nothing repeated).
#
#   make demo                   # or tests/docker/demo.sh
#   DEMO_SECONDS=40 make demo   # run longer
#
# Docker used: $DOCKER_HOST if set and answering, else /var/run/docker.sock if
# it answers, else a private dockerd started by tests/docker/up.sh under
# $LC_DOCKER_DIR (default /tmp/log-capturer-docker), stopped again at the
# end if this script started it. Nothing is pulled: the image busybox:local
# is imported from /bin/busybox when missing (and removed at the end if this
# script imported it). Only containers labelled log-capturer-demo are
# created or removed. The agent's JSON output is kept in target/demo/.
# The containers' shell loops are single-quoted on purpose: $i expands inside them.
# shellcheck disable=SC2016
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_TO_RUN="${DEMO_SECONDS:-20}"
IMAGE=busybox:local
LABEL=log-capturer-demo
RUN_ID="$$-$(date +%s)"
LC_DOCKER_DIR="${LC_DOCKER_DIR:-/tmp/log-capturer-docker}"

say() { printf '\n== %s\n' "$*"; }
die() {
    echo "demo: $*" >&2
    exit 1
}

# --- cleanup on every exit path -------------------------------------------
tmp="$(mktemp -d /tmp/lc-demo.XXXXXX)"
agent_pid=""
started_dockerd=0
purge_dockerd_dir=0
imported_image=0
cleanup() {
    local status=$?
    trap '' INT TERM # let cleanup finish even on a second Ctrl-C
    if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        # The agent exits within 2 s of SIGTERM; give it 10.
        for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$agent_pid" 2>/dev/null || true
    fi
    if [[ -n "${DOCKER_HOST:-}" ]] && command -v docker >/dev/null; then
        local ids
        ids="$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)"
        # shellcheck disable=SC2086 # one id per word
        [[ -z "$ids" ]] || docker rm -f $ids >/dev/null 2>&1 || echo "demo: could not remove containers: $ids" >&2
        if ((imported_image)); then
            docker rmi "$IMAGE" >/dev/null 2>&1 || echo "demo: could not remove image $IMAGE" >&2
        fi
    fi
    if ((started_dockerd)); then
        local purge=()
        ((purge_dockerd_dir)) && purge=(--purge)
        LC_DOCKER_DIR="$LC_DOCKER_DIR" "$root/tests/docker/down.sh" "${purge[@]}" 2>/dev/null ||
            echo "demo: stopping the private dockerd failed; run LC_DOCKER_DIR=$LC_DOCKER_DIR tests/docker/down.sh" >&2
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -----------------------------------------------------------------
if ! command -v cargo >/dev/null && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) and run again"
if ! command -v curl >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "curl is missing; install it (apt-get install curl) and run again"
    echo "demo: installing curl" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >&2
fi

# --- which Docker ------------------------------------------------------------
ping() { # $1 = DOCKER_HOST-style URL; true if dockerd answers /_ping
    local url="$1" out
    case "$url" in
        unix://*) out="$(curl -s --max-time 3 --unix-socket "${url#unix://}" http://d/_ping 2>/dev/null)" ;;
        tcp://*) out="$(curl -s --max-time 3 "http://${url#tcp://}/_ping" 2>/dev/null)" ;;
        *) return 1 ;;
    esac
    [[ "$out" == OK ]]
}
if [[ -n "${DOCKER_HOST:-}" ]] && ping "$DOCKER_HOST"; then
    where="DOCKER_HOST=$DOCKER_HOST"
elif ping unix:///var/run/docker.sock; then
    export DOCKER_HOST=unix:///var/run/docker.sock
    where="the local Docker at /var/run/docker.sock"
elif ping "unix://$LC_DOCKER_DIR/docker.sock"; then
    export DOCKER_HOST="unix://$LC_DOCKER_DIR/docker.sock"
    where="the private dockerd already running under $LC_DOCKER_DIR"
else
    [[ -n "${DOCKER_HOST:-}" ]] && echo "demo: DOCKER_HOST=$DOCKER_HOST does not answer; not using it" >&2
    say "no Docker answers here: starting a private dockerd under $LC_DOCKER_DIR (tests/docker/up.sh)"
    [[ -e "$LC_DOCKER_DIR" ]] || purge_dockerd_dir=1
    started_dockerd=1
    exports="$(LC_DOCKER_DIR="$LC_DOCKER_DIR" "$root/tests/docker/up.sh")"
    eval "$exports"
    where="a private dockerd under $LC_DOCKER_DIR (stopped again at the end)"
fi
command -v docker >/dev/null || die "the docker CLI is missing; install docker.io (apt-get install docker.io)"

# Leftovers of an earlier demo that was killed with SIGKILL.
old="$(docker ps -aq --filter "label=$LABEL")"
# shellcheck disable=SC2086
[[ -z "$old" ]] || docker rm -f $old >/dev/null

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    # The same image tests/docker/up.sh makes: /bin/busybox and its applets.
    if [[ ! -x /bin/busybox ]]; then
        [[ $(id -u) -eq 0 ]] || die "/bin/busybox is missing; install busybox-static and run again"
        echo "demo: installing busybox-static" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2
    fi
    echo "demo: importing $IMAGE from /bin/busybox (removed again at the end)" >&2
    mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc"
    cp /bin/busybox "$tmp/root/bin/busybox"
    for app in sh echo sleep usleep; do ln -s busybox "$tmp/root/bin/$app"; done
    echo 'root:x:0:0:root:/:/bin/sh' >"$tmp/root/etc/passwd"
    tar -C "$tmp/root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    imported_image=1
fi

# --- the agent ---------------------------------------------------------------
say "building target/release/log-capturer (cargo build --release --locked)"
(cd "$root" && cargo build --release --locked --bin log-capturer)

mkdir -p "$root/target/demo"
out="$root/target/demo/out.jsonl"
rm -f "$out"

# One line per record: time, container, stream, message; the first record is
# also shown whole, as the agent writes it.
pretty() {
    local red="" off=""
    if [[ -t 1 ]]; then red=$'\033[31m' off=$'\033[0m'; fi
    awk -v red="$red" -v off="$off" '
        function field(line, key,   i, s, c, v) {
            i = index(line, "\"" key "\":\"")
            if (i == 0) return ""
            s = substr(line, i + length(key) + 4)
            v = ""
            while (length(s) > 0) {
                c = substr(s, 1, 1)
                if (c == "\\") { v = v substr(s, 1, 2); s = substr(s, 3); continue }
                if (c == "\"") break
                v = v c; s = substr(s, 2)
            }
            return v
        }
        NR == 1 { print "   one record, exactly as the agent writes it:"; print "   " $0; print "" ; fflush() }
        {
            st = field($0, "stream")
            line = sprintf("   %s  %-14s %-6s %s", substr(field($0, "timestamp"), 12, 12),
                field($0, "container_name"), st, field($0, "message"))
            if (st == "stderr") line = red line off
            print line; fflush()
        }'
}

say "starting the agent: following only containers labelled $LABEL=$RUN_ID on $where"
echo "   log-capturer --rotate-after 5s --state-dir <temp> --metrics-addr 127.0.0.1:0 \\"
echo "       --include-label $LABEL=$RUN_ID --output ${out#"$root"/}"
"$root/target/release/log-capturer" \
    --rotate-after 5s \
    --state-dir "$tmp/state" \
    --metrics-addr 127.0.0.1:0 \
    --include-label "$LABEL=$RUN_ID" \
    --output "$out" \
    2>"$tmp/agent.err" &
agent_pid=$!
# tail --pid ends once the agent has exited and its last lines are read.
tail -n +1 -s 0.2 -F --pid="$agent_pid" "$out" 2>/dev/null | pretty &
pretty_pid=$!

# The agent prints its metrics address on stderr once it is running.
addr=""
for _ in $(seq 100); do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$tmp/agent.err" >&2; die "the agent exited at start (above)"; }
    addr="$(sed -n 's|.*metrics on http://\([^/]*\)/metrics.*|\1|p' "$tmp/agent.err")"
    [[ -n "$addr" ]] && break
    sleep 0.2
done
[[ -n "$addr" ]] || die "the agent did not start within 20 s: $(cat "$tmp/agent.err")"
sed 's/^/   /' "$tmp/agent.err"

# --- three containers --------------------------------------------------------
say "starting 3 containers: lc-demo-web (stdout), lc-demo-worker (stdout + stderr), lc-demo-tty (TTY)"
run() { docker run -d --network none --label "$LABEL=$RUN_ID" "$@" >/dev/null; }
# seq=N in every line lets the end of the demo check for gaps and repeats.
run --name lc-demo-web "$IMAGE" sh -c \
    'i=0; while :; do i=$((i+1)); echo "GET /items/$i HTTP/1.1 200 seq=$i"; usleep 500000; done'
run --name lc-demo-worker "$IMAGE" sh -c \
    'i=0; while :; do i=$((i+1)); if [ $((i % 3)) -eq 0 ]; then echo "job $i failed: disk full seq=$i" >&2;
     else echo "job $i done seq=$i"; fi; sleep 1; done'
run -t --name lc-demo-tty "$IMAGE" sh -c \
    'i=0; while :; do i=$((i+1)); echo "tty tick seq=$i"; sleep 1; done'

say "their lines, as the agent ships them (for ${SECONDS_TO_RUN} s; each stream is reopened every ~5 s)"
rotations() {
    curl -s --max-time 2 "http://$addr/metrics" |
        awk '$1 == "log_capturer_stream_rotations_total{reason=\"age\"}" {print $2 + 0}'
}
seen=0
end=$((SECONDS + SECONDS_TO_RUN))
while ((SECONDS < end)); do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$tmp/agent.err" >&2; die "the agent exited (above)"; }
    sleep 1
    now="$(rotations || true)"
    if [[ -n "$now" ]] && ((now > seen)); then
        echo "   -- $((now - seen)) stream(s) closed and reopened where they were (rotations so far: $now)"
        seen=$now
    fi
done

# --- metrics -------------------------------------------------------------------
metrics="$(curl -s --max-time 5 "http://$addr/metrics")" || die "GET http://$addr/metrics failed"
# Stop the agent (it flushes its output) and let the last lines print.
kill -TERM "$agent_pid"
for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.2; done
wait "$agent_pid" || echo "demo: the agent exited with status $?" >&2
agent_pid=""
wait "$pretty_pid" || true

say "the agent's key metrics (curl http://$addr/metrics)"
show() { # metric name (with labels), what it means
    local v
    v="$(awk -v m="$1" '$1 == m {print $2}' <<<"$metrics")"
    printf '   %-52s %-10s %s\n' "$1" "${v:-?}" "$2"
}
show log_capturer_containers_followed "containers being followed"
show log_capturer_active_streams "log connections open now (one per container)"
show 'log_capturer_stream_rotations_total{reason="age"}' "streams closed and reopened on purpose (--rotate-after)"
show 'log_capturer_lines_total{stream="stdout"}' "lines shipped from stdout (TTY lines count here)"
show 'log_capturer_lines_total{stream="stderr"}' "lines shipped from stderr"
show log_capturer_duplicates_dropped_total "lines dockerd replayed after a reopen, recognised and dropped"
show log_capturer_docker_up "1 while Docker answers"
show process_open_fds "file descriptors of the agent"
show process_threads "threads of the agent: one poll loop"
rss="$(awk '$1 == "process_resident_memory_bytes" {printf "%.1f MiB", $2 / 1048576}' <<<"$metrics")"
printf '   %-52s %-10s %s\n' process_resident_memory_bytes "${rss:-?}" "resident memory"

say "nothing lost, nothing repeated? (seq=N of each container, across the reopens)"
ok=1
for name in lc-demo-web lc-demo-worker lc-demo-tty; do
    # first last count distinct
    read -r first last count distinct < <(grep -F "\"container_name\":\"$name\"" "$out" |
        sed -n 's/.*seq=\([0-9]*\).*/\1/p' | sort -n |
        awk 'NR == 1 {f = $1} {if ($1 != p || NR == 1) d++; p = $1; n++} END {print f + 0, p + 0, n + 0, d + 0}')
    verdict="ok"
    if ((count == 0)); then
        verdict="NO LINES"
    elif ((first != 1 || distinct != last - first + 1 || count != distinct)); then
        verdict="WRONG: expected seq 1..$last once each"
    fi
    [[ "$verdict" == ok ]] || ok=0
    printf '   %-14s %4d lines, seq %d..%d, %d distinct: %s\n' "$name" "$count" "$first" "$last" "$distinct" "$verdict"
done
echo
echo "   the agent's JSON lines are in ${out#"$root"/}"
((ok)) || die "some container's lines were lost or repeated (see above and $out)"
