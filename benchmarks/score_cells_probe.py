"""Where `varbench score`'s scoring phases lose to `varbench bench`'s scoring component
(issue 19): `_score_once` twice in one process under one setting (the second warm), each
cell's "score" seconds, then a cProfile of a third call's scoring, by own time.

    python benchmarks/score_cells_probe.py --device cuda --precision bf16 [--per-subject 4000]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from unittest import mock

from varbench.bench.components import _score_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--per-subject", type=int, default=4000)
    args = parser.parse_args()
    execution = {"fp32": {}, "tf32": {"metric_tf32": True}, "bf16": {"metric_precision": "bf16"}}[args.precision]
    size = "real" if args.device.startswith("cuda") else "small"
    for attempt in ("cold", "warm"):
        split = _score_once(size, args.device, args.per_subject, execution)
        print(attempt, {**split, "scoring images/s": round(3 * args.per_subject / split["score_s"])}, flush=True)
    profile = cProfile.Profile()
    from varbench import worker

    original = worker.Worker._score

    def profiled(self, *pos, **kw):
        started = time.perf_counter()
        profile.enable()
        try:
            return original(self, *pos, **kw)
        finally:
            profile.disable()
            print(f"  cell scored in {time.perf_counter() - started:.3f} s", flush=True)

    with mock.patch.object(worker.Worker, "_score", profiled):
        split = _score_once(size, args.device, args.per_subject, execution)
    print("profiled", split, flush=True)
    pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
