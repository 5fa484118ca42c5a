#!/usr/bin/env python3
"""Soak benchmark of log-capturer against a real dockerd.

N busybox containers log numbered lines at a steady rate (stdout, every
5th line on stderr) while the agent follows them with a short
--rotate-after. Once a second the script samples the agent's fds, RSS,
threads and CPU and dockerd's (and containerd's) CPU; every few seconds it
scrapes the agent's /metrics. At the end it stops the writers, waits until
the agent delivered each container's last line, checks every line number
per container and stream, writes a CSV, a PNG and summary.md, and prints a
verdict. Exit status: 0 pass, 1 verdict failed, 2 could not run.

Settings come from the environment (see benches/soak/README.md):
SOAK_MINUTES, SOAK_ROTATE, SOAK_CONTAINERS, SOAK_RATE, SOAK_PREFILL_MB,
SOAK_BASELINE_S, SOAK_BUCKET_S, SOAK_OUT, SOAK_KEEP, LC_DOCKER_DIR.

Python 3 standard library only.
"""
import concurrent.futures
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
AGENT = os.path.join(ROOT, "target", "release", "log-capturer")
HZ = os.sysconf("SC_CLK_TCK")
# The agent arms each stream's age deadline at rotate_after * (1 - 0.1 * U),
# U uniform in [0, 1) (src/agent/follow.rs, logs_head): mean 0.95 * rotate_after.
JITTER_MEAN = 0.95
STDERR_EVERY = 5
AGE_KEY = 'log_capturer_stream_rotations_total{reason="age"}'
IDLE_KEY = 'log_capturer_stream_rotations_total{reason="idle"}'
IMAGE = os.environ.get("LC_DOCKER_IMAGE", "busybox:local")


class SoakError(Exception):
    """Setup failed: the soak could not run (exit status 2)."""


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def parse_duration(s):
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", s.strip())
    if not s.strip() or not m or not any(m.groups()):
        raise SoakError(f"bad duration {s!r} (use e.g. 2s, 30s, 1m30s, 500ms)")
    h, mi, sec, ms = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0) + int(ms or 0) / 1000


def env_num(name, default, kind=float):
    v = os.environ.get(name, "")
    if v == "":
        return default
    try:
        return kind(v)
    except ValueError:
        raise SoakError(f"{name}={v!r} is not a number")


class Settings:
    def __init__(self):
        self.minutes = env_num("SOAK_MINUTES", 30.0)
        self.rotate_text = os.environ.get("SOAK_ROTATE") or "30s"
        self.rotate = parse_duration(self.rotate_text)
        self.containers = env_num("SOAK_CONTAINERS", 55, int)
        self.rate = env_num("SOAK_RATE", 10.0)
        self.prefill_mb = env_num("SOAK_PREFILL_MB", 0.0)
        short = self.minutes < 10
        self.baseline_s = env_num("SOAK_BASELINE_S", 20.0 if short else 60.0)
        self.bucket_s = env_num("SOAK_BUCKET_S", 30.0 if short else 300.0)
        self.scrape_every = env_num("SOAK_SCRAPE_S", 5.0)
        self.keep = os.environ.get("SOAK_KEEP", "") not in ("", "0")
        self.build = os.environ.get("SOAK_BUILD", "1") not in ("", "0")
        self.docker_dir = os.environ.get("LC_DOCKER_DIR") or "/tmp/log-capturer-docker"
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        default_out = os.path.join(ROOT, "target", "soak", self.run_id)
        self.out = os.path.abspath(os.environ.get("SOAK_OUT") or default_out)
        self.work = os.path.join(ROOT, "target", "soak", "work-" + self.run_id)
        self.duration = self.minutes * 60
        # Warm-up: the first 20 % of the window, at least a minute and two rotation
        # periods. The allocator keeps the high-water mark of the output and read
        # buffers, which rises until they have seen the run's largest burst: in the
        # first 30-minute run RSS rose 5 % over the first 340 s, then 0.17 % in the
        # remaining 1460 s, so a one-minute warm-up measured settling, not growth.
        self.warmup = max(60.0, 2 * self.rotate, 0.2 * self.duration)
        if self.containers < 1 or self.rate <= 0 or self.duration < 60 or self.rotate <= 0:
            raise SoakError("need SOAK_CONTAINERS >= 1, SOAK_RATE > 0, SOAK_MINUTES >= 1, SOAK_ROTATE > 0")
        if self.rate > 1000:
            raise SoakError("SOAK_RATE above 1000 lines/s per container is not steady with busybox usleep")


