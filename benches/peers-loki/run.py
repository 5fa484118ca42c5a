#!/usr/bin/env python3
"""log-capturer and Grafana Promtail side by side: the same real containers
(private dockerd), the same real Loki 2.9.9, then what each got into Loki.

    make peers-loki                                  # 20 containers, 65 lines/s, 180 s
    PEERS_LOKI_N=5 PEERS_LOKI_SECS=60 benches/peers-loki/run.py

Loki and Promtail are AGPL and not in the repository: LC_LOKI_DIR (else
../shared/loki, else /work/shared/loki) must hold loki-2.9.9.xz,
promtail-2.9.9.xz, loki-local.yaml and promtail-docker.yaml; without them
this prints SKIPPED and exits 0. Loki runs with schema v13 and structured
metadata allowed (its config derived at run time from loki-local.yaml), so
the agent's container_id/image are stored as it sends them.

Settings: PEERS_LOKI_N (containers, 20), PEERS_LOKI_RATE (lines/s each, 65),
PEERS_LOKI_SECS (seconds of writing, 180), PEERS_LOKI_LINE (bytes of padding
per line, 80). The dockerd is $DOCKER_HOST (unix://) if it answers, else the
private one of tests/docker/up.sh under $LC_DOCKER_DIR (default
/tmp/lc-peers-loki-docker), started and stopped again by this script. The
agent is target/release/log-capturer (build it first: make peers-loki does).
Results: a table on stdout and target/peers-loki/results.json.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = int(os.environ.get("PEERS_LOKI_N", "20"))
RATE = int(os.environ.get("PEERS_LOKI_RATE", "65"))
SECS = int(os.environ.get("PEERS_LOKI_SECS", "180"))
PAD = int(os.environ.get("PEERS_LOKI_LINE", "80"))
TOTAL = RATE * SECS
LABEL = "lc.peers-loki"
NEEDED = ["loki-2.9.9.xz", "promtail-2.9.9.xz", "loki-local.yaml", "promtail-docker.yaml"]


def say(msg):
    print(f"peers-loki: {msg}", file=sys.stderr, flush=True)


def loki_dir():
    cands = [os.environ.get("LC_LOKI_DIR"), os.path.join(ROOT, "..", "shared", "loki"), "/work/shared/loki"]
    for d in cands:
        if d and all(os.path.isfile(os.path.join(d, f)) for f in NEEDED):
            return os.path.abspath(d)
    return None


def unpack(d, name):
    """target/real-loki/NAME from NAME.xz, once (written aside, then renamed)."""
    out = os.path.join(ROOT, "target", "real-loki")
    os.makedirs(out, exist_ok=True)
    dst = os.path.join(out, name)
    src = os.path.join(d, name + ".xz")
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        return dst
    tmp = f"{dst}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        subprocess.run(["xz", "-dc", src], stdout=f, check=True)
    os.chmod(tmp, 0o755)
    os.rename(tmp, dst)
    return dst


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=60):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait(what, cond, timeout, every=0.5):
    t = time.time()
    while time.time() - t < timeout:
        if cond():
            return time.time() - t
        time.sleep(every)
    raise SystemExit(f"peers-loki: {what} not within {timeout} s")


def ping(sock):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        data = s.recv(4096)
        s.close()
        return b" 200 " in data
    except OSError:
        return False


def docker_env():
    """(DOCKER_HOST, started_dir or None)."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://") and ping(host[len("unix://"):]):
        return host, None
    d = os.environ.get("LC_DOCKER_DIR", "/tmp/lc-peers-loki-docker")
    env = dict(os.environ, LC_DOCKER_DIR=d)
    out = subprocess.run([os.path.join(ROOT, "tests/docker/up.sh")], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    host = out.strip().split("DOCKER_HOST=", 1)[1].strip()
    return host, d


def proc(pid):
    """(cpu seconds, rss MiB, peak rss MiB, threads) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(st[11]) + int(st[12])) / tick
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    kib = lambda k: int(fields.get(k, "0 kB").split()[0]) / 1024
    return cpu, kib("VmRSS"), kib("VmHWM"), int(fields.get("Threads", "0"))


def script(name):
    """NAME's numbered lines 1..TOTAL at RATE/s (in bursts paced by
    /proc/uptime), every fifth on stderr; then it sleeps, so
    that Promtail, which follows only running containers, keeps following."""
    # burst lines every `every` centiseconds is RATE/s exactly (65: 13
    # lines every 0.2 s).
    g = math.gcd(RATE, 100)
    burst, every = RATE // g, 100 // g
    pad = "x" * PAD
    return (
        "trap 'exit 0' TERM; i=0; read up x < /proc/uptime; t=${up%.*}${up#*.}; "
        f"while [ $i -lt {TOTAL} ]; do j=0; "
        f"while [ $j -lt {burst} ] && [ $i -lt {TOTAL} ]; do i=$((i+1)); j=$((j+1)); "
        f"if [ $((i % 5)) -eq 0 ]; then echo \"{name} $i {pad}\" >&2; else echo \"{name} $i {pad}\"; fi; done; "
        f"t=$((t + {every})); read up x < /proc/uptime; now=${{up%.*}}${{up#*.}}; "
        "if [ $t -gt $now ]; then usleep $(((t - now) * 10000)); else t=$now; fi; done; "
        "while true; do sleep 1; done"
    )


class Loki:
    def __init__(self, bin_, config, work):
        self.http, self.grpc = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http}"
        data = os.path.join(work, "loki-data")
        os.makedirs(data)
        self.log = open(os.path.join(work, "loki.log"), "w")
        env = dict(os.environ, LOKI_HTTP_PORT=str(self.http), LOKI_GRPC_PORT=str(self.grpc), LOKI_DATA_DIR=data)
        self.p = subprocess.Popen([bin_, f"-config.file={config}", "-config.expand-env=true", "-target=all"],
                                  env=env, stdout=self.log, stderr=self.log)
        wait("Loki /ready", lambda: get(self.base + "/ready")[0] == 200, 90)

    def count(self, selector):
        q = urllib.parse.urlencode({"query": f"sum(count_over_time({selector}[3h]))"})
        st, body = get(f"{self.base}/loki/api/v1/query?{q}")
        if st != 200:
            return -1
        r = json.loads(body)["data"]["result"]
        return int(float(r[0]["value"][1])) if r else 0

    def entries(self, selector, start, end, limit=5000):
        """Every entry, paged by time; a full page's last timestamp is asked
        for again as the next start (entries may share it)."""
        out = []
        while True:
            q = urllib.parse.urlencode({"query": selector, "start": start, "end": end, "limit": limit,
                                        "direction": "forward"})
            st, body = get(f"{self.base}/loki/api/v1/query_range?{q}", timeout=120)
            if st != 200:
                raise SystemExit(f"peers-loki: query_range {selector}: {st} {body[:300]}")
            page = []
            for s in json.loads(body)["data"]["result"]:
                for ts, line in s["values"]:
                    page.append((int(ts), s["stream"].get("container", ""), s["stream"].get("stream", ""), line))
            page.sort()
            if len(page) < limit:
                return out + page
            last = page[-1][0]
            if page[0][0] == last:
                raise SystemExit(f"peers-loki: {limit} entries at one timestamp")
            out += [e for e in page if e[0] < last]
            start = last

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()


def metrics(port):
    st, body = get(f"http://127.0.0.1:{port}/metrics")
    m = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                m[k] = float(v)
            except ValueError:
                pass
    return m


def judge(entries, names):
    """Per shipper: lines stored, lost (numbers never stored), repeated
    (stored more than once), and lines with the wrong stream."""
    seen = {}
    wrong_stream = 0
    for _, container, stream, line in entries:
        parts = line.split(" ")
        if len(parts) < 2 or parts[0] not in names:
            continue
        i = int(parts[1])
        key = (parts[0], i)
        seen[key] = seen.get(key, 0) + 1
        if stream != ("stderr" if i % 5 == 0 else "stdout") or container != parts[0]:
            wrong_stream += 1
    lost = sum(1 for n in names for i in range(1, TOTAL + 1) if (n, i) not in seen)
    repeated = sum(c - 1 for c in seen.values() if c > 1)
    return {"stored": len(entries), "lost": lost, "repeated": repeated, "wrong_labels": wrong_stream}


def main():
    d = loki_dir()
    if not d:
        print("SKIPPED: no real Loki and Promtail (set LC_LOKI_DIR to a directory with "
              f"{', '.join(NEEDED)}; see README)")
        return 0
    agent_bin = os.path.join(ROOT, "target", "release", "log-capturer")
    if not os.access(agent_bin, os.X_OK):
        raise SystemExit(f"peers-loki: {agent_bin} missing: cargo build --release --bin log-capturer")
    work = tempfile.mkdtemp(prefix="lc-peers-loki-")
    loki_bin, promtail_bin = unpack(d, "loki-2.9.9"), unpack(d, "promtail-2.9.9")
    shipped = open(os.path.join(d, "loki-local.yaml")).read()
    assert "schema: v12" in shipped and "\nlimits_config:\n" in shipped, "loki-local.yaml is not the one known here"
    v13 = shipped.replace("schema: v12", "schema: v13").replace(
        "\nlimits_config:\n", "\nlimits_config:\n  allow_structured_metadata: true\n")
    config = os.path.join(work, "loki-v13.yaml")
    open(config, "w").write(v13)

    host, started = docker_env()
    denv = dict(os.environ, DOCKER_HOST=host)
    names = [f"plk{k:02d}" for k in range(N)]
    procs, loki = [], None
    try:
        subprocess.run(["docker", "rm", "-f", *names], env=denv, capture_output=True)
        loki = Loki(loki_bin, config, work)
        say(f"Loki 2.9.9 (v13) at {loki.base}; dockerd {host}; {N} containers x {TOTAL} lines at {RATE}/s")
        agent_port = free_port()
        agent = subprocess.Popen(
            [agent_bin, "--docker-host", host, "--state-dir", os.path.join(work, "agent-state"),
             "--metrics-addr", f"127.0.0.1:{agent_port}", "--include-label", LABEL,
             "--loki", loki.base, "--loki-label", "job=log-capturer"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "agent.log"), "w"))
        procs.append(agent)
        prom_port = free_port()
        penv = dict(os.environ, DOCKER_HOST=host, LOKI_URL=loki.base, PROMTAIL_HTTP_PORT=str(prom_port),
                    PROMTAIL_DATA_DIR=os.path.join(work, "promtail"))
        os.makedirs(penv["PROMTAIL_DATA_DIR"])
        promtail = subprocess.Popen(
            [promtail_bin, f"-config.file={os.path.join(d, 'promtail-docker.yaml')}", "-config.expand-env=true"],
            env=penv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "promtail.log"), "w"))
        procs.append(promtail)
        wait("agent /metrics", lambda: metrics(agent_port).get("log_capturer_docker_up") == 1.0, 30)
        wait("Promtail /ready", lambda: get(f"http://127.0.0.1:{prom_port}/ready")[0] == 200, 30)
        base = {"log-capturer": proc(agent.pid), "promtail": proc(promtail.pid)}
        t0 = time.time()
        start_ns = time.time_ns() - 60_000_000_000
        for n in names:
            subprocess.run(["docker", "run", "-d", "--network", "none", "--label", LABEL, "--name", n,
                            "busybox:local", "sh", "-c", script(n)], env=denv, check=True, capture_output=True)
        want = N * TOTAL
        sel = {"log-capturer": '{job="log-capturer"}', "promtail": '{job="promtail-docker"}'}
        # Until both hold every line, or neither has stored anything more
        # for 20 s after the writing ended.
        last, still = {}, time.time()
        while True:
            time.sleep(5)
            counts = {k: loki.count(s) for k, s in sel.items()}
            if counts != last:
                last, still = counts, time.time()
            done = all(c >= want for c in counts.values())
            idle = time.time() - t0 > SECS and time.time() - still > 20
            say(f"{time.time() - t0:.0f} s: stored {counts} of {want} each")
            if done or idle or time.time() - t0 > SECS + 300:
                break
        end_ns = time.time_ns() + 60_000_000_000
        elapsed = time.time() - t0
        now = {"log-capturer": proc(agent.pid), "promtail": proc(promtail.pid)}
        pm, am = metrics(prom_port), metrics(agent_port)
        results = {"containers": N, "rate": RATE, "seconds": SECS, "lines_each": want, "elapsed": round(elapsed)}
        for k in sel:
            j = judge(loki.entries(sel[k], start_ns, end_ns), set(names))
            cpu = now[k][0] - base[k][0]
            j.update({
                "cpu_s": round(cpu, 2),
                "cpu_s_per_million": round(cpu / max(j["stored"], 1) * 1e6, 1),
                "rss_mib": round(now[k][1], 1),
                "peak_rss_mib": round(now[k][2], 1),
                "threads": now[k][3],
            })
            results[k] = j
        results["promtail"]["dropped_metric"] = sum(v for k, v in pm.items()
                                                    if k.startswith("promtail_dropped_entries_total"))
        results["log-capturer"]["rejected_metric"] = sum(v for k, v in am.items()
                                                         if k.startswith("log_capturer_sink_rejected_lines_total"))
        out = os.path.join(ROOT, "target", "peers-loki")
        os.makedirs(out, exist_ok=True)
        json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=2)
        print(f"\n{N} containers x {RATE} lines/s x {SECS} s = {want} lines each, into Loki 2.9.9 (v13); "
              f"{elapsed:.0f} s\n")
        print("| shipper | stored | lost | repeated | wrong labels | CPU s | CPU s / M lines | RSS MiB (peak) | threads |")
        print("| --- | --: | --: | --: | --: | --: | --: | --: | --: |")
        for k in sel:
            r = results[k]
            print(f"| {k} | {r['stored']} | {r['lost']} | {r['repeated']} | {r['wrong_labels']} | {r['cpu_s']} | "
                  f"{r['cpu_s_per_million']} | {r['rss_mib']} ({r['peak_rss_mib']}) | {r['threads']} |")
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if loki:
            loki.stop()
        subprocess.run(["docker", "rm", "-f", *names], env=denv, capture_output=True)
        if started:
            subprocess.run([os.path.join(ROOT, "tests/docker/down.sh"), "--purge"],
                           env=dict(os.environ, LC_DOCKER_DIR=started), capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
