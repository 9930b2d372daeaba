"""Where a DreamBooth-LoRA training step's GPU time goes (issue 21, item 5): the method's
own fit (random weights at the real size, `baselines.family_bench`'s setup) under one or
more speed variants, each a fresh fit in this one process, a few steps profiled after the
warm-up. Kernels are summed by kind (attention, convolution, matmul, inductor's fused
triton kernels, normalisation, the rest) per step, beside the step's wall time: when the
two agree the step is bound by its kernels, not by launches.

    python benchmarks/lora_step_profile.py --family sd15 --variants compiled+nographs,compiled,compiled+cudnn

Variants are `family_bench`'s (`default`, `eager`, `graphs`, `compiled`, `cudnn`, `flash`, `qkv`,
`noqkv`, joined by "+"), plus `nographs` (CUDA graphs off; the profiler sees the kernels
inside the graphs too, so this shows what launching them one by one costs). Timed under
the profiler, slower than `family_bench`'s windows by a few percent (SD 1.5 compiled,
session 17: 23.9 against 24.5 steps/s) to a fifth (SD 1.5 compiled with cuDNN attention
and one-pass q/k/v, session 19: 40.0 against 33.1 ms per step, the kernels 31.5): compare
the kernel times, and take steps/s from `family_bench`. Prints one table per variant, with
the speed options the fit ran and any that fell back, and, with --json, writes the rows
there. `--ops N` also lists the N costliest (launching op, its four parent ops, input
shapes, kernel) rows and one for the rest: which call a copy or a matmul comes from
(profile a `nographs` variant for this: a replayed graph's kernels would be credited to
its replay, not to their ops; NOTES-baselines.md, twentieth session, groups SD 1.5's step
this way). GPU only for kernel times; `--size tiny --device cpu` checks the script runs.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from baselines.bench_device import peak_memory_gb, reset_peak_memory
from baselines.dreambooth_lora import DreamBoothLora
from baselines.family_bench import (FAMILY_ORDER, STEP_VARIANTS, FamilyBenchSettings, fallback_messages,
                                    make_context, make_method, subject_of, variant_changes)
from varbench.timing import matmul_rate

# Kernel name fragments, checked in this order: inductor names its kernels after the ops
# they fuse ("triton_..._fused_convolution_..."); a cuDNN attention kernel's name holds
# "mha", a convolution's "fprop"/"dgrad"; both may hold "xmma" or "gemm", as matmuls do.
KINDS = [("triton (fused by inductor)", ("triton",)),
         ("attention", ("flash", "fmha", "mha", "attention", "attn")),
         ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit")),
         ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul")),
         ("normalisation", ("norm",))]


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, parts in KINDS if any(part in name for part in parts)), "other")


def options_of(variant: str) -> dict[str, Any]:
    parts = variant.split("+")
    changes = variant_changes("+".join(part for part in parts if part != "nographs") or "default")
    return {**changes, **({"cuda_graphs": False} if "nographs" in parts else {})}


def kernel_rows(profiler: profile) -> list[tuple[str, float, int]]:
    """(kernel name, GPU seconds, calls) of every device kernel the profiler saw."""
    rows = []
    for event in profiler.key_averages():
        # (with CPU ops recorded, `--ops`, the GPU also shows each compiled graph's call, and
        # the optimizer's step, as a user annotation spanning its kernels: not a kernel; a
        # torch without the flag is told by inductor's "## Call ... ##" names)
        annotation = getattr(event, "is_user_annotation", None) or event.key.startswith("## ")
        if event.device_type != torch.autograd.DeviceType.CUDA or annotation:
            continue
        seconds = getattr(event, "self_device_time_total", None)
        if seconds is None:  # torch < 2.4 names it for CUDA
            seconds = event.self_cuda_time_total
        rows.append((event.key, seconds / 1e6, event.count))
    return sorted(rows, key=lambda row: -row[1])


def launching_ops(profiler: profile, profiled: int, top: int) -> list[dict[str, Any]]:
    """Device seconds per step by the CPU op that launched each kernel (with its four parent
    ops and input shapes) and the kernel's name: the `top` costliest rows, then one row
    summing the others (so the rows add up to every attributed kernel)."""
    totals: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for event in profiler.events():
        if event.device_type != torch.autograd.DeviceType.CPU or not event.kernels:
            continue
        parents, parent = [], event.cpu_parent
        while parent is not None and len(parents) < 4:
            parents.append(parent.name)
            parent = parent.cpu_parent
        for kernel in event.kernels:
            row = totals[(event.name, " < ".join(parents), str(event.input_shapes), kernel.name)]
            row[0] += kernel.duration / 1e6  # (durations are in microseconds)
            row[1] += 1
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])
    rest = ranked[top:]
    if rest:
        ranked = ranked[:top] + [((f"(the other {len(rest)} rows)", "", "", ""),
                                  [sum(row[0] for _, row in rest), sum(row[1] for _, row in rest)])]
    return [{"op": op, "parents": parents[:300], "shapes": shapes[:200], "kernel": kernel[:160],
             "s_per_step": seconds / profiled, "calls_per_step": calls / profiled}
            for (op, parents, shapes, kernel), (seconds, calls) in ranked]


def profile_fit(family: str, variant: str, settings: FamilyBenchSettings, folder: Path, warmup: int,
                profiled: int, ops: int = 0) -> dict[str, Any]:
    """Fit for `warmup` + `profiled` steps; the last `profiled` ones under the profiler
    (with `ops`, also the CPU ops and their input shapes, for `launching_ops`)."""
    activities = [ProfilerActivity.CUDA] if settings.device == "cuda" else [ProfilerActivity.CPU]
    if ops:
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if settings.device == "cuda" else [])]
    profiler = profile(activities=activities, record_shapes=bool(ops))
    edges: list[float] = []
    first_step: list[float] = []

    def on_step(done: int, total: int) -> None:
        if done == 1:  # encoding, adding the adapters, compiling or capturing, step 1
            if settings.device == "cuda":
                torch.cuda.synchronize()
            first_step.append(time.perf_counter() - started)
        if done in (warmup, warmup + profiled):
            if settings.device == "cuda":
                torch.cuda.synchronize()
            edges.append(time.perf_counter())
            if done == warmup:
                profiler.start()
            else:
                profiler.stop()

    method = make_method(DreamBoothLora, family, settings, steps=warmup + profiled, **options_of(variant))
    ctx = make_context(settings, folder, folder / "cache", on_step)
    base = method.load_base(ctx)
    reset_peak_memory(settings.device)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        method.fit(base, subject_of(settings, folder, method.config.resolution), ctx)
    rows = kernel_rows(profiler)
    by_kind: dict[str, float] = defaultdict(float)
    for name, seconds, _ in rows:
        by_kind[kind_of(name)] += seconds / profiled
    config = method.config
    return {"family": family, "variant": variant, "first_step_s": first_step[0],
            "options": {name: getattr(config, name) for name in ("cuda_graphs", "compile", "cudnn_attention",
                                                                   "fuse_lora_qkv")},
            "fallbacks": fallback_messages(caught),
            "peak_memory_gib": peak_memory_gb(settings.device),
            "wall_s_per_step": (edges[1] - edges[0]) / profiled,
            "kernel_s_per_step": sum(by_kind.values()), "by_kind_s_per_step": dict(by_kind),
            "top_kernels": [{"name": name[:160], "s_per_step": seconds / profiled, "calls_per_step": calls / profiled}
                            for name, seconds, calls in rows[:25]],
            "ops": launching_ops(profiler, profiled, ops) if ops else []}


def print_profile(result: dict[str, Any]) -> None:
    wall, kernels = result["wall_s_per_step"], result["kernel_s_per_step"]
    print(f"\n{result['family']} {result['variant']} ({result['options']}): {wall * 1e3:.1f} ms per step wall, "
          f"{kernels * 1e3:.1f} ms of kernels ({kernels / wall:.0%}); first step {result['first_step_s']:.1f} s; "
          f"peak {result['peak_memory_gib'] or 0:.1f} GiB",
          flush=True)
    for kind, seconds in sorted(result["by_kind_s_per_step"].items(), key=lambda item: -item[1]):
        print(f"  {kind:28s} {seconds * 1e3:7.2f} ms  {seconds / max(kernels, 1e-12):5.1%}")
    for row in result["top_kernels"]:
        print(f"    {row['s_per_step'] * 1e3:7.3f} ms {row['calls_per_step']:6.1f}x  {row['name'][:110]}")
    if result["ops"]:
        print("  by launching op (op < parents; input shapes; kernel):")
    for row in result["ops"]:
        print(f"    {row['s_per_step'] * 1e3:7.3f} ms {row['calls_per_step']:6.1f}x  {row['op']} < {row['parents']}; "
              f"{row['shapes']}; {row['kernel']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="sd15", choices=FAMILY_ORDER)
    parser.add_argument("--variants", default="compiled+nographs", help="comma-separated, each a fresh fit")
    parser.add_argument("--warmup", type=int, default=4, help="steps before profiling (the first compiles)")
    parser.add_argument("--steps", type=int, default=4, help="profiled steps")
    parser.add_argument("--size", choices=["full", "tiny"], default="full", help="tiny: a quick CPU check")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ops", type=int, default=0, help="also list the N costliest launching ops")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    if args.ops < 0:
        parser.error("--ops must be 0 (off) or a number of rows")
    known = [*STEP_VARIANTS, "nographs"]
    unknown = [v for v in args.variants.split(",") if any(part not in known for part in v.split("+"))]
    if unknown:
        parser.error(f"unknown variant {', '.join(unknown)}: use {', '.join(known)}, or several joined by +")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = FamilyBenchSettings.for_size(args.size, args.device, families=(args.family,), count_flops=False)
    rate = matmul_rate(args.device)  # the floor's rate: a step's FLOPs over it (NOTES-baselines.md)
    print(f"matmul rate {rate / 1e12:.0f} TFLOP/s", flush=True)
    results = []
    for variant in args.variants.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = profile_fit(args.family, variant, settings, Path(tmp), args.warmup, args.steps, args.ops)
            result["fit_s"] = time.perf_counter() - started
        result["matmul_flops_per_second"] = rate
        print_profile(result)
        results.append(result)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
