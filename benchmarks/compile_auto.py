"""Does `compile: auto` pay? Wall time per cell, compile off vs auto (issue 18's measurement).

    python benchmarks/compile_auto.py --out OUT [--protocol benchmarks/protocols/compile-check.yaml]

Runs `varbench run --protocol P --backbones random` once per setting, each in a fresh
process with a fresh varbench cache (so no inductor cache is inherited), one in-process
worker running every cell, and prints one row per cell: its wall time (status.json,
seconds resolution) and the phases of timings.csv. Settings:
  off   every compile field false
  auto  every compile field auto (each method's `compile_pays_after` decides per worker)
  on    every compile field true (shows what auto declined, where it declined)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

SETTINGS = {
    "off": ["execution.compile=false", "execution.compile_generation=false"],
    "auto": ["execution.compile=auto", "execution.compile_generation=auto"],
    "on": ["execution.compile=true", "execution.compile_generation=true"],
}


def run_setting(protocol: str, setting: str, out: Path, methods: str | None, device: str, backbones: str) -> float:
    folder = out / setting
    env = {**os.environ, "VARBENCH_CACHE": str(folder / "cache"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "varbench", "run", "--protocol", protocol, "--backbones", backbones,
               "--results", str(folder / "results"), "--device", device]
    command += [flag for pair in SETTINGS[setting] for flag in ("--set", pair)]
    if methods:
        command += ["--methods", methods]
    start = time.perf_counter()
    with open(out / f"{setting}.log", "w") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return time.perf_counter() - start


def cell_rows(setting: str, results: Path) -> list[dict]:
    rows = []
    for status_path in sorted(results.glob("*/*/cells/*/status.json")):
        cell = status_path.parent
        status = json.loads(status_path.read_text())
        phases: dict[str, float] = {}
        with open(cell / "timings.csv") as handle:
            for row in csv.DictReader(handle):
                phases[row["phase"]] = phases.get(row["phase"], 0.0) + float(row["seconds"])
        for scores in cell.glob("scores/*/timings.csv"):
            with open(scores) as handle:
                phases["score"] = sum(float(row["seconds"]) for row in csv.DictReader(handle))
        wall = (datetime.fromisoformat(status["finished"]) - datetime.fromisoformat(status["started"])).total_seconds() \
            if status.get("finished") else None
        rows.append({"setting": setting, "arm": cell.parts[-3].rsplit("-", 1)[0], "subject": cell.name,
                     "state": status["state"], "started": status["started"], "wall_s": wall,
                     **{f"{k}_s": round(v, 2) for k, v in phases.items()}})
    return sorted(rows, key=lambda r: (r["arm"], r["started"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", default="benchmarks/protocols/compile-check.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--settings", default="off,auto")
    parser.add_argument("--methods", default=None, help="arms to run (default: all)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbones", default="random", help="random (real sizes), or as-written (a CPU check)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, totals = [], {}
    for setting in args.settings.split(","):
        totals[setting] = run_setting(args.protocol, setting, args.out, args.methods, args.device,
                                      args.backbones)
        rows += cell_rows(setting, args.out / setting / "results")
        print(f"{setting}: process {totals[setting]:.0f} s", flush=True)
    keys = sorted({k for row in rows for k in row if k.endswith("_s")})
    print("| setting | arm | subject | state | " + " | ".join(keys) + " |")
    for row in rows:
        print(f"| {row['setting']} | {row['arm']} | {row['subject']} | {row['state']} | "
              + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    (args.out / "compile_auto.json").write_text(json.dumps({"process_s": totals, "cells": rows}, indent=1))


if __name__ == "__main__":
    main()
