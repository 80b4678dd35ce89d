#!/usr/bin/env python3
"""CPU and memory of whole process trees while a command runs.

feldpost-bench's --server-pid samples one process. Synapse's database, PostgreSQL, is a tree of
other processes (postmaster, one backend per connection, writers), so its share would go unseen;
this samples each given tree once a second while COMMAND runs and prints one JSON object per tree
(to --out as well, if given).

    tree-usage.py --pid SYNAPSE_PID --pid POSTMASTER_PID [--out FILE] -- COMMAND [ARGS...]

CPU is the ticks the tree used during the run (live processes' utime+stime, plus the root's
cutime+cstime, which take in children that exited), over wall time. Memory is the sum of the
tree's PSS (shared pages split between the processes that map them, so PostgreSQL's shared
buffers are counted once), maximum and at the end.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2 :].split()
    # fields from state (3rd): ppid=1, utime=11, stime=12, cutime=13, cstime=14
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(name)
            if st:
                children.setdefault(st[0], []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def ticks(root):
    total = {}
    for p in tree(root):
        st = stat(p)
        if st:
            total[p] = st[1] + (st[2] if p == root else 0)
    return total


def pss_mib(root):
    kib = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        kib += int(line.split()[1])
                        break
        except OSError:
            pass
    return kib / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--out")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command")
    start = {p: ticks(p) for p in a.pid}
    mem = {p: {"max": 0.0, "end": 0.0} for p in a.pid}
    stop = threading.Event()

    def sample():
        while True:
            for p in a.pid:
                m = pss_mib(p)
                mem[p]["max"] = max(mem[p]["max"], m)
                mem[p]["end"] = m
            if stop.wait(1.0):
                return

    t0 = time.monotonic()
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = subprocess.call(cmd)
    stop.set()
    th.join()
    secs = time.monotonic() - t0
    result = []
    for p in a.pid:
        end = ticks(p)
        used = sum(v - start[p].get(q, 0) for q, v in end.items())
        result.append(
            {
                "pid": p,
                "processes_at_end": len(end),
                "cpu_percent_avg": round(used / TICKS / secs * 100, 1),
                "pss_max_mib": round(mem[p]["max"], 1),
                "pss_end_mib": round(mem[p]["end"], 1),
                "wall_secs": round(secs, 1),
            }
        )
    text = json.dumps(result, indent=2)
    print(text, file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
