"""Speed of the diffusion baselines: a benchmark to run on a GPU, not a timed test.

At full Stable Diffusion 1.5 size with random weights (the real architecture built in
code, no download) it measures, with the methods' own `fit` code:
  - training steps per second of DreamBooth (batch 1 subject + 1 class image = 2 per
    UNet call), Custom Diffusion (2 + 2) and Textual Inversion (4 micro-batches of 1 per
    optimizer step, run as one batch of 4 by default; micro-steps/s = micro-batches/s is
    reported too, and its target is in micro-steps/s, the unit of the reference figure);
  - 50-step DDIM sampling with CFG 7.5, seconds per image at batch 1 and 4;
each CUDA-synchronised, warm-up excluded, the median over timing windows/repeats, with
peak GPU memory, FLOPs per step/image (torch's FLOP counter) and the floor those FLOPs
imply at the measured bf16 matmul rate. Random-init weights: timings only.

Variants are named sets of the speed options (`VARIANTS`; config fields of every
baseline), measured one after the other in one process so the table shows them side by
side: `base` is the code before the speed work, `default` the configs' defaults.

    python -m baselines.bench --device cuda --variants base default --json bench.json
    python -m baselines.bench --device cuda --variants fast compiled:sampling@4,custom_diffusion
                                            # a variant restricted to some benchmarks
    python -m baselines.bench --size tiny --device cpu              # a quick local check
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from baselines.bench_device import (
    SD15_ATTENTION,
    TINY_ATTENTION,
    StepFlopCounter,
    attention_table,
    copy_bandwidth,
    count_flops,
    device_name,
    free_memory,
    is_cuda,
    peak_memory_gb,
    reset_peak_memory,
    synchronize,
)
from baselines.bench_report import BENCHMARK_ORDER, fill_floors, format_attention, format_table
from baselines.custom_diffusion import CustomDiffusion
from baselines.dreambooth import DreamBooth
from baselines.sampling import generate_images, sampling_pipeline
from baselines.synthetic import synthetic_subject
from baselines.textual_inversion import TextualInversion
from baselines.training import cast, compute_dtype
from varbench.schema import from_dict
from varbench.method import CellContext
from varbench.models.diffusion import SD15_RANDOM, TINY, DiffusionComponents, sd15_components, tiny_components
from varbench.timing import matmul_rate

LABEL = "random-init weights: timings only, not image quality"
# Targets set for one H100: steps/s for training (Textual Inversion: micro-steps/s at
# batch 1, the unit of the reference figure), s/image for sampling at batch 4.
TARGETS = {"dreambooth": 15.0, "custom_diffusion": 25.0, "textual_inversion": 25.0, "sampling@4": 0.25}
METHODS = (DreamBooth, CustomDiffusion, TextualInversion)
BENCHMARKS = BENCHMARK_ORDER

_ALL_OFF = dict(cudnn_benchmark=False, channels_last=False, channels_last_sampling=False, cuda_graphs=False,
                compile=False, fuse_qkv=False, attention_backend="auto", sampling_loop="diffusers",
                fuse_micro_batches=False, encode_ahead=1)  # a method-specific field reaches only its method
# What call 2 measured as "fast" (see benchmarks/NOTES-baselines.md).
_FAST = dict(_ALL_OFF, cudnn_benchmark=True, channels_last=True, channels_last_sampling=True, cuda_graphs=True,
             fuse_qkv=True, sampling_loop="varbench")
_DEFAULT = dict(_ALL_OFF, channels_last=True, cuda_graphs=True, fuse_qkv=True, attention_backend="cudnn",
                sampling_loop="varbench", fuse_micro_batches=True, encode_ahead=8)  # the config defaults, spelled out
VARIANTS: dict[str, dict[str, Any]] = {
    "base": _ALL_OFF,  # the code before the speed work: eager, NCHW, diffusers' sampling loop
    "default": {},  # the configs' defaults (= _DEFAULT)
    "compiled": dict(_DEFAULT, compile=True, channels_last_sampling=True),  # + torch.compile (NHWC: inductor)
    "fast": _FAST,
    "compiled-nchw": dict(_DEFAULT, compile=True),  # compiled sampling in NCHW (fits stay NHWC)
    "compiled-nographs": dict(_DEFAULT, compile=True, channels_last_sampling=True, cuda_graphs=False),
    # ablations of the defaults, one option each
    "nographs": dict(_DEFAULT, cuda_graphs=False),
    "nchw": dict(_DEFAULT, channels_last=False),
    "nhwc-sampling": dict(_DEFAULT, channels_last_sampling=True),
    "cudnnbench": dict(_DEFAULT, cudnn_benchmark=True),
    "nofuse": dict(_DEFAULT, fuse_qkv=False),
    "auto-attention": dict(_DEFAULT, attention_backend="auto"),
    "flash-attention": dict(_DEFAULT, attention_backend="flash"),
    "unfused": dict(_DEFAULT, fuse_micro_batches=False),  # Textual Inversion: 4 calls of batch 1 per step
    "encode-each-step": dict(_DEFAULT, encode_ahead=1),  # Custom Diffusion: one VAE call per step
}


@dataclass
class BenchSettings:
    size: Literal["sd15", "tiny"] = "sd15"
    device: str = "cuda"
    variants: tuple[str, ...] = ("default",)  # measured in this order; "name:bench,bench" restricts one
    benchmarks: tuple[str, ...] = BENCHMARKS
    warmup_steps: int = 10  # training steps before the clock starts (>= 2: step 2 has its FLOPs counted)
    timed_steps: int = 30  # split into `windows` equal windows; the median window rate is reported
    windows: int = 3
    sample_repeats: int = 3  # timed pipeline calls per batch size, after one warm-up call
    sample_steps: int = 50
    guidance_scale: float = 7.5
    count_flops: bool = True
    attention: bool = False  # also time the SDPA kernels on SD's attention shapes
    deadline_s: float | None = None  # start no new benchmark after this many seconds
    seed: int = 0


@dataclass
class BenchResult:
    name: str  # "dreambooth", ..., "sampling@4"
    value: float  # steps/s for training, seconds/image for sampling
    unit: str
    batch: int  # images per UNet call (sampling: prompts per call; CFG doubles the UNet batch)
    seconds: list[float]  # the timed windows / repeats
    peak_memory_gb: float | None
    flops: float | None = None  # per training step / per image
    floor: float | None = None  # best possible value at the measured matmul rate
    target: float | None = None
    meets_target: bool | None = None
    variant: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)


def build_components(settings: BenchSettings) -> DiffusionComponents:
    return sd15_components(settings.seed) if settings.size == "sd15" else tiny_components(settings.seed)


def method_overrides(settings: BenchSettings, steps: int, variant: str) -> dict[str, Any]:
    resolution = 512 if settings.size == "sd15" else 64
    # base_model only names the run here (`run_fit` passes the components in); few class
    # images, since their generation is setup, outside the timed windows.
    return {"base_model": TINY if settings.size == "tiny" else SD15_RANDOM, "resolution": resolution,
            "steps": steps, "sample_steps": settings.sample_steps, "num_class_images": 2, "class_batch_size": 2,
            **VARIANTS[variant]}


def countable(settings: BenchSettings, variant: str) -> bool:
    """FLOPs are counted by intercepting eager ops: not possible inside graphs or compiled code."""
    options = {**asdict(DreamBooth.Config()), **VARIANTS[variant]}
    return settings.count_flops and not (is_cuda(settings.device) and (options["cuda_graphs"] or options["compile"]))


def uses_compile(variant: str) -> bool:
    return bool({**asdict(DreamBooth.Config()), **VARIANTS[variant]}["compile"])


def run_fit(method_class: type, master: DiffusionComponents, settings: BenchSettings, folder: Path, steps: int,
            variant: str = "default", on_step: Callable[[int, int], None] | None = None,
            on_start: Callable[[], None] | None = None) -> Any:
    """A fresh copy of `master` fitted for `steps` steps with the method's own code."""
    config_fields = set(method_class.Config.__dataclass_fields__)
    overrides = {k: v for k, v in method_overrides(settings, steps, variant).items() if k in config_fields}
    method = method_class(from_dict(method_class.Config, overrides, "baselines.bench"))
    components = copy.deepcopy(master).to(settings.device)
    subject = synthetic_subject(folder / "subject", count=5, size=overrides["resolution"], seed=settings.seed)
    ctx = CellContext(device=torch.device(settings.device), fit_seed=settings.seed, workdir=folder / "work",
                      cache_dir=folder / "cache", on_fit_step=on_step or (lambda done, total: None))
    if on_start is not None:
        on_start()
    model = method.fit(components, subject, ctx)
    ctx.flush_losses()
    return model