# --- processes and /proc ------------------------------------------------------


def run(cmd, check=True, timeout=120, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise SoakError(f"`{' '.join(cmd[:4])} ...` did not finish within {timeout} s")
    if check and p.returncode != 0:
        raise SoakError(f"`{' '.join(cmd[:6])}` failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return p


def cpu_s(pid):
    """utime + stime of a process in seconds, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return None


def status_fields(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def settled_fd_count(pid, reads=10, gap=0.05):
    """(settled, raw): the fewest fds over `reads` reads `gap` s apart, and the first read.

    A single read sometimes lands on a reopen, a checkpoint file or an API
    call in flight (at 27 rotations/s often; with a loaded machine a reopen's
    response head can take 100 ms and more); a leaked fd stays open and is in
    every read, so the minimum over half a second counts leaks and not those."""
    raw = fd_count(pid)
    counts = [raw]
    for _ in range(reads - 1):
        time.sleep(gap)
        counts.append(fd_count(pid))
    counts = [c for c in counts if c is not None]
    return (min(counts) if counts else None), raw


def log_file_fds(pid):
    """(all fds, fds open on a json-file log): dockerd holds one log fd per log reader."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None, None
    logs = 0
    for n in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{n}").endswith("-json.log"):
                logs += 1
        except OSError:
            pass
    return len(names), logs


def find_pid(comm, needle):
    """A live process named `comm` whose command line mentions `needle`."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    return int(d)
        except OSError:
            continue
    return None


# --- docker --------------------------------------------------------------------


def docker_ping(sock):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        return data.endswith(b"OK")
    except OSError:
        return False


def docker(*args, check=True, timeout=120):
    return run(["docker", *args], check=check, timeout=timeout)


WRITER = r"""
stop=0
trap 'stop=1' USR1
if [ "$FILL_LINES" -gt 0 ]; then
  yes "fill $FILL_TEXT" | head -n "$FILL_LINES"
fi
n=0
while [ $stop = 0 ]; do
  n=$((n+1))
  if [ $((n % STDERR_EVERY)) = 0 ]; then echo "soak err $n" >&2; else echo "soak out $n"; fi
  usleep "$PAUSE_US"
done
echo "soak end $n"
exec sleep 2147483647
"""
# Fill lines are long so that 55 x 50 MB takes dockerd minutes, not an hour,
# to write (its cost is mostly per line). A json-file entry holds the line
# (1006 B with "fill " and its newline, "\n" escaped as 2 bytes) plus
# {"log":"","stream":"stdout","time":"2026-11-27T23:45:12.123456789Z"}\n (70 B).
FILL_TEXT = ("0123456789" * 100)
FILL_ENTRY_BYTES = 1077


# --- the agent's metrics -------------------------------------------------------


def scrape(addr, timeout=3.0):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def dechunk(b):
    out = b""
    while b:
        size_line, _, rest = b.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        b = rest[size + 2 :]
    return out


def msum(m, prefix):
    """Sum of every sample whose name (with labels) starts with `prefix`."""
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


# --- reading the agent's output ------------------------------------------------


class Tally:
    """Every line number the agent delivered, per container and stream."""

    def __init__(self, names):
        self.names = set(names)
        # (name, stream) -> bytearray of delivery counts (saturating at 255)
        self.seen = {}
        self.end = {}  # name -> last number, from the "soak end N" line
        self.fill = 0
        self.foreign = 0
        self.unparsed = 0
        self.records = 0
        self.pos = 0
        self.partial = b""

    def mark(self, key, n):
        arr = self.seen.get(key)
        if arr is None:
            arr = self.seen[key] = bytearray(4096)
        if n >= len(arr):
            arr.extend(bytes(max(n + 1 - len(arr), len(arr))))
        if arr[n] < 255:
            arr[n] += 1

    def feed(self, path):
        try:
            with open(path, "rb") as f:
                f.seek(self.pos)
                data = f.read(64 << 20)
        except FileNotFoundError:
            return
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self.record(raw)

    def record(self, raw):
        self.records += 1
        try:
            r = json.loads(raw)
            name, stream, msg = r["container_name"], r["stream"], r["message"]
        except (ValueError, KeyError, TypeError):
            self.unparsed += 1
            return
        if name not in self.names:
            self.foreign += 1
            return
        parts = msg.split()
        if len(parts) == 3 and parts[0] == "soak" and parts[2].isdigit():
            n = int(parts[2])
            if parts[1] == "end":
                self.end[name] = n
                return
            want = "stderr" if parts[1] == "err" else "stdout"
            if stream != want or (n % STDERR_EVERY == 0) != (want == "stderr"):
                self.unparsed += 1
                return
            self.mark((name, stream), n)
        elif msg.startswith("fill "):
            self.fill += 1
        else:
            self.unparsed += 1

    def check(self, truth, skip_before):
        """Lost and duplicated numbers per container and stream.

        truth: name -> last number written. skip_before: name -> first
        number the agent was expected to deliver."""
        lost = dup = 0
        details = []
        for name in sorted(self.names):
            last, first = truth.get(name), skip_before.get(name, 1)
            if last is None:
                details.append(f"{name}: no ground truth (container's last line unknown)")
                continue
            for stream in ("stdout", "stderr"):
                arr = self.seen.get((name, stream), bytearray())
                want = [n for n in range(first, last + 1) if (n % STDERR_EVERY == 0) == (stream == "stderr")]
                missing = [n for n in want if n >= len(arr) or arr[n] == 0]
                twice = [n for n in want if n < len(arr) and arr[n] > 1]
                beyond = sum(1 for n in range(last + 1, len(arr)) if arr[n])
                lost += len(missing)
                dup += sum(arr[n] - 1 for n in twice)
                if missing or twice or beyond:
                    details.append(
                        f"{name} {stream}: {len(missing)} lost (first {missing[:5]}), "
                        f"{len(twice)} duplicated (first {twice[:5]}), {beyond} beyond the last line"
                    )
                    lost += beyond
        return lost, dup, details

    def first_seen(self, name):
        lo = None
        for stream in ("stdout", "stderr"):
            arr = self.seen.get((name, stream))
            if arr:
                i = next((i for i, c in enumerate(arr) if c), None)
                if i is not None and (lo is None or i < lo):
                    lo = i
        return lo


# --- the soak ------------------------------------------------------------------


class Soak:
    def __init__(self, st):
        self.st = st
        self.started_dockerd = False
        self.agent = None
        self.agent_err = None
        self.label = f"lc-soak={st.run_id}"
        self.names = [f"lcsoak-{st.run_id}-{i:02d}" for i in range(st.containers)]
        self.rows = []
        self.events = {}  # name -> elapsed seconds

    # setup ---------------------------------------------------------------

    def ensure_dockerd(self):
        st = self.st
        sock = os.path.join(st.docker_dir, "docker.sock")
        os.environ["DOCKER_HOST"] = "unix://" + sock
        if not docker_ping(sock):
            log(f"no dockerd answers at {sock}; starting one with tests/docker/up.sh")
            env = dict(os.environ, LC_DOCKER_DIR=st.docker_dir)
            p = subprocess.run(
                [os.path.join(ROOT, "tests", "docker", "up.sh")],
                env=env, stdout=subprocess.PIPE, text=True, timeout=900,
            )
            self.started_dockerd = True
            if p.returncode != 0:
                raise SoakError("tests/docker/up.sh failed (its messages are above)")
        else:
            docker("image", "inspect", IMAGE)  # up.sh imports it; a foreign daemon may lack it
        try:
            with open(os.path.join(st.docker_dir, "docker.pid")) as f:
                self.dockerd = int(f.read().strip())
        except (OSError, ValueError):
            raise SoakError(f"no readable {st.docker_dir}/docker.pid: is this dockerd from tests/docker/up.sh?")
        self.containerd = find_pid("containerd", st.docker_dir + "/")
        self.dockerd_version = docker("version", "-f", "{{.Server.Version}}").stdout.strip()
        log(f"dockerd {self.dockerd_version} pid {self.dockerd}, containerd pid {self.containerd}")

    def build(self):
        if self.st.build:
            log("cargo build --release --bin log-capturer")
            p = subprocess.run(
                ["cargo", "build", "--locked", "--release", "--bin", "log-capturer"], cwd=ROOT, timeout=1800
            )
            if p.returncode != 0:
                raise SoakError("cargo build failed")
        if not os.access(AGENT, os.X_OK):
            raise SoakError(f"{AGENT} missing; run `cargo build --release --bin log-capturer`")

    def start_containers(self):
        st = self.st
        fill_lines = int(st.prefill_mb * 1e6 / FILL_ENTRY_BYTES) if st.prefill_mb > 0 else 0
        pause_us = int(1e6 / st.rate)
        log(f"starting {st.containers} containers, {st.rate:g} lines/s each"
            + (f", each first writing {fill_lines} fill lines (~{st.prefill_mb:g} MB)" if fill_lines else ""))

        def one(name):
            docker(
                "run", "-d", "--network", "none", "--label", self.label, "--name", name,
                "-e", f"FILL_LINES={fill_lines}", "-e", f"PAUSE_US={pause_us}",
                "-e", f"STDERR_EVERY={STDERR_EVERY}", "-e", f"FILL_TEXT={FILL_TEXT}",
                IMAGE, "sh", "-c", WRITER,
            )

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(one, self.names))
        self.containers_started = time.monotonic()
        if fill_lines:
            target = int(st.prefill_mb * 1e6 * 0.98)
            paths = {n: docker("inspect", "-f", "{{.LogPath}}", n).stdout.strip() for n in self.names}
            deadline = time.monotonic() + max(600, 20 * st.prefill_mb * st.containers / 50)
            log(f"waiting until every json-file holds {target / 1e6:.0f} MB")
            while True:
                small = [n for n, p in paths.items() if os.path.getsize(p) < target]
                if not small:
                    break
                if time.monotonic() > deadline:
                    raise SoakError(f"{len(small)} json-files still below {target} bytes after the deadline")
                time.sleep(2)
            self.prefill_sizes = {n: os.path.getsize(p) for n, p in paths.items()}
            log(f"json-files: {min(self.prefill_sizes.values()) / 1e6:.1f}-{max(self.prefill_sizes.values()) / 1e6:.1f} MB")

    def start_agent(self):
        st = self.st
        os.makedirs(self.st.work, exist_ok=True)
        self.output = os.path.join(st.work, "out.jsonl")
        self.agent_err = open(os.path.join(st.work, "agent.stderr"), "w+")
        cmd = [
            AGENT,
            "--docker-host", os.environ["DOCKER_HOST"],
            "--output", self.output,
            "--state-dir", os.path.join(st.work, "state"),
            "--metrics-addr", "127.0.0.1:0",
            "--rotate-after", st.rotate_text,
            "--include-label", self.label,
        ]
        # The plain run ships everything from line 1 (the strictest check);
        # the prefilled run starts from now, as a fresh agent on a busy host would.
        if st.prefill_mb <= 0:
            cmd.append("--from-beginning")
        self.agent_cmd = cmd
        log("agent: " + " ".join(cmd))
        self.agent = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.agent_err)
        deadline = time.monotonic() + 20
        while True:
            self.agent_err.seek(0)
            m = re.search(r"metrics on http://([^/\s]+)/", self.agent_err.read())
            if m:
                self.metrics_addr = m.group(1)
                return
            if self.agent.poll() is not None or time.monotonic() > deadline:
                self.agent_err.seek(0)
                raise SoakError("agent did not start: " + self.agent_err.read()[-2000:])
            time.sleep(0.1)

    # sampling ------------------------------------------------------------

    def proc_sample(self, t0):
        a = self.agent.pid
        if self.agent.poll() is not None:
            raise SoakError(f"the agent exited with status {self.agent.returncode} during the soak")
        s = status_fields(a)
        elapsed = round(time.monotonic() - t0, 3)
        fds, fds_raw = settled_fd_count(a)
        dfds, dlogs = log_file_fds(self.dockerd)
        return {
            "elapsed_s": elapsed,
            "phase": self.phase,
            "agent_fds": fds,
            "agent_fds_raw": fds_raw,
            "agent_rss_kib": s.get("VmRSS"),
            "agent_threads": s.get("Threads"),
            "agent_cpu_s": cpu_s(a),
            "dockerd_cpu_s": cpu_s(self.dockerd),
            "dockerd_fds": dfds,
            "dockerd_log_fds": dlogs,
            "containerd_cpu_s": cpu_s(self.containerd) if self.containerd else None,
        }

    def metric_fields(self, m):
        m = m or {}
        return {
            "rotations_age": m.get('log_capturer_stream_rotations_total{reason="age"}'),
            "rotations_idle": m.get('log_capturer_stream_rotations_total{reason="idle"}'),
            "reconnects": msum(m, "log_capturer_stream_reconnects_total") if m else None,
            "active_streams": m.get("log_capturer_active_streams"),
            "containers_followed": m.get("log_capturer_containers_followed"),
            "lines": msum(m, "log_capturer_lines_total") if m else None,
            "duplicates_dropped": m.get("log_capturer_duplicates_dropped_total"),
            "delivered_checked": self.tally.records,
        }

    def loop(self, t0, until, stop_when=None):
        """Sample once a second until `until` (monotonic) or stop_when() is true."""
        next_tick = time.monotonic()
        last_scrape = -1e9
        metrics = self.last_metrics
        while True:
            now = time.monotonic()
            if now >= until or (stop_when and stop_when()):
                return
            # /proc first: the scrape's own connection must not show in the fd count.
            row = self.proc_sample(t0)
            if now - last_scrape >= self.st.scrape_every:
                metrics = scrape(self.metrics_addr) or metrics
                last_scrape = now
                self.last_metrics = metrics
            row.update(self.metric_fields(metrics))
            self.rows.append(row)
            self.tally.feed(self.output)
            next_tick += 1.0
            time.sleep(max(0.0, min(next_tick, until) - time.monotonic()))

    def snapshot(self, what):
        """Metrics at a boundary of the measurement window, scraped right now."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = scrape(self.metrics_addr)
            if m:
                return m
            time.sleep(0.2)
        raise SoakError(f"the agent's /metrics did not answer at {what}")

    # the run ------------------------------------------------------------

    def run(self):
        st = self.st
        os.makedirs(st.out, exist_ok=True)
        self.ensure_dockerd()
        self.build()
        self.tally = Tally(self.names)
        self.last_metrics = None
        self.start_containers()
        # Baseline: dockerd's CPU for writing the logs, without the agent.
        log(f"baseline: {st.baseline_s:g} s of dockerd CPU without the agent")
        # Let the containers' start (and the last 2 % of a prefill burst) settle first.
        time.sleep(5 if st.prefill_mb > 0 else 2)
        b0, bt0 = cpu_s(self.dockerd), time.monotonic()
        time.sleep(st.baseline_s)
        b1, bt1 = cpu_s(self.dockerd), time.monotonic()
        self.baseline_rate = (b1 - b0) / (bt1 - bt0)
        log(f"baseline: dockerd {self.baseline_rate * 1000:.1f} ms CPU per s")

        self.start_agent()
        t_agent = time.monotonic()
        self.phase = "startup"
        n = st.containers

        def all_followed():
            m = self.last_metrics or {}
            return m.get("log_capturer_active_streams") == n and m.get("log_capturer_containers_followed") == n

        self.loop(t_agent, t_agent + 60, all_followed)
        if not all_followed():
            raise SoakError(f"the agent did not follow all {n} containers within 60 s: {self.last_metrics}")
        m0 = self.snapshot("the start")
        t0 = time.monotonic()
        self.t0_elapsed = t0 - t_agent
        log(f"agent follows all {n} containers after {self.t0_elapsed:.1f} s; soaking {st.minutes:g} min")
        self.phase = "soak"
        self.loop(t_agent, t0 + st.duration)
        m1 = self.snapshot("the end")
        t1 = time.monotonic()
        self.t1_elapsed = t1 - t_agent

        # Stop the writers; the ground truth is each container's own last line.
        self.phase = "drain"
        log("stopping the writers")
        self.writers_ran_s = time.monotonic() - self.containers_started
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda c: docker("kill", "-s", "USR1", c), self.names))
        truth = {}
        deadline = time.monotonic() + 30
        while len(truth) < n and time.monotonic() < deadline:
            for c in self.names:
                if c not in truth:
                    out = docker("logs", "--tail", "1", c, check=False).stdout.split()
                    if len(out) == 3 and out[:2] == ["soak", "end"]:
                        truth[c] = int(out[2])
            time.sleep(0.5)
        if len(truth) < n:
            raise SoakError(f"{n - len(truth)} containers did not write their last line within 30 s")
        drain_s = 30 + 2 * st.rotate
        self.loop(t_agent, time.monotonic() + drain_s, lambda: len(self.tally.end) >= n)
        self.tally.feed(self.output)
        self.drained = len(self.tally.end) >= n
        self.m_end = self.snapshot("the drain")
        self.rows.append({**self.proc_sample(t_agent), **self.metric_fields(self.m_end)})
        self.stop_agent()
        self.tally.feed(self.output)

        skip = {}
        if st.prefill_mb > 0:
            # From now: the first delivered number is where the agent started;
            # skip one more second so the boundary (stdout and stderr are copied
            # by separate goroutines) cannot count as a loss.
            for c in self.names:
                lo = self.tally.first_seen(c)
                skip[c] = (lo + int(st.rate)) if lo is not None else 1
        lost, dup, details = self.tally.check(truth, skip)
        self.truth = truth
        return self.verdict(m0, m1, lost, dup, details)

    def stop_agent(self):
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                log("agent did not exit within 10 s of SIGTERM; killing it")
                self.agent.kill()
                self.agent.wait(5)
        self.agent_status = self.agent.returncode if self.agent else None

    # the verdict ----------------------------------------------------------

    def window(self, lo, hi, col):
        return [r[col] for r in self.rows if lo <= r["elapsed_s"] <= hi and r[col] is not None]

    def verdict(self, m0, m1, lost, dup, details):
        st = self.st
        t0, t1 = self.t0_elapsed, self.t1_elapsed
        n = st.containers
        res = []

        def crit(name, value, threshold, ok, how):
            res.append((name, value, threshold, ok, how))

        first = self.window(t0, t0 + 60, "agent_fds")
        last = self.window(t1 - 60, t1, "agent_fds")
        fd_growth = max(last) - max(first)
        raw_first = self.window(t0, t0 + 60, "agent_fds_raw")
        raw_last = self.window(t1 - 60, t1, "agent_fds_raw")
        crit("fd growth", f"{fd_growth:+d} (first-minute max {max(first)}, last-minute max {max(last)}; "
             f"single reads: {max(raw_first)} -> {max(raw_last)}, {min(raw_first + raw_last)}-"
             f"{max(raw_first + raw_last)})",
             "0", fd_growth <= 0,
             "max fds over the last 60 s minus max over the first 60 s of the soak window; each 1 Hz sample "
             "is the fewest of 10 reads of /proc/<agent>/fd over 450 ms (a leak is in every read, "
             "a reopen, checkpoint or API call in flight is not)")

        threads = [r["agent_threads"] for r in self.rows if r["agent_threads"] is not None]
        crit("threads", f"min {min(threads)}, max {max(threads)} over {len(threads)} samples", "exactly 1",
             min(threads) == 1 and max(threads) == 1, "Threads in /proc/<agent>/status, every sample")

        w0 = t0 + st.warmup
        ref = self.window(w0, w0 + 60, "agent_rss_kib")
        end = self.window(t1 - 60, t1, "agent_rss_kib")
        ref_mean, end_mean = sum(ref) / len(ref), sum(end) / len(end)
        rss_growth = (end_mean - ref_mean) / ref_mean * 100
        rss_growth_max = (max(end) - max(ref)) / max(ref) * 100
        early = self.window(t0 + 60, t0 + 120, "agent_rss_kib")
        early_growth = (end_mean - sum(early) / len(early)) / (sum(early) / len(early)) * 100
        crit("RSS growth", f"{rss_growth:+.2f} % ({ref_mean:.0f} -> {end_mean:.0f} KiB; by max {rss_growth_max:+.2f} %; "
             f"from the second minute {early_growth:+.2f} %)",
             "< 1 %", rss_growth < 1.0,
             f"mean VmRSS of the last 60 s vs the 60 s after warm-up (the first {st.warmup:g} s of the soak window)")

        key = 'log_capturer_stream_rotations_total{reason="age"}'
        rot = m1.get(key, 0) - m0.get(key, 0)
        window = t1 - t0
        period = JITTER_MEAN * st.rotate
        expected = n * window / period
        # Each stream's count over a window differs from window/period by less than one rotation
        # at each end of the window (where in its period the stream is at t0 and at t1).
        bound = 100 * n / expected
        dev = (rot - expected) / expected * 100
        crit("rotations", f"{rot:.0f} vs {expected:.0f} expected ({dev:+.2f} %)", "within 2 %", abs(dev) <= 2.0,
             f"age rotations between the scrapes at t0 and t1 ({window:.0f} s) vs {n} streams x window / "
             f"{period:.2f} s (mean age deadline = {JITTER_MEAN} x --rotate-after); boundary error up to "
             f"+-{n} rotations (+-{bound:.1f} %), and each reopen's own latency adds to the period")

        crit("lines lost", str(lost), "0", lost == 0 and self.drained,
             "line numbers missing per container and stream, up to each container's last line (docker logs --tail 1)"
             + ("" if self.drained else "; NOT all last lines were delivered within the drain deadline"))
        crit("lines duplicated", str(dup), "0", dup == 0, "line numbers delivered more than once")

        self.results = res
        self.details = details
        self.m0, self.m1 = m0, m1
        return all(ok for *_, ok, _ in res)

    # reports --------------------------------------------------------------

    def buckets(self):
        """dockerd CPU per rotation in time buckets of the soak window."""
        st = self.st
        rows = [r for r in self.rows if r["phase"] == "soak" or abs(r["elapsed_s"] - self.t1_elapsed) < 1.5]
        out = []
        t = self.t0_elapsed
        while t + st.bucket_s / 2 <= self.t1_elapsed:
            hi = min(t + st.bucket_s, self.t1_elapsed)
            seg = [r for r in rows if t <= r["elapsed_s"] <= hi + 0.5 and r["rotations_age"] is not None]
            if len(seg) >= 2:
                a, b = seg[0], seg[-1]
                dt = b["elapsed_s"] - a["elapsed_s"]
                d_cpu = b["dockerd_cpu_s"] - a["dockerd_cpu_s"]
                d_rot = b["rotations_age"] - a["rotations_age"]
                extra = d_cpu / dt - self.baseline_rate
                out.append((a["elapsed_s"], b["elapsed_s"], d_cpu / dt * 1000, d_rot,
                            extra * dt / d_rot * 1000 if d_rot else float("nan"),
                            d_cpu / d_rot * 1000 if d_rot else float("nan")))
            t = hi
        return out

    def write_csv(self):
        csv_path = os.path.join(self.st.out, "soak.csv")
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0].keys()))
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return csv_path

    def write(self, ok):
        st = self.st
        csv_path = self.write_csv()
        png = os.path.join(st.out, "soak.png")
        title = (f"soak: {st.containers} containers, rotate {st.rotate_text}, {st.minutes:g} min"
                 + (f", {st.prefill_mb:g} MB prefilled" if st.prefill_mb > 0 else ""))
        try:
            p = subprocess.run(
                [sys.executable, os.path.join(ROOT, "benches", "plot.py"), csv_path, png,
                 "--x", "elapsed_s", "--y", "agent_fds", "--y2", "agent_rss_kib", "--title", title,
                 "--xlabel", "seconds since the agent started", "--ylabel", "open fds", "--y2label", "RSS (KiB)"],
                capture_output=True, text=True, timeout=600,
            )
            plot_note = "soak.png" if p.returncode == 0 else f"PLOT FAILED (verdict unaffected): {p.stderr.strip()[-300:]}"
        except (OSError, subprocess.TimeoutExpired) as e:
            plot_note = f"PLOT FAILED (verdict unaffected): {e}"

        agent_cpu = self.rows[-1]["agent_cpu_s"]
        lines = [
            f"# Soak: {'PASS' if ok else 'FAIL'}",
            "",
            f"- command: `{self.command}`",
            f"- run {st.run_id}; dockerd {self.dockerd_version}; {os.cpu_count()} CPUs; "
            f"agent `{' '.join(os.path.relpath(a, ROOT) if a == AGENT else a for a in self.agent_cmd[:1])} "
            f"{' '.join(self.agent_cmd[1:])}`",
            f"- {st.containers} containers x {st.rate:g} lines/s (every {STDERR_EVERY}th on stderr), "
            f"--rotate-after {st.rotate_text}, soak window {self.t1_elapsed - self.t0_elapsed:.0f} s "
            f"(from t0 = {self.t0_elapsed:.1f} s after the agent started, when it followed every container)"
            + (f"; json-files prefilled to {min(self.prefill_sizes.values()) / 1e6:.1f}-"
               f"{max(self.prefill_sizes.values()) / 1e6:.1f} MB, agent started without --from-beginning"
               if st.prefill_mb > 0 else "; agent started with --from-beginning after the baseline"),
            f"- lines written: {sum(self.truth.values())} numbered lines in the {self.writers_ran_s:.0f} s since the containers started (prefill included), "
            f"{sum(self.truth.values()) / st.containers / self.writers_ran_s:.2f} lines/s per container "
            f"(busybox usleep plus the loop; the ground truth is each writer's own count)",
            f"- delivered records checked: {self.tally.records} ({self.tally.fill} fill lines, "
            f"{self.tally.foreign} from other containers, {self.tally.unparsed} unrecognised); "
            f"agent exit status after SIGTERM: {self.agent_status}",
            "",
            "| criterion | measured | threshold | verdict | how |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, value, thr, good, how in self.results:
            lines.append(f"| {name} | {value} | {thr} | {'PASS' if good else 'FAIL'} | {how} |")
        lines.append("")
        for d in self.details[:40]:
            lines.append(f"- {d}")
        m = self.m_end
        rec = {k: v for k, v in m.items() if k.startswith("log_capturer_stream_reconnects_total") and v}
        age_sum = m.get("log_capturer_stream_age_seconds_sum")
        age_cnt = m.get("log_capturer_stream_age_seconds_count")
        soak_rows = [r for r in self.rows if r["phase"] == "soak"]
        a0, a1 = soak_rows[0], soak_rows[-1]
        dt = a1["elapsed_s"] - a0["elapsed_s"]
        lines += [
            "",
            "Other figures (from the end-of-run scrape and the samples):",
            "",
            f"- reconnects (unplanned reopens): {rec or 'none'}; idle rotations "
            f"{m.get(IDLE_KEY, 0):.0f}; "
            f"duplicates dropped {m.get('log_capturer_duplicates_dropped_total', 0):.0f}; "
            f"docker errors {msum(m, 'log_capturer_docker_errors_total'):.0f}",
            f"- mean stream age at rotation: "
            + (f"{age_sum / age_cnt:.3f} s" if age_cnt else "n/a")
            + f" (--rotate-after {st.rotate:g} s; the age deadline is drawn from [0.9, 1.0] x --rotate-after)",
            f"- CPU over the soak window: agent {(a1['agent_cpu_s'] - a0['agent_cpu_s']) / dt * 100:.1f} %, "
            f"dockerd {(a1['dockerd_cpu_s'] - a0['dockerd_cpu_s']) / dt * 100:.1f} %"
            + (f", containerd {(a1['containerd_cpu_s'] - a0['containerd_cpu_s']) / dt * 100:.1f} %"
               if a0["containerd_cpu_s"] is not None else "")
            + f" of one core; agent total {agent_cpu:.1f} s",
            f"- dockerd fds: {a0['dockerd_fds']} -> {a1['dockerd_fds']}, of which open on json-file logs "
            f"{a0['dockerd_log_fds']} -> {a1['dockerd_log_fds']} (one per container held by its log writer, one per open log reader; {st.containers} "
            "streams are open at any time)",
            f"- dockerd baseline (containers writing, no agent, {st.baseline_s:g} s): "
            f"{self.baseline_rate * 1000:.1f} ms CPU per s",
            f"- plot: {plot_note}",
            "",
            f"dockerd CPU per rotation, {st.bucket_s:g} s buckets of the soak window. `extra` subtracts the "
            "baseline (dockerd writing the logs without the agent), so it is dockerd's cost of following "
            "plus reopening, per rotation; `all` divides all of dockerd's CPU by the rotations.",
            "",
            "| bucket (s since agent start) | dockerd CPU (ms/s) | rotations | extra ms / rotation | all ms / rotation |",
            "| --- | --- | --- | --- | --- |",
        ]
        for lo, hi, rate, rot, extra, allr in self.buckets():
            lines.append(f"| {lo:.0f}-{hi:.0f} | {rate:.1f} | {rot:.0f} | {extra:.2f} | {allr:.2f} |")
        text = "\n".join(lines) + "\n"
        with open(os.path.join(st.out, "summary.md"), "w") as f:
            f.write(text)
        return text

    # cleanup -------------------------------------------------------------

    def cleanup(self):
        try:
            self.stop_agent()
        except Exception as e:  # cleanup must go on
            log(f"cleanup: stopping the agent: {e}")
        if self.agent_err:
            self.agent_err.close()
        try:
            ids = docker("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
            if ids:
                log(f"removing {len(ids)} containers")
                docker("rm", "-f", *ids, check=False, timeout=300)
        except SoakError as e:
            log(f"cleanup: {e}")
        if not self.st.keep:
            shutil.rmtree(self.st.work, ignore_errors=True)
        else:
            log(f"kept the agent's output and state in {self.st.work}")
        if self.started_dockerd:
            log("stopping the dockerd this run started")
            env = dict(os.environ, LC_DOCKER_DIR=self.st.docker_dir)
            subprocess.run([os.path.join(ROOT, "tests", "docker", "down.sh")], env=env, timeout=300)


def main():
    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        st = Settings()
    except SoakError as e:
        log(str(e))
        return 2
    soak = Soak(st)
    soak.command = os.environ.get("SOAK_COMMAND") or " ".join(
        [f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("SOAK_") or k == "LC_DOCKER_DIR"]
        + ["benches/soak/soak.py"]
    )
    try:
        ok = soak.run()
        text = soak.write(ok)
        print(text)
        log(f"results in {st.out}")
        return 0 if ok else 1
    except SoakError as e:
        log(f"FAILED to run: {e}")
        if soak.rows:
            log(f"the samples so far are in {soak.write_csv()}")
        return 2
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        if soak.rows:
            log(f"the samples so far are in {soak.write_csv()}")
        return 2
    finally:
        # A second signal during cleanup must not leave containers behind.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())
