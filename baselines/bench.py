"""Speed of the diffusion baselines: a benchmark to run on a GPU, not a timed test.

At full Stable Diffusion 1.5 size with random weights (the real architecture built in
code, no download) it measures, with the methods' own `fit` code:
  - training steps per second of DreamBooth (batch 1 subject + 1 class image = 2 per
    UNet call), Custom Diffusion (2 + 2) and Textual Inversion (batch 1, 4 micro-batches
    accumulated per optimizer step; micro-steps/s is reported too);
  - 50-step DDIM sampling with CFG 7.5, seconds per image at batch 1 and 4;
each CUDA-synchronised, warm-up excluded, the median over timing windows/repeats, with
peak GPU memory, FLOPs per step/image (torch's FLOP counter) and the floor those FLOPs
imply at the measured bf16 matmul rate. Random-init weights: timings only.

    python -m baselines.bench --device cuda --json bench.json      # on the GPU box
    python -m baselines.bench --size tiny --device cpu              # a quick local check
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from baselines.common import cast, compute_dtype, generate_images, sampling_pipeline
from baselines.custom_diffusion import CustomDiffusion
from baselines.dreambooth import DreamBooth
from baselines.synthetic import synthetic_subject
from baselines.textual_inversion import TextualInversion
from varbench.config import from_dict
from varbench.method import CellContext
from varbench.models.diffusion import DiffusionComponents, sd15_components, tiny_components

LABEL = "random-init weights: timings only, not image quality"
# Targets set for one H100 (steps/s for training, s/image for sampling at batch 4).
TARGETS = {"dreambooth": 15.0, "custom_diffusion": 25.0, "textual_inversion": 25.0, "sampling@4": 0.25}
METHODS = (DreamBooth, CustomDiffusion, TextualInversion)


@dataclass
class BenchSettings:
    size: Literal["sd15", "tiny"] = "sd15"
    device: str = "cuda"
    warmup_steps: int = 10  # training steps before the clock starts (>= 2: step 2 has its FLOPs counted)
    timed_steps: int = 30  # split into `windows` equal windows; the median window rate is reported
    windows: int = 3
    sample_batches: tuple[int, ...] = (1, 4)
    sample_repeats: int = 3  # timed pipeline calls per batch size, after one warm-up call
    sample_steps: int = 50
    guidance_scale: float = 7.5
    count_flops: bool = True
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
    extra: dict[str, Any] = field(default_factory=dict)


def build_components(settings: BenchSettings) -> DiffusionComponents:
    return sd15_components(settings.seed) if settings.size == "sd15" else tiny_components(settings.seed)


def method_overrides(settings: BenchSettings, steps: int) -> dict[str, Any]:
    resolution = 512 if settings.size == "sd15" else 64
    # base_model only names the run here (`run_fit` passes the components in); few class
    # images, since their generation is setup, outside the timed windows.
    return {"base_model": "tiny" if settings.size == "tiny" else "sd15-random", "resolution": resolution,
            "steps": steps, "sample_steps": settings.sample_steps, "num_class_images": 2, "class_batch_size": 2}


def run_fit(method_class: type, master: DiffusionComponents, settings: BenchSettings, folder: Path,
            steps: int, on_step: Callable[[int, int], None] | None = None) -> Any:
    """A fresh copy of `master` fitted for `steps` steps with the method's own code."""
    config_fields = set(method_class.Config.__dataclass_fields__)
    overrides = {k: v for k, v in method_overrides(settings, steps).items() if k in config_fields}
    method = method_class(from_dict(method_class.Config, overrides, "baselines.bench"))
    components = copy.deepcopy(master).to(settings.device)
    subject = synthetic_subject(folder / "subject", count=5, size=overrides["resolution"], seed=settings.seed)
    ctx = CellContext(device=torch.device(settings.device), fit_seed=settings.seed, workdir=folder / "work",
                      cache_dir=folder / "cache", on_fit_step=on_step or (lambda done, total: None))
    model = method.fit(components, subject, ctx)
    ctx.flush_losses()
    return model


