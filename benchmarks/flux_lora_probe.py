"""Why FLUX.1-dev's DreamBooth-LoRA step stopped with "CUDA error: an illegal memory
access" on an H100 with torch 2.11 (issue 21): the method's own fit (through
`baselines.family_bench.bench_lora_fit`, random weights at the real size) under one
variant per process, since the error leaves the CUDA context unusable.

    python benchmarks/flux_lora_probe.py --checkpointing on --attention default
    python benchmarks/flux_lora_probe.py --checkpointing on --attention no-cudnn

`--attention no-cudnn` turns PyTorch's cuDNN attention kernel off for the whole process,
so SDPA falls back to its flash / memory-efficient kernels. Prints one JSON line: the
variant, then the steps/s and peak memory, or the error's first line.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import traceback
from pathlib import Path

import torch

from baselines.family_bench import FamilyBenchSettings, bench_lora_fit, describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpointing", choices=["on", "off"], default="on")
    parser.add_argument("--attention", choices=["default", "no-cudnn"], default="default")
    parser.add_argument("--family", default="flux")
    parser.add_argument("--steps", type=int, default=4, help="timed steps, after 2 warm-up steps")
    parser.add_argument("--size", choices=["full", "tiny"], default="full", help="tiny: a quick CPU check")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.attention == "no-cudnn":
        torch.backends.cuda.enable_cudnn_sdp(False)
    settings = FamilyBenchSettings.for_size(args.size, args.device, families=(args.family,), timed_steps=args.steps,
                                            windows=2, count_flops=False)
    variant = {"family": args.family, "checkpointing": args.checkpointing, "attention": args.attention}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fitted = bench_lora_fit(args.family, settings, Path(tmp), Path(tmp) / "cache",
                                    args.checkpointing == "on")
            result = fitted.result
            print(json.dumps({**variant, "steps/s": result["value"], "peak GiB": result["peak_memory_gib"],
                              "first step s": result["extra"]["first_step_s"]}), flush=True)
        except Exception as err:  # noqa: BLE001 - the probe reports the failure it is looking for
            traceback.print_exc()
            print(json.dumps({**variant, "error": describe(err)}), flush=True)


if __name__ == "__main__":
    main()
