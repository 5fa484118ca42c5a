#!/usr/bin/env python3
"""The peers benchmark: the same N logging containers followed by log-capturer,
by `docker logs -f --timestamps` (one process per container) and by a Python
`docker` SDK script (one thread per container), one after another.

Run through benches/peers/run.sh, which prepares the dockerd, the agent binary
and the SDK's venv, and passes everything below. Standard library only.

For each follower:
  1. measure: it follows the containers directly on dockerd's socket; after every
     container has delivered a line and a warm-up, one window of --window seconds
     is measured (CPU of the follower's processes and of dockerd from /proc, lines
     received, RSS/PSS/fds/threads sampled every 2 s), then it is stopped and every
     container's seq numbers are checked for gaps and repeats.
  2. stall: it follows again, through stall_proxy.py; once every container has
     delivered a line, the proxy stops forwarding one container's log stream
     (connection left open, container still logging) for --stall seconds, and
     what the follower does is recorded.
A "none" row first measures dockerd with nobody following (the cost of storing
the logs), over the same window.
"""
import argparse
import csv
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

SEQ_RE = re.compile(rb"c=(lcp-\d+) seq=(\d+)")
HZ = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
LABEL = "lc-peers=1"


def log(msg):
    print(f"peers: {msg}", file=sys.stderr, flush=True)


