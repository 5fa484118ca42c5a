#!/usr/bin/env python3
"""A unix-socket proxy in front of dockerd that can stall one container's log streams.

    stall_proxy.py --listen /tmp/p/proxy.sock --upstream /tmp/d/docker.sock --control /tmp/p/ctl.sock

Every client connection gets its own upstream connection; bytes are copied both
ways unchanged. Requests are watched for `GET .../containers/<ref>/logs`, so each
connection knows which container's log it carries (a keep-alive connection that
first inspects and then asks for logs, as the docker CLI does, is covered).

Control socket, one command per connection, one line each:

    stall <ref> [<ref>...]   stop forwarding dockerd's bytes on every log connection
                             open now for one of these refs (id or name). The
                             connection stays open; the proxy stops reading from
                             dockerd, so dockerd blocks in write() as it would on a
                             dead peer. New connections are not stalled.
                             Answer: "stalled <count>".
    release <ref> [<ref>...] forward the stalled connections of these refs again,
                             from where they stopped. Answer: "released <count>".
    status                   "stalled_open <count> connections <count>"

Real dockerd never stalls on demand; this is how the peers benchmark makes a
stream go silent while its container keeps logging. Standard library only.
"""
import argparse
import os
import re
import socket
import threading
import time

LOGS_RE = re.compile(rb"GET /[^ ]*?containers/([^/ ?]+)/logs")


class Conn:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.ref = None
        self.stalled = False
        self.closed = False

    def close(self):
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.upstream):
            # shutdown wakes the other thread if it is blocked in recv() on s.
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Proxy:
    def __init__(self, upstream_path):
        self.upstream_path = upstream_path
        self.lock = threading.Lock()
        self.conns = set()

    def handle(self, client):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream_path)
        except OSError:
            client.close()
            return
        conn = Conn(client, upstream)
        with self.lock:
            self.conns.add(conn)
        threading.Thread(target=self.up, args=(conn,), daemon=True).start()
        threading.Thread(target=self.down, args=(conn,), daemon=True).start()

    def up(self, conn):
        """Client to dockerd; notes which container's log a request asks for."""
        try:
            while True:
                data = conn.client.recv(65536)
                if not data:
                    break
                m = LOGS_RE.search(data)
                if m:
                    conn.ref = m.group(1).decode(errors="replace")
                conn.upstream.sendall(data)
        except OSError:
            pass
        self.drop(conn)

    def down(self, conn):
        """Dockerd to client, unless stalled: then read nothing until the client leaves."""
        try:
            while not conn.closed:
                if conn.stalled:
                    time.sleep(0.05)
                    continue
                data = conn.upstream.recv(65536)
                if not data:
                    break
                if conn.stalled:
                    # Stalled while this read was in flight: hold these bytes back too.
                    while conn.stalled and not conn.closed:
                        time.sleep(0.05)
                    if conn.closed:
                        break
                conn.client.sendall(data)
        except OSError:
            pass
        self.drop(conn)

    def drop(self, conn):
        conn.close()
        with self.lock:
            self.conns.discard(conn)

    def command(self, line):
        words = line.split()
        if not words:
            return "error: empty command"
        with self.lock:
            if words[0] == "stall":
                refs = set(words[1:])
                hit = [c for c in self.conns if c.ref in refs and not c.stalled]
                for c in hit:
                    c.stalled = True
                return f"stalled {len(hit)}"
            if words[0] == "release":
                refs = set(words[1:])
                hit = [c for c in self.conns if c.ref in refs and c.stalled]
                for c in hit:
                    c.stalled = False
                return f"released {len(hit)}"
            if words[0] == "status":
                stalled = sum(1 for c in self.conns if c.stalled)
                return f"stalled_open {stalled} connections {len(self.conns)}"
        return f"error: unknown command {words[0]!r}"


def listen(path):
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(512)
    return s


def control_loop(proxy, sock):
    while True:
        c, _ = sock.accept()
        with c:
            c.settimeout(5)
            try:
                line = c.makefile("r").readline()
                c.sendall((proxy.command(line) + "\n").encode())
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--control", required=True)
    args = ap.parse_args()
    proxy = Proxy(args.upstream)
    front = listen(args.listen)
    ctl = listen(args.control)
    threading.Thread(target=control_loop, args=(proxy, ctl), daemon=True).start()
    while True:
        client, _ = front.accept()
        proxy.handle(client)


if __name__ == "__main__":
    main()
