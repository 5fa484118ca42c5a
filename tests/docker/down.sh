#!/usr/bin/env bash
# Stop the private test dockerd started by up.sh and clean up after it.
#
#   tests/docker/down.sh            # keep $LC_DOCKER_DIR/data (images survive)
#   tests/docker/down.sh --purge    # also delete the whole state directory
#   tests/docker/down.sh --daemon-only
#                                   # stop dockerd alone: containers, containerd
#                                   # and mounts stay (with --live-restore the
#                                   # containers keep running; up.sh restarts it)
#
# Only processes whose command line refers to $LC_DOCKER_DIR are touched, so
# another dockerd/containerd on the machine is left alone. Exits 0 when
# nothing is running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$here/env.sh"
DIR="$LC_DOCKER_DIR"
SOCK="$LC_DOCKER_SOCK"

purge=0
daemon_only=0
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        --daemon-only) daemon_only=1 ;;
        -h | --help)
            sed -n '2,14p' "$0"
            exit 0
            ;;
        *)
            echo "down.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

log() { echo "down.sh: $*" >&2; }

# Refuse obviously dangerous state dirs (we may rm -rf it with --purge).
case "$DIR" in
    "" | / | /tmp | /tmp/ | /root | /home | /var | /usr)
        log "refusing to operate on LC_DOCKER_DIR=$DIR"
        exit 1
        ;;
esac

cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }
comm_of() { cat "/proc/$1/comm" 2>/dev/null || true; }
alive() { # alive and not a zombie
    local st
    st="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null || true)"
    [[ -n "$st" && "$st" != Z ]]
}

# PIDs (live, not zombies) whose name matches $1 (ERE) and whose command line
# mentions our state dir.
our_pids() {
    local pat="$1" p
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        [[ "$p" == "$$" ]] && continue
        [[ "$(comm_of "$p")" =~ $pat ]] || continue
        case "$(cmdline_of "$p")" in
            *"$DIR/"*) alive "$p" && echo "$p" ;;
        esac
    done
    return 0
}

# Send TERM to the given pids, wait up to $1 seconds, then KILL survivors.
stop_pids() {
    local timeout="$1"
    shift
    (($#)) || return 0
    local p
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        local any=0
        for p in "$@"; do alive "$p" && any=1; done
        ((any)) || return 0
        sleep 0.2
    done
    for p in "$@"; do
        if alive "$p"; then
            log "pid $p ($(comm_of "$p")) did not stop; sending SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    sleep 0.5
}

if ((purge && daemon_only)); then
    log "--purge and --daemon-only exclude each other"
    exit 2
fi

# --- containers ------------------------------------------------------------
if ((!daemon_only)) && [[ -S "$SOCK" ]] &&
    [[ "$(curl -s --max-time 5 --unix-socket "$SOCK" http://x/_ping 2>/dev/null || true)" == OK ]]; then
    ids="$(timeout 30 docker ps -aq 2>/dev/null || true)"
    if [[ -n "$ids" ]]; then
        log "removing $(wc -l <<<"$ids") container(s)"
        # shellcheck disable=SC2086
        timeout 120 docker rm -f $ids >/dev/null 2>&1 || log "warning: docker rm -f failed or timed out"
    fi
fi

# --- dockerd ---------------------------------------------------------------
dpids=()
if [[ -f "$LC_DOCKER_PIDFILE" ]]; then
    p="$(cat "$LC_DOCKER_PIDFILE" 2>/dev/null || true)"
    # Only trust the pidfile if that pid really is our dockerd (pids recycle).
    if [[ "$p" =~ ^[0-9]+$ ]] && alive "$p" && [[ "$(comm_of "$p")" == dockerd ]] &&
        [[ "$(cmdline_of "$p")" == *"$DIR/"* ]]; then
        dpids+=("$p")
    fi
fi
# Also catch a dockerd whose pidfile is gone.
for p in $(our_pids '^dockerd$'); do
    [[ " ${dpids[*]-} " == *" $p "* ]] || dpids+=("$p")
done
if ((${#dpids[@]})); then
    log "stopping dockerd (pid ${dpids[*]})"
    stop_pids 20 "${dpids[@]}"
fi

if ((daemon_only)); then
    # The socket is dockerd's; containerd, shims and mounts belong to the
    # containers that are meant to survive.
    rm -f "$SOCK"
    exit 0
fi

# --- leftovers: managed containerd, shims, tini wrapper --------------------
# dockerd normally stops its managed containerd itself; give it a moment.
mapfile -t left < <(our_pids '^(containerd|containerd-shim.*|tini)$')
if ((${#left[@]})); then
    log "stopping leftover processes: ${left[*]}"
    stop_pids 10 "${left[@]}"
fi

# --- mounts ----------------------------------------------------------------
# Deepest first; /proc/mounts encodes spaces etc. as octal escapes.
for _ in 1 2 3; do
    mapfile -t mnts < <(awk '{print $2}' /proc/mounts | while read -r m; do
        m="$(printf '%b' "$m")"
        [[ "$m" == "$DIR" || "$m" == "$DIR/"* ]] && echo "$m"
    done | sort -r)
    ((${#mnts[@]})) || break
    for m in "${mnts[@]}"; do
        umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
    done
done

# --- files -----------------------------------------------------------------
rm -f "$SOCK" "$LC_DOCKER_PIDFILE"
if ((purge)); then
    log "purging $DIR"
    rm -rf "$DIR"
fi
exit 0
