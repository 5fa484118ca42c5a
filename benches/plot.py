#!/usr/bin/env python3
"""Plot columns of a CSV into a PNG (used by the soak, ceiling and peers benchmarks).

    benches/plot.py data.csv out.png --x elapsed_s --y agent_fds --y2 agent_rss_kib \
        --title "soak: 55 containers"

--y and --y2 take comma-separated column names; --y2 columns go on a second
axis on the right. --log-x / --log-y use log scales. --group COL draws one
line per distinct value of COL.

matplotlib is not part of a fresh machine: when it cannot be imported the
script creates a private virtualenv under target/plot-venv, installs
matplotlib from PyPI there, and re-runs itself with it. Nothing is installed
system-wide.
"""
import argparse
import csv
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "..", "target", "plot-venv")


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("LC_PLOT_IN_VENV"):
        sys.exit("plot.py: matplotlib still missing inside target/plot-venv")
    py = os.path.join(VENV, "bin", "python3")
    if not os.path.exists(py):
        print("plot.py: installing matplotlib into target/plot-venv (first use)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "matplotlib"])
    env = dict(os.environ, LC_PLOT_IN_VENV="1")
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], env)


def num(v):
    try:
        return float(v)
    except ValueError:
        return float("nan")


def main():
    ap = argparse.ArgumentParser(description="Plot CSV columns into a PNG.")
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--x", required=True, help="column for the x axis")
    ap.add_argument("--y", required=True, help="comma-separated columns, left axis")
    ap.add_argument("--y2", default="", help="comma-separated columns, right axis")
    ap.add_argument("--group", default="", help="one line per distinct value of this column")
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="")
    ap.add_argument("--ylabel", default="")
    ap.add_argument("--y2label", default="")
    ap.add_argument("--log-x", action="store_true")
    ap.add_argument("--log-y", action="store_true")
    ap.add_argument("--markers", action="store_true", help="draw points (for few samples)")
    a = ap.parse_args()

    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(a.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"plot.py: {a.csv} has no rows")
    for col in [a.x] + a.y.split(",") + [c for c in a.y2.split(",") if c] + ([a.group] if a.group else []):
        if col not in rows[0]:
            sys.exit(f"plot.py: {a.csv} has no column {col!r} (it has: {', '.join(rows[0])})")

    groups = {}
    for r in rows:
        groups.setdefault(r[a.group] if a.group else "", []).append(r)

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    ax2 = ax.twinx() if a.y2 else None
    style = "o-" if a.markers else "-"
    lines = []
    for axis, cols, ls in ((ax, a.y.split(","), style), (ax2, [c for c in a.y2.split(",") if c], "--")):
        if axis is None:
            continue
        for col in cols:
            for g, rs in groups.items():
                label = f"{col} ({a.group}={g})" if a.group else col
                xs = [num(r[a.x]) for r in rs]
                ys = [num(r[col]) for r in rs]
                lines += axis.plot(xs, ys, style if axis is ax else ls, label=label, markersize=3)
    ax.set_xlabel(a.xlabel or a.x)
    ax.set_ylabel(a.ylabel or a.y)
    if ax2 is not None:
        ax2.set_ylabel(a.y2label or a.y2)
    if a.log_x:
        ax.set_xscale("log")
    if a.log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(lines, [ln.get_label() for ln in lines], loc="best", fontsize=8)
    if a.title:
        ax.set_title(a.title)
    fig.tight_layout()
    fig.savefig(a.png)
    print(f"plot.py: wrote {a.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
