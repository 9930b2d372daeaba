"""Why FLUX.1-dev's DreamBooth-LoRA step stopped with "CUDA error: an illegal memory
access" on an H100 with torch 2.11 (issue 21): the method's own fit (through
`baselines.family_bench.bench_lora_fit`, random weights at the real size) under one
variant per process, since the error leaves the CUDA context unusable.

    python benchmarks/flux_lora_probe.py --checkpointing on --cudnn-attention on    # failed (torch 2.11)
    python benchmarks/flux_lora_probe.py --checkpointing on --cudnn-attention off   # the method's default

`--cudnn-attention` is the method's `cudnn_attention` execution option: on, SDPA may pick
cuDNN's fused kernel (PyTorch's own choice on an H100); off, its flash / memory-efficient
kernels. (Session 12 found the failure with a process-wide switch instead, before the
option existed.) Prints one JSON line: the variant, then the steps/s and peak memory, or
the error's first line.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import traceback
from pathlib import Path


from baselines.family_bench import FAMILY_ORDER, FamilyBenchSettings, bench_lora_fit, describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpointing", choices=["on", "off"], default="on")
    parser.add_argument("--cudnn-attention", choices=["on", "off"], default="off")
    parser.add_argument("--family", default="flux", choices=FAMILY_ORDER)
    parser.add_argument("--steps", type=int, default=4, help="timed steps, after 2 warm-up steps")
    parser.add_argument("--size", choices=["full", "tiny"], default="full", help="tiny: a quick CPU check")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    settings = FamilyBenchSettings.for_size(args.size, args.device, families=(args.family,), timed_steps=args.steps,
                                            windows=2, count_flops=False)
    variant = {"family": args.family, "checkpointing": args.checkpointing, "cudnn_attention": args.cudnn_attention}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fitted = bench_lora_fit(args.family, settings, Path(tmp), Path(tmp) / "cache",
                                    args.checkpointing == "on", cudnn_attention=args.cudnn_attention == "on")
            result = fitted.result
            print(json.dumps({**variant, "steps/s": result["value"], "peak GiB": result["peak_memory_gib"],
                              "first step s": result["extra"]["first_step_s"]}), flush=True)
        except Exception as err:  # noqa: BLE001 - the probe reports the failure it is looking for
            traceback.print_exc()
            print(json.dumps({**variant, "error": describe(err)}), flush=True)


if __name__ == "__main__":
    main()
