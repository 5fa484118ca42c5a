#!/usr/bin/env python3
"""Follow containers' logs with the Python `docker` SDK, one thread per container.

    sdk_follower.py --host unix:///path/docker.sock --label k=v --out lines.txt

This is the script people write today: list the containers, then for each one a
thread iterating `container.logs(stream=True, follow=True, timestamps=True,
tail=0)` and writing what it yields. No reconnects and no timeouts beyond what
the SDK does itself (it disables the socket timeout on log streams). Lines go to
--out as dockerd sends them ("<timestamp> <message>\\n"), flushed every 200 ms.
Runs inside the benchmark's private venv (target/peers-venv) that has `docker`.
"""
import argparse
import sys
import threading
import time

import docker


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    lister = docker.DockerClient(base_url=args.host)
    containers = lister.containers.list(filters={"label": args.label})
    # One pooled connection per stream, as a careful user would configure it
    # (the default pool of 10 would open the rest anyway, with warnings).
    client = docker.DockerClient(base_url=args.host, max_pool_size=len(containers) + 4)
    out = open(args.out, "ab", buffering=1 << 16)
    lock = threading.Lock()

    def follow(container_id):
        c = client.containers.get(container_id)
        for chunk in c.logs(stream=True, follow=True, timestamps=True, tail=0):
            with lock:
                out.write(chunk)
        print(f"sdk_follower: stream of {container_id[:12]} ended", file=sys.stderr)

    for c in containers:
        threading.Thread(target=follow, args=(c.id,), daemon=True).start()
    print(f"sdk_follower: following {len(containers)} containers", file=sys.stderr, flush=True)
    while True:
        time.sleep(0.2)
        with lock:
            out.flush()


if __name__ == "__main__":
    main()
