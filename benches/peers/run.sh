#!/usr/bin/env bash
# The peers benchmark: log-capturer next to `docker logs -f` and the Python
# docker SDK, following the same real containers. Method: benches/peers/README.md.
#
#   benches/peers/run.sh                        # N = 10 and 55, 100 lines/s each
#   PEERS_N="10" PEERS_WINDOW=30 benches/peers/run.sh
#
# Settings (environment): PEERS_N (space-separated container counts, default
# "10 55"), PEERS_RATE (lines/s per container, 100), PEERS_WINDOW (measured
# seconds per follower and round, 45), PEERS_WARMUP (10), PEERS_ROUNDS (times
# each follower is measured, interleaved, 2), PEERS_STALL (seconds a stream is
# stalled, 20; 0 skips), PEERS_RESULTS (default benches/peers/results).
#
# Needs its own dockerd (its CPU is measured from its pid): the private one of
# tests/docker/up.sh under $LC_DOCKER_DIR (default /tmp/lc-peers-docker),
# started if not running and stopped again at the end if this script started
# it. The SDK is installed into target/peers-venv (pip, never system-wide).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/benches/peers"
export LC_DOCKER_DIR="${LC_DOCKER_DIR:-/tmp/lc-peers-docker}"
# shellcheck source-path=SCRIPTDIR source=../../tests/docker/env.sh
source "$root/tests/docker/env.sh"
N_LIST="${PEERS_N:-10 55}"
RATE="${PEERS_RATE:-100}"
WINDOW="${PEERS_WINDOW:-45}"
WARMUP="${PEERS_WARMUP:-10}"
ROUNDS="${PEERS_ROUNDS:-2}"
STALL="${PEERS_STALL:-20}"
RESULTS="${PEERS_RESULTS:-$here/results}"
VENV="$root/target/peers-venv"

die() {
    echo "peers: $*" >&2
    exit 1
}

work="$(mktemp -d /tmp/lc-peers.XXXXXX)"
started_dockerd=0
driver_pid=""
cleanup() {
    local status=$?
    trap '' INT TERM
    if [[ -n "$driver_pid" ]] && kill -0 "$driver_pid" 2>/dev/null; then
        # The driver stops its followers and removes its containers on SIGTERM.
        kill -TERM "$driver_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.2; done
    fi
    if ((started_dockerd)); then
        "$root/tests/docker/down.sh" 2>/dev/null || echo "peers: run LC_DOCKER_DIR=$LC_DOCKER_DIR tests/docker/down.sh" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the agent, the SDK, dockerd ---------------------------------------------------
if ! command -v cargo >/dev/null && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
(cd "$root" && cargo build --release --locked --bin log-capturer)

if ! "$VENV/bin/python" -c 'import docker' 2>/dev/null; then
    echo "peers: installing the docker SDK into target/peers-venv" >&2
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q 'docker>=7,<8' || die "pip install docker failed"
fi

if [[ "$(curl -s --max-time 3 --unix-socket "$LC_DOCKER_SOCK" http://d/_ping 2>/dev/null || true)" != OK ]]; then
    started_dockerd=1
fi
"$root/tests/docker/up.sh" >/dev/null
dockerd_pid="$(cat "$LC_DOCKER_PIDFILE")"
[[ "$(cat "/proc/$dockerd_pid/comm" 2>/dev/null)" == dockerd ]] || die "no dockerd at pid $dockerd_pid ($LC_DOCKER_PIDFILE)"

mkdir -p "$RESULTS"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: PEERS_N=\"$N_LIST\" PEERS_RATE=$RATE PEERS_WINDOW=$WINDOW PEERS_WARMUP=$WARMUP PEERS_ROUNDS=$ROUNDS PEERS_STALL=$STALL benches/peers/run.sh"
    echo "dockerd: $(docker version -f '{{.Server.Version}}' 2>/dev/null), storage vfs, json-file logs"
    echo "docker CLI: $(docker version -f '{{.Client.Version}}' 2>/dev/null)"
    echo "python docker SDK: $("$VENV/bin/python" -c 'import docker; print(docker.__version__)') on $("$VENV/bin/python" --version)"
    echo "log-capturer: $(git -C "$root" rev-parse --short HEAD) $("$root/target/release/log-capturer" --version)"
    echo "machine: $(nproc) cores, $(uname -r), load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS/env.txt"
cat "$RESULTS/env.txt" >&2

# --- run ---------------------------------------------------------------------------
for n in $N_LIST; do
    python3 "$here/driver.py" --n "$n" --rate "$RATE" --window "$WINDOW" --warmup "$WARMUP" --rounds "$ROUNDS" \
        --stall "$STALL" --sock "$LC_DOCKER_SOCK" --dockerd-pid "$dockerd_pid" \
        --agent "$root/target/release/log-capturer" --sdk-python "$VENV/bin/python" \
        --work "$work" --results "$RESULTS" &
    driver_pid=$!
    wait "$driver_pid" || die "the driver failed for N=$n (messages above)"
    driver_pid=""
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/env.txt"
python3 "$here/table.py" "$RESULTS" >"$RESULTS/peers.md"
cat "$RESULTS/peers.md"
