#!/usr/bin/env bash
# Checks that BINARY (from `make static`) is fully static: no program
# interpreter, no dynamic dependencies, and (on a matching host, as root)
# that it runs in an empty chroot: no /lib, no /etc, no /proc.
#
#   tests/deploy/static.sh target/x86_64-unknown-linux-gnu/release/log-capturer [TARGET]
set -euo pipefail

bin="${1:?usage: static.sh BINARY [TARGET]}"
target="${2:-x86_64-unknown-linux-gnu}"
say() { echo "static.sh: $*" >&2; }

[[ -x "$bin" ]] || { say "$bin: not an executable (run make static)"; exit 1; }
if readelf -lW "$bin" | grep -q 'INTERP'; then
    say "$bin has a program interpreter: it is dynamically linked"
    exit 1
fi
if readelf -dW "$bin" | grep -q 'NEEDED'; then
    say "$bin needs shared libraries: $(readelf -dW "$bin" | grep NEEDED | tr -s ' ')"
    exit 1
fi
say "$(file -b "$bin" | cut -d, -f1-4); $(du -h "$bin" | cut -f1)"

if [[ "$target" != "$(uname -m)"-* ]]; then
    say "built for $target on $(uname -m): not run here"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    say "not root: the empty-chroot run is skipped"
    exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
cp "$bin" "$root/log-capturer"
out="$(chroot "$root" /log-capturer --version)"
[[ "$out" == log-capturer\ * ]] || { say "unexpected --version in an empty chroot: $out"; exit 1; }
say "runs in an empty chroot: $out"