def bench_training(method_class: type, master: DiffusionComponents, settings: BenchSettings, folder: Path,
                   variant: str, rates: dict[str, float]) -> BenchResult:
    window = max(1, settings.timed_steps // settings.windows)
    stamps: list[float] = []
    started: list[float] = []
    first_step: list[float] = []
    flops = StepFlopCounter(step=1) if countable(settings, variant) else None

    def on_step(done: int, total: int) -> None:
        if flops is not None:
            flops.on_step(done)
        if done == 1:  # setup + first step: class images, encodings, compiling, graph capture
            synchronize(settings.device)
            first_step.append(time.perf_counter() - started[0])
        # Synchronise only at window edges: the loop itself never waits for the GPU.
        if done >= settings.warmup_steps and (done - settings.warmup_steps) % window == 0:
            synchronize(settings.device)
            stamps.append(time.perf_counter())

    reset_peak_memory(settings.device)
    try:
        model = run_fit(method_class, master, settings, folder, settings.warmup_steps + window * settings.windows,
                        variant, on_step, on_start=lambda: started.append(time.perf_counter()))
    finally:
        if flops is not None:
            flops.stop()
    seconds = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    rate = window / statistics.median(seconds)
    accumulation = getattr(model.config, "grad_accumulation", 1)
    result = BenchResult(name=method_class.name, value=rate, unit="steps/s", batch=unet_batch(model.config),
                         seconds=seconds, peak_memory_gb=peak_memory_gb(settings.device),
                         target=target_for(method_class.name, settings), variant=variant,
                         extra={"trainable_parameters": model.trainable_parameters, "first_step_s": first_step[0]})
    if accumulation > 1:
        result.extra["micro_steps_per_second"] = rate * accumulation
    if result.target is not None:
        result.meets_target = rate * accumulation >= result.target
    if flops is not None and flops.total:
        result.flops = float(flops.total)
        result.floor = rates["matmul"] / flops.total
    # AdamW must at least read parameter, gradient and both moments and write three of
    # them back (fp32): 28 bytes per trained parameter, whatever the kernels.
    result.extra["optimizer_bytes"] = 28 * model.trainable_parameters
    del model
    free_memory(settings.device, compiled=uses_compile(variant))
    return result


def target_for(name: str, settings: BenchSettings) -> float | None:
    """Targets are for full size on a GPU; toy runs only check that everything runs."""
    return TARGETS.get(name) if settings.size == "sd15" else None


def unet_batch(config: Any) -> int:
    """Images per UNet call of a training step."""
    prior = 2 if getattr(config, "prior_preservation", False) else 1
    fused = config.fused_micro_batches() if hasattr(config, "fused_micro_batches") else 1
    return config.batch_size * prior * fused


def bench_sampling(master: DiffusionComponents, settings: BenchSettings, batch: int, variant: str,
                   rates: dict[str, float]) -> BenchResult:
    fields = DreamBooth.Config.__dataclass_fields__
    overrides = {k: v for k, v in method_overrides(settings, 1, variant).items() if k in fields}
    config = from_dict(DreamBooth.Config, {**overrides, "guidance_scale": settings.guidance_scale}, "baselines.bench")
    components = copy.deepcopy(master).to(settings.device)
    cast([components.text_encoder, components.vae, components.unet], compute_dtype(config, settings.device))
    pipeline = sampling_pipeline(components, components.unet, config)
    sampler = functools.partial(generate_images, pipeline, config=config)  # the pipeline keeps its CUDA graphs
    prompts, seeds = ["a photo of a dog"] * batch, list(range(batch))
    reset_peak_memory(settings.device)
    synchronize(settings.device)
    start = time.perf_counter()
    sampler(prompts, seeds)  # warm-up: kernel selection, compiling, graph capture
    synchronize(settings.device)
    first_call = time.perf_counter() - start
    seconds = []
    for _ in range(settings.sample_repeats):
        synchronize(settings.device)
        start = time.perf_counter()
        sampler(prompts, seeds)
        synchronize(settings.device)
        seconds.append(time.perf_counter() - start)
    per_image = statistics.median(seconds) / batch
    name = f"sampling@{batch}"
    result = BenchResult(name=name, value=per_image, unit="s/image", batch=batch, seconds=seconds,
                         peak_memory_gb=peak_memory_gb(settings.device), target=target_for(name, settings),
                         variant=variant, extra={"first_call_s": first_call})
    if result.target is not None:
        result.meets_target = per_image <= result.target
    if countable(settings, variant):
        result.flops = count_flops(lambda: sampler(prompts, seeds)) / batch
        result.floor = result.flops / rates["matmul"]
    del sampler, pipeline, components
    free_memory(settings.device, compiled=uses_compile(variant))
    return result


def run_benchmarks(settings: BenchSettings,
                   on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """All benchmarks of all variants; returns a JSON-ready report (settings, environment,
    results). `on_result(report)` is called after each result (e.g. to save partial reports)."""
    check_settings(settings)
    began = time.perf_counter()
    master = build_components(settings)
    rates = {"matmul": matmul_rate(settings.device), "bandwidth": copy_bandwidth(settings.device)}
    import diffusers

    report: dict[str, Any] = {
        "label": LABEL, "settings": asdict(settings), "device": device_name(settings.device),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "matmul_flops_per_second": rates["matmul"], "bandwidth_bytes_per_second": rates["bandwidth"],
        "variants": {name: VARIANTS[name] for name, _ in map(parse_variant, settings.variants)},
        "results": [], "skipped": [],
        "errors": [],
    }
    if settings.attention:
        shapes = SD15_ATTENTION if settings.size == "sd15" else TINY_ATTENTION
        report["attention"] = {
            "sampling_batch8_forward": attention_table(settings.device, 8, False, shapes),
            "training_batch4_forward_backward": attention_table(settings.device, 4, True, shapes)}
    jobs = [(name, variant) for variant, only in map(parse_variant, settings.variants)
            for name in settings.benchmarks if only is None or name in only]
    with tempfile.TemporaryDirectory(prefix="varbench-bench-") as folder:
        for name, variant in jobs:
            if settings.deadline_s is not None and time.perf_counter() - began > settings.deadline_s:
                report["skipped"].append(f"{name}/{variant}")
                continue
            try:
                result = run_one(name, variant, master, settings, Path(folder) / variant / name, rates)
            except Exception as err:  # noqa: BLE001 - one broken benchmark must not lose the others
                traceback.print_exc()
                report["errors"].append(f"{name}/{variant}: {type(err).__name__}: {err}"[:500])
                free_memory(settings.device, compiled=uses_compile(variant))
                continue
            report["results"].append(asdict(result))
            fill_floors(report["results"])
            if on_result is not None:
                on_result(report)
        count_missing_flops(report, master, settings, Path(folder) / "flops", rates)
    return report


def count_missing_flops(report: dict[str, Any], master: DiffusionComponents, settings: BenchSettings,
                        folder: Path, rates: dict[str, float]) -> None:
    """FLOPs (and so floors) for benchmarks that only graphed or compiled variants ran:
    one short eager run each (the `base` options, 3 steps or one sampling call), untimed."""
    if not settings.count_flops:
        return
    short = dataclasses.replace(settings, warmup_steps=2, timed_steps=1, windows=1, sample_repeats=1)
    for name in dict.fromkeys(r["name"] for r in report["results"] if r["flops"] is None):
        try:
            counted = run_one(name, "base", master, short, folder / name, rates)
        except Exception as err:  # noqa: BLE001 - floors are optional; the timings stand
            report["errors"].append(f"{name}/FLOP count: {type(err).__name__}: {err}"[:500])
            continue
        for result in report["results"]:
            if result["name"] == name:
                result["flops"], result["floor"] = counted.flops, counted.floor
                result["extra"]["flops_counted_in"] = "a short eager run"


def run_one(name: str, variant: str, master: DiffusionComponents, settings: BenchSettings, folder: Path,
            rates: dict[str, float]) -> BenchResult:
    methods = {method.name: method for method in METHODS}
    if name in methods:
        return bench_training(methods[name], master, settings, folder, variant, rates)
    return bench_sampling(master, settings, int(name.split("@")[1]), variant, rates)


def parse_variant(spec: str) -> tuple[str, tuple[str, ...] | None]:
    """"fast" -> ("fast", None); "compiled:sampling@4,dreambooth" -> ("compiled", (...))."""
    name, _, only = spec.partition(":")
    return name, tuple(only.split(",")) if only else None


def check_settings(settings: BenchSettings) -> None:
    if settings.count_flops and settings.warmup_steps < 2:
        raise ValueError("warmup_steps must be at least 2 when FLOPs are counted (step 2 is the counted one)")
    parsed = [parse_variant(spec) for spec in settings.variants]
    unknown = [name for name, _ in parsed if name not in VARIANTS] + [
        b for b in list(settings.benchmarks) + [b for _, only in parsed for b in only or ()] if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown variant or benchmark: {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; "
                         f"benchmarks: {', '.join(BENCHMARKS)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help=f"speed-option sets to measure, in this order ({', '.join(VARIANTS)}); "
                             "NAME:BENCH,BENCH restricts one to some benchmarks. Put an eager one (base) first: "
                             "FLOPs are counted there")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--timed-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling calls per batch size")
    parser.add_argument("--sample-steps", type=int, help="denoising steps per image (default: 50; tiny: 10)")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--attention", action="store_true", help="also time the SDPA kernels on SD's shapes")
    parser.add_argument("--deadline", type=float, help="start no new benchmark after this many seconds")
    parser.add_argument("--json", type=Path, help="also write the report here (rewritten after every result)")
    args = parser.parse_args(argv)
    if not args.no_flops and args.warmup_steps < 2:
        parser.error("--warmup-steps must be at least 2 when FLOPs are counted (step 2 is the counted one)")
    settings = BenchSettings(size=args.size, device=args.device, variants=tuple(args.variants),
                             benchmarks=tuple(args.only or BENCHMARKS), warmup_steps=args.warmup_steps,
                             timed_steps=args.timed_steps, sample_repeats=args.repeats,
                             count_flops=not args.no_flops, attention=args.attention, deadline_s=args.deadline)
    try:
        check_settings(settings)
    except ValueError as err:
        parser.error(str(err))
    if args.sample_steps is not None:
        settings.sample_steps = args.sample_steps
    elif args.size == "tiny":
        settings.sample_steps = 10

    def save(report: dict[str, Any]) -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    report = run_benchmarks(settings, on_result=save)
    save(report)
    print(format_table(report))
    if "attention" in report:
        print(format_attention(report))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
