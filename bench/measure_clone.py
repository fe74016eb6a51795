#!/usr/bin/env python3
"""Times bare clones from several servers, alternating between them, and reports the
median wall time and the client's CPU (git clone and every process it waited for).

    measure_clone.py RUNS NAME=URL [NAME=URL ...]   ->  one line per server
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

def clone(url, dest):
    t0 = time.monotonic()
    p = subprocess.Popen(["git", "clone", "-q", "--bare", url, dest])
    _, status, ru = os.wait4(p.pid, 0)
    t1 = time.monotonic()
    if status != 0:
        sys.exit(f"clone of {url} failed")
    return t1 - t0, ru.ru_utime + ru.ru_stime


def main():
    runs = int(sys.argv[1])
    servers = [arg.split("=", 1) for arg in sys.argv[2:]]
    results = {name: [] for name, _ in servers}
    work = tempfile.mkdtemp()
    try:
        for name, url in servers:  # warm-up, not measured
            clone(url, os.path.join(work, "warm"))
            shutil.rmtree(os.path.join(work, "warm"))
        for i in range(runs):
            for name, url in servers:
                dest = os.path.join(work, f"{name}-{i}")
                results[name].append(clone(url, dest))
                shutil.rmtree(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        client = statistics.median(r[1] for r in rows)
        print(f"{name} wall={wall:.3f} client_cpu={client:.3f}")


if __name__ == "__main__":
    main()
