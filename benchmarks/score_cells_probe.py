"""Where `varbench score`'s scoring phases lose to `varbench bench`'s scoring component
(issue 19): `_score_once` `--calls` times in one process under one setting, each cell's
scoring seconds, and a cProfile (by own time) of the call named by `--profile` (1 = the
cold first call, as a user's fresh `varbench score` process runs it).

    python benchmarks/score_cells_probe.py --device cuda --precision fp32 --profile 1 [--per-subject 4000]
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
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--profile", type=int, default=1, help="which call to profile (0: none)")
    args = parser.parse_args()
    execution = {"fp32": {}, "tf32": {"metric_tf32": True}, "bf16": {"metric_precision": "bf16"}}[args.precision]
    size = "real" if args.device.startswith("cuda") else "small"
    from varbench import worker

    original = worker.Worker._score
    profile = cProfile.Profile()
    call = [0]

    def timed(self, *pos, **kw):
        profiling = call[0] == args.profile
        started = time.perf_counter()
        if profiling:
            profile.enable()
        try:
            return original(self, *pos, **kw)
        finally:
            if profiling:
                profile.disable()
            print(f"  call {call[0]}: cell scored in {time.perf_counter() - started:.3f} s", flush=True)

    with mock.patch.object(worker.Worker, "_score", timed):
        for number in range(1, args.calls + 1):
            call[0] = number
            split = _score_once(size, args.device, args.per_subject, execution)
            print(f"call {number}", {**split, "scoring images/s": round(3 * args.per_subject / split["score_s"])},
                  flush=True)
    if args.profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main()