# --- dockerd over its unix socket ---------------------------------------------------


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("d", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def api_get(sock, path):
    c = UnixHTTP(sock)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def last_seq(sock, name):
    """The seq of the newest line the container has logged (0 if none yet)."""
    status, body = api_get(sock, f"/containers/{name}/logs?stdout=1&tail=1")
    if status != 200:
        raise RuntimeError(f"logs of {name}: HTTP {status} {body[:200]!r}")
    m = SEQ_RE.findall(body)
    return int(m[-1][1]) if m else 0


def log_files_mib(sock, names):
    """Total size of the containers' json-file logs now."""
    total = 0
    for n in names:
        _, body = api_get(sock, f"/containers/{n}/json")
        try:
            total += os.path.getsize(json.loads(body)["LogPath"])
        except (OSError, KeyError):
            pass
    return total / 1048576


def produced(sock, names):
    return {n: last_seq(sock, n) for n in names}


# --- /proc ---------------------------------------------------------------------


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def proc_sample(pid):
    """(rss KiB, pss KiB, fds, threads) of one live process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pss = rss
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, pss, fds, threads


def sum_cpu(pids):
    return sum(proc_cpu_s(p) for p in pids)


def sum_sample(pids):
    tot = [0, 0, 0, 0]
    for p in pids:
        for i, v in enumerate(proc_sample(p)):
            tot[i] += v
    return tot


# --- what followers wrote ----------------------------------------------------------


class Lines:
    """Newline counts of growing output files, read incrementally."""

    def __init__(self, paths):
        self.paths = paths
        self.offsets = {p: 0 for p in paths}
        self.count = 0

    def update(self):
        for data in new_lines(self.paths, self.offsets):
            self.count += data.count(b"\n")
        return self.count


def new_lines(paths, offsets):
    """Yield, per growing file, the whole lines written since the last call
    (`offsets` is updated); a partial last line is read again next time."""
    for p in paths:
        try:
            with open(p, "rb") as f:
                f.seek(offsets[p])
                data = f.read()
        except FileNotFoundError:
            continue
        end = data.rfind(b"\n") + 1
        offsets[p] += end
        yield data[:end]


class Seqs:
    """Per container, the seq numbers seen in growing output files."""

    def __init__(self, paths):
        self.paths = paths
        self.offsets = {p: 0 for p in paths}
        self.seqs = {}
        self.first_seen = {}  # (name, seq) -> monotonic time first seen, for watched names
        self.watch = set()

    def update(self):
        now = time.monotonic()
        for data in new_lines(self.paths, self.offsets):
            for name, seq in SEQ_RE.findall(data):
                name = name.decode()
                seq = int(seq)
                self.seqs.setdefault(name, []).append(seq)
                if name in self.watch:
                    self.first_seen.setdefault((name, seq), now)

    def max_seq(self, name):
        s = self.seqs.get(name)
        return max(s) if s else 0

    def check(self, names):
        """(missing, duplicates) over every container, each from its first to its last seq seen."""
        missing = dups = 0
        for n in names:
            s = self.seqs.get(n, [])
            if not s:
                continue
            distinct = len(set(s))
            missing += (max(s) - min(s) + 1) - distinct
            dups += len(s) - distinct
        return missing, dups


# --- followers ----------------------------------------------------------------------


RUNNING = []  # every follower started, so a failed run still stops them


class Follower:
    def __init__(self, kind, args, work, sock, names):
        self.kind = kind
        self.args = args
        self.work = work
        self.sock = sock
        self.names = names
        self.procs = []
        self.outputs = []
        self.stderr_paths = []
        self.metrics_addr = None

    def start(self):
        os.makedirs(self.work, exist_ok=True)
        RUNNING.append(self)
        a = self.args
        if self.kind == "log-capturer":
            out = os.path.join(self.work, "out.jsonl")
            err = os.path.join(self.work, "agent.err")
            cmd = [a.agent, "--docker-host", f"unix://{self.sock}", "--output", out,
                   "--state-dir", os.path.join(self.work, "state"), "--metrics-addr", "127.0.0.1:0",
                   "--include-label", LABEL, "--idle-timeout", a.idle_timeout]
            self.spawn(cmd, err)
            self.outputs = [out]
        elif self.kind == "docker-logs":
            for n in self.names:
                out = os.path.join(self.work, f"{n}.log")
                err = os.path.join(self.work, f"{n}.err")
                cmd = ["docker", "-H", f"unix://{self.sock}", "logs", "-f", "--timestamps", "--tail", "0", n]
                self.spawn(cmd, err, stdout=out)
                self.outputs.append(out)
        elif self.kind == "python-sdk":
            out = os.path.join(self.work, "out.txt")
            err = os.path.join(self.work, "sdk.err")
            here = os.path.dirname(os.path.abspath(__file__))
            cmd = [a.sdk_python, os.path.join(here, "sdk_follower.py"), "--host", f"unix://{self.sock}",
                   "--label", LABEL, "--out", out]
            self.spawn(cmd, err)
            self.outputs = [out]
        else:
            raise ValueError(self.kind)

    def spawn(self, cmd, err_path, stdout=None):
        self.stderr_paths.append(err_path)
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL
        self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=open(err_path, "wb"),
                                           stdin=subprocess.DEVNULL))

    def pids(self):
        return [p.pid for p in self.procs]

    def alive(self):
        return [p for p in self.procs if p.poll() is None]

    def check_alive(self):
        dead = [p for p in self.procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{self.kind}: {len(dead)} process(es) exited: {self.stderr_tail()}")

    def stderr_tail(self):
        text = ""
        for p in self.stderr_paths:
            try:
                with open(p, errors="replace") as f:
                    t = f.read().strip()
            except OSError:
                continue
            if t:
                text += f"[{os.path.basename(p)}] {t[-600:]}\n"
        return text.strip()

    def metrics(self):
        if self.kind != "log-capturer":
            return {}
        if self.metrics_addr is None:
            with open(self.stderr_paths[0], errors="replace") as f:
                m = re.search(r"metrics on http://([^/]+)/metrics", f.read())
            if not m:
                return {}
            self.metrics_addr = m.group(1)
        host, port = self.metrics_addr.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            c.request("GET", "/metrics")
            body = c.getresponse().read().decode()
        finally:
            c.close()
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def stop(self, timeout=10):
        """SIGTERM every process; seconds until all exited (KILL after timeout)."""
        t0 = time.monotonic()
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        deadline = t0 + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return time.monotonic() - t0


def wait_all_delivered(f, seqs, names, timeout):
    """Wait until every container has at least one line in the follower's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f.check_alive()
        seqs.update()
        if all(n in seqs.seqs for n in names):
            return
        time.sleep(0.3)
    missing = [n for n in names if n not in seqs.seqs]
    raise RuntimeError(f"{f.kind}: no line from {len(missing)} container(s) within {timeout} s "
                       f"(e.g. {missing[:3]}); stderr: {f.stderr_tail()}")


def measure(kind, a, names, dockerd_pid, root):
    """One measurement window; returns a dict of results."""
    row = {"follower": kind}
    f = None
    if kind != "none":
        # Start-up is timed too: how long until every container has delivered a
        # line, and what dockerd spent meanwhile (a follower that opens its
        # streams with `since` alone makes dockerd read each log file whole).
        s0 = time.monotonic()
        sd0 = proc_cpu_s(dockerd_pid)
        f = Follower(kind, a, os.path.join(root, kind, "measure"), a.sock, names)
        f.start()
        seqs = Seqs(f.outputs)
        wait_all_delivered(f, seqs, names, a.ready_timeout)
        row["startup_s"] = round(time.monotonic() - s0, 1)
        row["startup_dockerd_cpu_s"] = round(proc_cpu_s(dockerd_pid) - sd0, 2)
        row["log_file_mib"] = round(log_files_mib(a.sock, names), 1)
        time.sleep(a.warmup)
        counter = Lines(f.outputs)
        counter.update()
    pids = f.pids() if f else []
    p0 = produced(a.sock, names)
    c0 = sum_cpu(pids)
    d0 = proc_cpu_s(dockerd_pid)
    l0 = counter.update() if f else 0
    t0 = time.monotonic()
    samples = []
    while True:
        left = t0 + a.window - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(2.0, left))
        if f:
            f.check_alive()
            samples.append(sum_sample(pids))
            counter.update()
    t1 = time.monotonic()
    l1 = counter.update() if f else 0
    c1 = sum_cpu(pids)
    d1 = proc_cpu_s(dockerd_pid)
    p1 = produced(a.sock, names)
    window = t1 - t0
    made = sum(p1[n] - p0[n] for n in names)
    got = l1 - l0
    lines = got if f else made
    with open("/proc/loadavg") as la:
        load1 = la.read().split()[0]
    row.update({
        "window_s": round(window, 1),
        "loadavg_1m_at_end": load1,
        "processes": len(pids),
        "lines_produced": made,
        "lines_received": got,
        "lines_per_s": round(lines / window),
        "follower_cpu_s": round(c1 - c0, 2),
        "cpu_s_per_M_lines": round((c1 - c0) / lines * 1e6, 1) if f and lines else "",
        "dockerd_cpu_s": round(d1 - d0, 2),
        "dockerd_cpu_s_per_M_lines": round((d1 - d0) / lines * 1e6, 1) if lines else "",
    })
    if f:
        n = len(samples)
        row.update({
            "rss_mib": round(sum(s[0] for s in samples) / n / 1024, 1),
            "pss_mib": round(sum(s[1] for s in samples) / n / 1024, 1),
            "fds": max(s[2] for s in samples),
            "threads": max(s[3] for s in samples),
        })
        f.stop()
        seqs.update()
        row["missing"], row["duplicates"] = seqs.check(names)
        err = f.stderr_tail()
        if err:
            log(f"{kind} stderr: {err[:400]}")
    log(f"measured {kind}: {json.dumps(row)}")
    return row


