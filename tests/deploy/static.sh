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

# Name resolution without NSS: the agent's own resolver reads the chroot's
# /etc/hosts, and `check` pushes an empty request to a "Loki" (a one-shot
# HTTP server answering 204) by that name.
mkdir -p "$root/etc"
echo "127.0.0.1 loki.test" > "$root/etc/hosts"
port_file="$(mktemp)"
python3 - "$port_file" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_port))
s.timeout = 20
s.handle_request()
PY
server=$!
for _ in $(seq 100); do [[ -s "$port_file" ]] && break; sleep 0.1; done
port="$(cat "$port_file")"; rm -f "$port_file"
json="$(chroot "$root" /log-capturer check --docker-host unix:///nonexistent.sock --state-dir /state \
    --loki "http://loki.test:$port" --json || true)"
wait "$server" || true
if ! grep -q '"check": "sink",' <<<"$json" || ! python3 -c '
import json, sys
rows = [r for r in json.loads(sys.argv[1]) if r["check"] == "sink"]
sys.exit(0 if rows and rows[0]["status"] == "OK" else 1)' "$json"; then
    say "the static binary could not reach http://loki.test:$port by /etc/hosts in an empty chroot: $json"
    exit 1
fi
say "resolves names in an empty chroot (no NSS): $(grep -o 'Loki at [^"]*' <<<"$json")"
