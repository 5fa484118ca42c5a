#!/usr/bin/env python3
"""Turn the peers benchmark's CSV files into one markdown table.

    table.py RESULTS_DIR > RESULTS_DIR/peers.md

Reads n<N>.csv (the measurement windows) and n<N>-stall.csv (the stall
experiment) for every N found, in increasing N. With several rounds, each
follower's figures are over all its windows: CPU and lines are summed before
dividing, RSS/PSS are the mean of the windows' means, fds and threads the
maximum, missing and repeated lines the sum; start-up is listed per round.
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


def combine(rows):
    """One follower's windows (one per round) as one set of figures."""
    total = lambda k: sum(float(r[k]) for r in rows)  # noqa: E731
    out = {"windows": len(rows), "produced": int(total("lines_produced"))}
    lines = total("lines_received") if rows[0]["follower"] != "none" else total("lines_produced")
    out["received"] = int(total("lines_received"))
    out["dockerd"] = total("dockerd_cpu_s") / lines * 1e6 if lines else float("nan")
    if rows[0]["follower"] != "none":
        out["cpu"] = total("follower_cpu_s") / lines * 1e6 if lines else float("nan")
        out["rss"] = total("rss_mib") / len(rows)
        out["pss"] = total("pss_mib") / len(rows)
        out["fds"] = max(int(r["fds"]) for r in rows)
        out["threads"] = max(int(r["threads"]) for r in rows)
        out["missing"] = int(total("missing"))
        out["repeated"] = int(total("duplicates"))
        out["startup"] = " / ".join(f"{r['startup_s']} s ({r['startup_dockerd_cpu_s']})" for r in rows
                                    if r.get("startup_s"))
    return out


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
          "(over nobody following) | fds | threads | lines received (missing, repeated) "
          "| start-up: every container delivered after (dockerd CPU s), per round | a stream stalls |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for n in ns:
        rows = read(os.path.join(d, f"n{n}.csv"))
        stalls = {r["follower"]: r for r in read(os.path.join(d, f"n{n}-stall.csv"))}
        kinds = list(dict.fromkeys(r["follower"] for r in rows))
        figs = {k: combine([r for r in rows if r["follower"] == k]) for k in kinds}
        base = figs["none"]["dockerd"] if "none" in figs else None
        rate = rows[0]["rate_per_container"]
        for k in kinds:
            f = figs[k]
            if k == "none":
                print(f"| {n} | nobody following ({rate} lines/s per container) | | | | {f['dockerd']:.1f} | | "
                      f"| {f['produced']} produced | | |")
                continue
            dockerd = f"{f['dockerd']:.1f}" + (f" (+{f['dockerd'] - base:.1f})" if base is not None else "")
            print(f"| {n} | {NAMES.get(k, k)} | {f['rss']:.1f} | {f['pss']:.1f} | {f['cpu']:.1f} | {dockerd} "
                  f"| {f['fds']} | {f['threads']} | {f['received']} ({f['missing']}, {f['repeated']}) "
                  f"| {f['startup'] or 'not measured'} | {stall_text(stalls.get(k))} |")


if __name__ == "__main__":
    main()