def stall(kind, a, names, root):
    """Stall one container's stream through the proxy; what does the follower do?"""
    target = names[0]
    _, body = api_get(a.sock, f"/containers/{target}/json")
    target_id = json.loads(body)["Id"]
    f = Follower(kind, a, os.path.join(root, kind, "stall"), a.proxy_sock, names)
    f.start()
    seqs = Seqs(f.outputs)
    seqs.watch = {target}
    wait_all_delivered(f, seqs, names, a.ready_timeout)
    time.sleep(2)
    m0 = f.metrics()
    reply = proxy_command(a.proxy_ctl, f"stall {target_id} {target}")
    t_stall = time.monotonic()
    time.sleep(1)  # bytes already in flight when the stall began
    seqs.update()
    settled = seqs.max_seq(target)
    recovered_at = None
    deadline = t_stall + a.stall
    while time.monotonic() < deadline:
        time.sleep(0.2)
        f.check_alive()
        seqs.update()
        if recovered_at is None and seqs.max_seq(target) > settled:
            recovered_at = min(t for (n, s), t in seqs.first_seen.items() if n == target and s > settled)
    status = proxy_command(a.proxy_ctl, "status")
    made = last_seq(a.sock, target)
    seqs.update()
    got = seqs.max_seq(target)
    m1 = f.metrics()
    alive = len(f.alive())
    # Then let the stalled connection flow again: does the follower catch up?
    released = proxy_command(a.proxy_ctl, f"release {target_id} {target}")
    time.sleep(a.release)
    f.check_alive()
    made_r = last_seq(a.sock, target)
    seqs.update()
    got_r = seqs.max_seq(target)
    stop_s = f.stop()
    seqs.update()
    s = seqs.seqs.get(target, [])
    gaps = (max(s) - min(s) + 1 - len(set(s))) if s else 0
    dups = len(s) - len(set(s))
    idle = ""
    if m1:
        key = 'log_capturer_stream_rotations_total{reason="idle"}'
        idle = m1.get(key, 0) - m0.get(key, 0)
    row = {
        "follower": kind,
        "stall_s": a.stall,
        "proxy_stall_reply": reply,
        "recovered_after_s": round(recovered_at - t_stall, 1) if recovered_at else "",
        "target_lines_produced_by_end": made,
        "target_max_seq_received": got,
        "target_lines_behind_at_end": made - got,
        "stalled_connections_open_at_end": status,
        "processes_alive_at_end": alive,
        "idle_rotations": idle,
        "proxy_release_reply": released,
        "release_s": a.release,
        "target_lines_behind_after_release": made_r - got_r,
        "target_gaps": gaps,
        "target_duplicates": dups,
        "stop_s": round(stop_s, 2),
        "stderr": f.stderr_tail().replace("\n", " | ")[:300],
    }
    log(f"stall {kind}: {json.dumps(row)}")
    return row


