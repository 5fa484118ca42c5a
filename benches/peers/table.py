#!/usr/bin/env python3
"""Turn the peers benchmark's CSV files into one markdown table.

    table.py RESULTS_DIR > RESULTS_DIR/peers.md

Reads n<N>.csv (the measurement windows) and n<N>-stall.csv (the stall
experiment) for every N found, in increasing N.
"""
import csv
import glob
import os
import re
import sys

NAMES = {
    "log-capturer": "log-capturer (1 process, 1 thread)",
    "docker-logs": "`docker logs -f --timestamps` x N",
    "python-sdk": "Python `docker` SDK, thread per container",
}


def read(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def stall_text(s):
    if not s:
        return "not measured"
    if s["recovered_after_s"]:
        return (f"noticed: silent {s['recovered_after_s']} s (idle timeout {s['idle_timeout']}), "
                f"reopened, caught up; {s['target_gaps']} lost, {s['target_duplicates']} repeated")
    behind_r = int(s["target_lines_behind_after_release"])
    after = ("caught up when the connection resumed" if behind_r <= 2 * int(s["rate_per_container"])
             else f"still {behind_r} behind {s['release_s']} s after it resumed")
    return (f"never noticed, no error: {s['target_lines_behind_at_end']} lines behind after "
            f"{float(s['stall_s']):g} s, blocked in read; {after}")


def main():
    d = sys.argv[1]
    ns = sorted(int(m.group(1)) for p in glob.glob(os.path.join(d, "n*.csv"))
                if (m := re.fullmatch(r"n(\d+)\.csv", os.path.basename(p))))
    print("| N | follower | RSS (MiB, sum) | PSS (MiB, sum) | CPU s / M lines | dockerd CPU s / M lines "
          "(over nobody following) | fds | threads | lines in window (missing, repeated over the run) "
          "| a stream stalls |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for n in ns:
        rows = read(os.path.join(d, f"n{n}.csv"))
        stalls = {r["follower"]: r for r in read(os.path.join(d, f"n{n}-stall.csv"))}
        base = next((float(r["dockerd_cpu_s_per_M_lines"]) for r in rows if r["follower"] == "none"), None)
        for r in rows:
            k = r["follower"]
            dockerd = r["dockerd_cpu_s_per_M_lines"]
            if base is not None and k != "none":
                dockerd = f"{dockerd} (+{float(dockerd) - base:.1f})"
            if k == "none":
                print(f"| {n} | nobody following ({r['rate_per_container']} lines/s per container) | | | "
                      f"| {r['dockerd_cpu_s_per_M_lines']} | | | {r['lines_produced']} produced | |")
                continue
            print(f"| {n} | {NAMES.get(k, k)} | {r['rss_mib']} | {r['pss_mib']} | {r['cpu_s_per_M_lines']} "
                  f"| {dockerd} | {r['fds']} | {r['threads']} "
                  f"| {r['lines_received']} ({r['missing']}, {r['duplicates']}) | {stall_text(stalls.get(k))} |")


if __name__ == "__main__":
    main()
