#!/usr/bin/env python3
"""Prints one row per kernel from `ncu --csv --metrics ...` output: the last
launch of each kernel name, its metrics in the order ncu listed them. Warp
stall metrics (smsp__average_warps_issue_stalled_<reason>_per_issue_active)
print instead as each kernel's largest reasons, largest first.

    python3 scripts/ncu_table.py ncu.log
"""
import csv
import sys


def main(path):
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu's CSV rows, not the program's output
    rows = list(csv.reader(lines))
    if not rows:
        print("no ncu rows in", path)
        return 1
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    needed = ("ID", "Kernel Name", "Metric Name", "Metric Value")
    if any(name not in col for name in needed):
        print("unexpected ncu header:", header)
        return 1
    launches = {}  # launch ID -> (kernel, {metric: value})
    metrics = []
    for r in body:
        launch = launches.setdefault(r[col["ID"]], (r[col["Kernel Name"]], {}))
        name = r[col["Metric Name"]]
        if name not in metrics:
            metrics.append(name)
        launch[1][name] = r[col["Metric Value"]]
    last = {}  # kernel -> (metrics, launches)
    for _, (kernel, values) in sorted(launches.items(), key=lambda kv: int(kv[0])):
        count = last.get(kernel, (None, 0))[1]
        last[kernel] = (values, count + 1)
    stalls = [m for m in metrics if "_issue_stalled_" in m]
    others = [m for m in metrics if m not in stalls]
    short = [m.split("__")[-1].split(".")[0][:14] for m in others]
    if others:
        print("kernel | launches | " + " | ".join(short))
    for kernel, (values, count) in last.items():
        name = kernel.split("(")[0][-60:]
        if others:
            print(f"{name} | {count} | " + " | ".join(values.get(m, "-") for m in others))
        if stalls:
            print(f"{name} | {count} | stalls per issued instruction: " + stall_summary(values, stalls))
    return 0


def stall_summary(values, stalls, top=8):
    """The `top` largest stall reasons, e.g. "long_scoreboard 3.21, barrier 1.02"."""
    def number(text):
        try:
            return float(text.replace(",", ""))
        except ValueError:
            return 0.0
    pairs = []
    for m in stalls:
        reason = m.split("_issue_stalled_")[1].split("_per_issue")[0]
        pairs.append((number(values.get(m, "0")), reason))
    pairs.sort(reverse=True)
    return ", ".join(f"{reason} {value:.2f}" for value, reason in pairs[:top])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