def bench_training(method_class: type, master: DiffusionComponents, settings: BenchSettings, folder: Path,
                   matmul_rate: float) -> BenchResult:
    window = max(1, settings.timed_steps // settings.windows)
    stamps: list[float] = []
    flops = StepFlopCounter(step=1) if settings.count_flops else None

    def on_step(done: int, total: int) -> None:
        if flops is not None:
            flops.on_step(done)
        # Synchronise only at window edges: the loop itself never waits for the GPU.
        if done >= settings.warmup_steps and (done - settings.warmup_steps) % window == 0:
            synchronize(settings.device)
            stamps.append(time.perf_counter())

    reset_peak_memory(settings.device)
    try:
        model = run_fit(method_class, master, settings, folder, settings.warmup_steps + window * settings.windows,
                        on_step)
    finally:
        if flops is not None:
            flops.stop()
    seconds = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    rate = window / statistics.median(seconds)
    result = BenchResult(name=method_class.name, value=rate, unit="steps/s", batch=unet_batch(model.config),
                         seconds=seconds, peak_memory_gb=peak_memory_gb(settings.device),
                         target=target_for(method_class.name, settings),
                         extra={"trainable_parameters": model.trainable_parameters})
    if result.target is not None:
        result.meets_target = rate >= result.target
    accumulation = getattr(model.config, "grad_accumulation", 1)
    if accumulation > 1:
        result.extra["micro_steps_per_second"] = rate * accumulation
    if flops is not None and flops.total:
        result.flops = float(flops.total)
        result.floor = matmul_rate / flops.total
    del model
    free_memory(settings.device)
    return result


class StepFlopCounter:
    """Counts the FLOPs of training step `step + 1` only, from the fit's step callback
    (entered after step `step`, left after the next one), so no extra fit is needed.
    The counted step is a warm-up step: counting slows it down."""

    def __init__(self, step: int):
        from torch.utils.flop_counter import FlopCounterMode

        self.step = step
        self.counter = FlopCounterMode(display=False)
        self.active = False
        self.total = 0

    def on_step(self, done: int) -> None:
        if done == self.step:
            self.counter.__enter__()
            self.active = True
        elif done == self.step + 1:
            self.stop()

    def stop(self) -> None:
        if self.active:
            self.counter.__exit__(None, None, None)
            self.active = False
            self.total = int(self.counter.get_total_flops())


def target_for(name: str, settings: BenchSettings) -> float | None:
    """Targets are for full size on a GPU; toy runs only check that everything runs."""
    return TARGETS.get(name) if settings.size == "sd15" else None


def unet_batch(config: Any) -> int:
    prior = 2 if getattr(config, "prior_preservation", False) else 1
    return config.batch_size * prior


def bench_sampling(master: DiffusionComponents, settings: BenchSettings, matmul_rate: float) -> list[BenchResult]:
    config = from_dict(DreamBooth.Config, {**method_overrides(settings, 1), "guidance_scale": settings.guidance_scale},
                       "baselines.bench")
    components = copy.deepcopy(master).to(settings.device)
    cast([components.text_encoder, components.vae, components.unet], compute_dtype(config, settings.device))
    pipeline = sampling_pipeline(components, components.unet, config)
    results = []
    for batch in settings.sample_batches:
        prompts, seeds = ["a photo of a dog"] * batch, list(range(batch))
        reset_peak_memory(settings.device)
        generate_images(pipeline, prompts, seeds, config)  # warm-up: kernel selection, caches
        seconds = []
        for _ in range(settings.sample_repeats):
            synchronize(settings.device)
            start = time.perf_counter()
            generate_images(pipeline, prompts, seeds, config)
            synchronize(settings.device)
            seconds.append(time.perf_counter() - start)
        per_image = statistics.median(seconds) / batch
        name = f"sampling@{batch}"
        result = BenchResult(name=name, value=per_image, unit="s/image", batch=batch, seconds=seconds,
                             peak_memory_gb=peak_memory_gb(settings.device), target=target_for(name, settings))
        if result.target is not None:
            result.meets_target = per_image <= result.target
        if settings.count_flops:
            result.flops = count_flops(lambda: generate_images(pipeline, prompts, seeds, config)) / batch
            result.floor = result.flops / matmul_rate
        results.append(result)
    return results


def run_benchmarks(settings: BenchSettings) -> dict[str, Any]:
    """All benchmarks; returns a JSON-ready report (settings, environment, results)."""
    if settings.count_flops and settings.warmup_steps < 2:
        raise ValueError("warmup_steps must be at least 2 when FLOPs are counted (step 2 is the counted one)")
    master = build_components(settings)
    rate = matmul_rate(settings.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="varbench-bench-") as folder:
        for method_class in METHODS:
            results.append(bench_training(method_class, master, settings, Path(folder) / method_class.name, rate))
        results.extend(bench_sampling(master, settings, rate))
        free_memory(settings.device)
    import diffusers

    return {
        "label": LABEL,
        "settings": asdict(settings),
        "device": device_name(settings.device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "matmul_flops_per_second": rate,
        "results": [asdict(r) for r in results],
    }


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'benchmark':<18} {'batch':>5} {'value':>10} {'unit':<8} {'floor':>10} {'target':>7} {'ok':>4} "
              f"{'peak GB':>8}")
    lines = [f"Diffusion baselines on {report['device']} ({report['label']})", header]
    for r in report["results"]:
        floor = f"{r['floor']:.3g}" if r["floor"] is not None else "-"
        target = f"{r['target']:g}" if r["target"] is not None else "-"
        ok = {True: "yes", False: "no", None: "-"}[r["meets_target"]]
        peak = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "-"
        lines.append(f"{r['name']:<18} {r['batch']:>5} {r['value']:>10.4g} {r['unit']:<8} {floor:>10} {target:>7} "
                     f"{ok:>4} {peak:>8}")
    return "\n".join(lines)


# --- device helpers ----------------------------------------------------------------------

def is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def reset_peak_memory(device: str) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if is_cuda(device) else None


def free_memory(device: str) -> None:
    if is_cuda(device):
        import gc

        gc.collect()  # drop the last cell's tensors before the next one allocates
        torch.cuda.empty_cache()


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if is_cuda(device) else "cpu"


def matmul_rate(device: str) -> float:
    """Measured dense matmul FLOP/s: bf16 8192^2 on CUDA, fp32 1024^2 on the CPU."""
    size, dtype = (8192, torch.bfloat16) if is_cuda(device) else (1024, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    repeats = 20 if is_cuda(device) else 3
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def count_flops(function) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--timed-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling calls per batch size")
    parser.add_argument("--sample-steps", type=int, help="denoising steps per image (default: 50; tiny: 10)")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not args.no_flops and args.warmup_steps < 2:
        parser.error("--warmup-steps must be at least 2 when FLOPs are counted (step 2 is the counted one)")
    settings = BenchSettings(size=args.size, device=args.device, warmup_steps=args.warmup_steps,
                             timed_steps=args.timed_steps, sample_repeats=args.repeats, count_flops=not args.no_flops)
    if args.sample_steps is not None:
        settings.sample_steps = args.sample_steps
    elif args.size == "tiny":
        settings.sample_steps = 10
    report = run_benchmarks(settings)
    print(format_table(report))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
