"""The local multi-GPU launcher on real devices: spread, throughput, a killed worker.

    python benchmarks/local_launcher_check.py --gpus 0,1 --results /tmp/ll    # N GPUs
    python benchmarks/local_launcher_check.py --gpus 0,0 --results /tmp/ll    # 2 workers, 1 GPU
    python benchmarks/local_launcher_check.py --gpus cpu,cpu --results /tmp/ll

1. runs a protocol (default: smoke, tiny backbones) with one worker, then with all the
   given workers, and prints cells per minute for each and which device ran each cell;
2. starts it again on a fresh root, SIGKILLs one worker process once the first cell is
   done, lets the run finish, reruns, and checks that the rerun did only the cells the
   kill left unfinished (every cell fitted exactly once, all done).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


EXTRA: list[str] = []  # more `varbench run` arguments (--methods, --subjects)


def run(protocol: str, results: Path, gpus: str) -> tuple[int, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "varbench", "run", "--protocol", protocol, "--results",
                           str(results), "--launcher", "local", "--gpus", gpus, *EXTRA], capture_output=True,
                          text=True)
    return done.returncode, time.perf_counter() - start


def statuses(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"cell": str(p.parent.relative_to(results))}
            for p in sorted(results.rglob("cells/*/status.json"))]


def fit_counts(results: Path) -> dict[str, int]:
    counts = {}
    for path in results.rglob("cells/*/timings.csv"):
        counts[str(path.parent.relative_to(results))] = path.read_text().count(",fit,")
    return counts


def worker_pids(parent: int) -> list[int]:
    """The launcher's worker processes: children of `parent` started by multiprocessing (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == parent and "spawn_main" in cmdline:  # not the resource tracker
            pids.append(int(stat.parent.name))
    return sorted(pids)


def kill_one_worker(protocol: str, results: Path, gpus: str) -> dict:
    process = subprocess.Popen([sys.executable, "-m", "varbench", "run", "--protocol", protocol, "--results",
                                str(results), "--launcher", "local", "--gpus", gpus, *EXTRA],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    try:
        while process.poll() is None and killed is None:
            if any(s["state"] == "done" for s in statuses(results)):
                pids = worker_pids(process.pid)
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed = pids[-1]
            time.sleep(0.05)
        first_code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    before = Counter(s["state"] for s in statuses(results))
    rerun_code, _ = run(protocol, results, gpus)
    after = Counter(s["state"] for s in statuses(results))
    counts = fit_counts(results)
    return {"killed_worker": killed, "first_exit_code": first_code, "states_after_kill": dict(before),
            "rerun_exit_code": rerun_code, "states_after_rerun": dict(after),
            "every_cell_fitted_once": set(counts.values()) == {1}, "cells": len(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="smoke")
    parser.add_argument("--gpus", default="0,1")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--methods", default=None, help="only these arms (comma-separated)")
    args = parser.parse_args()
    if args.methods:
        EXTRA.extend(["--methods", args.methods])
    report = {}
    for label, gpus in (("1 worker", args.gpus.split(",")[0]), (f"{len(args.gpus.split(','))} workers", args.gpus)):
        root = args.results / label.replace(" ", "-")
        code, seconds = run(args.protocol, root, gpus)
        cells = statuses(root)
        report[label] = {"exit_code": code, "seconds": round(seconds, 1), "cells": len(cells),
                         "cells_per_minute": round(60 * len(cells) / seconds, 2),
                         "cells_by_device_and_pid": dict(Counter(f"{s['device']} pid {s['pid']}" for s in cells))}
        print(label, json.dumps(report[label]), flush=True)
    report["kill one worker"] = kill_one_worker(args.protocol, args.results / "killed", args.gpus)
    print("kill one worker", json.dumps(report["kill one worker"]), flush=True)


if __name__ == "__main__":
    main()