def proxy_command(path, line):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        return s.makefile("r").readline().strip()
    finally:
        s.close()


# --- containers ---------------------------------------------------------------------


def start_containers(a):
    names = [f"lcp-{i:02d}" for i in range(a.n)]
    per_tick = max(1, a.rate // 10)
    pad = "x" * 48
    for n in names:
        # per_tick lines every 100 ms: a.rate lines/s, less the loop's own time.
        script = (f'i=0; while :; do n=0; while [ $n -lt {per_tick} ]; do i=$((i+1)); n=$((n+1)); '
                  f'echo "c={n} seq=$i peers benchmark line {pad}"; done; usleep 100000; done')
        subprocess.run(["docker", "-H", f"unix://{a.sock}", "run", "-d", "--network", "none",
                        "--label", LABEL, "--name", n, "busybox:local", "sh", "-c", script],
                       check=True, stdout=subprocess.DEVNULL)
    return names


def remove_containers(a):
    ids = subprocess.run(["docker", "-H", f"unix://{a.sock}", "ps", "-aq", "--filter", f"label={LABEL}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "-H", f"unix://{a.sock}", "rm", "-f", *ids],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True, help="containers")
    ap.add_argument("--rate", type=int, default=100, help="lines/s per container")
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--ready-timeout", type=float, default=300,
                    help="seconds a follower may take until every container has delivered a line")
    ap.add_argument("--rounds", type=int, default=1, help="measure every follower this many times, interleaved")
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--stall", type=float, default=20, help="seconds to observe a stalled stream; 0 skips")
    ap.add_argument("--release", type=float, default=10, help="seconds to observe after the stall ends")
    ap.add_argument("--idle-timeout", default="5s", help="the agent's --idle-timeout")
    ap.add_argument("--followers", default="none,log-capturer,docker-logs,python-sdk")
    ap.add_argument("--sock", required=True, help="dockerd's unix socket")
    ap.add_argument("--dockerd-pid", type=int, required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--sdk-python", required=True)
    ap.add_argument("--work", required=True, help="scratch directory (follower outputs)")
    ap.add_argument("--results", required=True, help="directory for the CSV files")
    a = ap.parse_args()
    # SIGTERM (run.sh's trap) unwinds through the finally below, which stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(a.results, exist_ok=True)
    root = os.path.join(a.work, f"n{a.n}")
    a.proxy_sock = os.path.join(a.work, "proxy.sock")
    a.proxy_ctl = os.path.join(a.work, "proxy.ctl")
    kinds = a.followers.split(",")

    remove_containers(a)
    proxy = None
    try:
        log(f"starting {a.n} containers at {a.rate} lines/s each")
        names = start_containers(a)
        time.sleep(3)
        # Rounds interleave the followers, so a burst of other load on the machine
        # falls on all of them rather than on one.
        rows = []
        for r in range(1, a.rounds + 1):
            for k in kinds:
                row = measure(k, a, names, a.dockerd_pid, os.path.join(root, f"round{r}"))
                rows.append({"round": r, **row})
        for r in rows:
            r.update({"n": a.n, "rate_per_container": a.rate})
        write_csv(os.path.join(a.results, f"n{a.n}.csv"), rows)
        stalls = []
        if a.stall > 0:
            here = os.path.dirname(os.path.abspath(__file__))
            for p in (a.proxy_sock, a.proxy_ctl):  # an earlier run's socket files
                if os.path.exists(p):
                    os.unlink(p)
            proxy = subprocess.Popen([sys.executable, os.path.join(here, "stall_proxy.py"), "--listen",
                                      a.proxy_sock, "--upstream", a.sock, "--control", a.proxy_ctl])
            # The control socket is bound after the proxy listens: once it answers, both do.
            deadline = time.monotonic() + 20
            while True:
                try:
                    proxy_command(a.proxy_ctl, "status")
                    break
                except OSError:
                    if time.monotonic() > deadline or proxy.poll() is not None:
                        raise RuntimeError("stall_proxy.py did not start")
                    time.sleep(0.1)
            stalls = [stall(k, a, names, root) for k in kinds if k != "none"]
    finally:
        for f in RUNNING:
            f.stop()
        if proxy:
            proxy.terminate()
            proxy.wait(10)
        remove_containers(a)

    for r in stalls:
        r.update({"n": a.n, "rate_per_container": a.rate, "idle_timeout": a.idle_timeout})
    if stalls:
        write_csv(os.path.join(a.results, f"n{a.n}-stall.csv"), stalls)


def write_csv(path, rows):
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
