#!/usr/bin/env bash
# Start a private dockerd for the tests (no network, vfs storage) and make
# sure the image busybox:local exists in it. Idempotent.
#
#   eval "$(tests/docker/up.sh)"     # exports DOCKER_HOST
#
# State lives in $LC_DOCKER_DIR (default /tmp/log-capturer-docker).
# LC_DOCKERD_FLAGS adds dockerd flags (split on spaces), e.g.
# LC_DOCKERD_FLAGS=--live-restore so containers outlive a daemon restart.
# Progress goes to stderr; stdout carries only the final `export` line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$here/env.sh"
DIR="$LC_DOCKER_DIR"
SOCK="$LC_DOCKER_SOCK"

log() { echo "up.sh: $*" >&2; }

if (( ${#SOCK} > 100 )); then
    log "state dir path too long for a unix socket: $SOCK"
    exit 1
fi

# --- packages --------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if (( ${#missing[@]} )); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages (${missing[*]}) and not root"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
bb_help="$(/bin/busybox --help 2>&1 || true)"
if [[ "$bb_help" != BusyBox* ]]; then
    log "/bin/busybox is not a busybox binary"
    exit 1
fi
ldd_out="$(ldd /bin/busybox 2>&1 || true)"
if ! grep -qE 'not a dynamic|statically' <<<"$ldd_out"; then
    log "warning: /bin/busybox is not static; the image may not work (install busybox-static)"
fi

ping_ok() {
    [[ -S "$SOCK" ]] || return 1
    [[ "$(curl -s --max-time 5 --unix-socket "$SOCK" http://x/_ping 2>/dev/null)" == OK ]]
}

# --- daemon ----------------------------------------------------------------
if ping_ok; then
    log "dockerd already answers at $SOCK"
else
    mkdir -p "$DIR"
    # A stale pidfile or socket from a crashed run would make dockerd refuse
    # to start; clean it only if that process is really gone.
    if [[ -f "$LC_DOCKER_PIDFILE" ]]; then
        oldpid="$(cat "$LC_DOCKER_PIDFILE" 2>/dev/null || true)"
        if [[ -n "$oldpid" ]] && kill -0 "$oldpid" 2>/dev/null; then
            log "dockerd pid $oldpid exists but does not answer; run tests/docker/down.sh first"
            exit 1
        fi
        rm -f "$LC_DOCKER_PIDFILE"
    fi
    rm -f "$SOCK"
    if [[ -S /run/containerd/containerd.sock ]]; then
        log "warning: a system containerd runs at /run/containerd/containerd.sock;" \
            "dockerd will use it instead of starting its own"
    fi
    log "starting dockerd (log: $LC_DOCKER_LOG)"
    # setsid: own session/process group, so it survives the caller's shell
    # and job control signals; down.sh stops it via the pidfile.
    # tini -s (a child subreaper) wraps dockerd when available: containerd's
    # shim daemons are orphaned by design, and if PID 1 does not reap (as in
    # some VMs/containers) every finished container would leave a zombie.
    reaper=()
    if command -v tini >/dev/null 2>&1; then
        reaper=(tini -s --)
    fi
    read -r -a extra_flags <<<"${LC_DOCKERD_FLAGS:-}"
    setsid "${reaper[@]}" dockerd "${extra_flags[@]}" \
        --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
        -H "unix://$SOCK" \
        --data-root "$DIR/data" \
        --exec-root "$DIR/exec" \
        --pidfile "$LC_DOCKER_PIDFILE" \
        >>"$LC_DOCKER_LOG" 2>&1 </dev/null &
    dpid=$!
    deadline=$((SECONDS + 60))
    until ping_ok; do
        if ! kill -0 "$dpid" 2>/dev/null; then
            log "dockerd exited early; log tail:"
            tail -n 40 "$LC_DOCKER_LOG" >&2 || true
            exit 1
        fi
        if (( SECONDS >= deadline )); then
            log "dockerd did not answer /_ping within 60 s; log tail:"
            tail -n 40 "$LC_DOCKER_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "dockerd is up (pid $(cat "$LC_DOCKER_PIDFILE" 2>/dev/null || echo "?"))"
fi

# --- image -----------------------------------------------------------------
if docker image inspect "$LC_DOCKER_IMAGE" >/dev/null 2>&1; then
    log "image $LC_DOCKER_IMAGE present"
else
    log "importing $LC_DOCKER_IMAGE from /bin/busybox"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc" "$tmp/root/proc" \
        "$tmp/root/sys" "$tmp/root/dev"
    chmod 1777 "$tmp/root/tmp"
    cp /bin/busybox "$tmp/root/bin/busybox"
    for app in sh ash echo sleep seq printf cat head tail yes dd tr true false \
        env ls wc sed awk grep date tee kill ps id hostname usleep; do
        ln -s busybox "$tmp/root/bin/$app"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$tmp/root/etc/passwd"
    echo 'root:x:0:' >"$tmp/root/etc/group"
    tar -C "$tmp/root" -c . | docker import \
        -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$LC_DOCKER_IMAGE" >&2
    rm -rf "$tmp"
    trap - EXIT
fi

echo "export DOCKER_HOST=unix://$SOCK"
