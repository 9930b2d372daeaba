"""Speed of DreamBooth-LoRA and IP-Adapter in each model family (SD 1.5, SDXL, SD3 Medium,
FLUX.1-dev): a benchmark to run on a GPU, not a timed test.

At full size the families are their real architectures with random weights, built in
code directly on the GPU in bf16 (`varbench.models.families.random_family`: FLUX's 12 B
transformer and T5-XXL take seconds, never passing through host memory; SD 1.5, 1 B
parameters, is built on the host as `sd15_components` builds it, then cast); at tiny size
the toy families of the tests (`--size tiny`, a quick CPU check). Everything runs through
the methods' own code (`Method.load_base`, `fit`, the fitted model's `generate`, i.e.
`baselines.train_dreambooth_lora` and `baselines.family_sampling`), at each family's
default config (`random_weights` / `tiny_config` of the method, nothing else changed).

What is timed, per family:
  - `dreambooth_lora <family> step` (steps/s): `DreamBoothLora.fit` for warm-up + timed
    optimizer steps at the family's defaults (batch 4 subject photos, prior preservation
    off, its resolution; FLUX.1-dev with gradient checkpointing, as the protocols run it
    on one 80 GB card, the row then says so). Building the model, encoding the photos
    and prompts and adding the adapters precede step 1; steps 1-2 are warm-up (step 2 is
    FLOP-counted with torch's FlopCounterMode), then the timed steps (full: 6) in equal
    windows (full: 3 of 2 steps), CUDA-synchronised only at window edges; the value is
    the median window rate. A family whose default runs out of memory gets an error row
    and is measured again with gradient checkpointing. On a GPU each family's fit runs
    twice, on a fresh base each time: first eager (`... step (eager)`: no CUDA graphs, no
    NHWC weights, no one-pass q/k/v, no compile; FLOP-counted), then under the method's
    defaults (CUDA graphs, NHWC UNet weights, one-pass q/k/v, and compiled where a
    DreamBench worker's 30 cells pay for it: `COMPILE_PAYS_AFTER`; baselines/fast/),
    whose row takes the eager count (a replayed or compiled step is invisible to the
    counter). Both take the family's `cudnn_attention` (off for FLUX.1-dev only). A
    checkpointed transformer that the defaults leave uncompiled runs once. A speed option
    that fell back is named in the row's extras.
  - `dreambooth_lora <family> sampling@B` (s/image): the first fit's model's `generate` (the
    adapters active, as the method samples) at the config's sampler, steps, guidance and
    resolution, B prompts per call: 1 warm-up call, then 2 timed calls (full),
    CUDA-synchronised; the value is the median call time / B. On a GPU twice: eager
    (`... (eager)`, its warm-up call FLOP-counted), then under the method's defaults (the
    denoiser's steps replayed as CUDA graphs, kept between calls; an `auto` compile field
    settled as a DreamBench worker settles it; the eager count). `--sampling-variants
    compiled` adds `compile_generation: true`. `--cells N` (with one `--step-variants`
    variant) fits it N times, each on a fresh base in the one process, and each later fit
    samples again (rows named `... [cell k]`): what a protocol worker's later cells pay for
    compiling once dynamo's and inductor's caches are warm (their `first_step_s`,
    `first_call_s`).
  - `ip_adapter <family> sampling@B` (s/image), for the families IP-Adapter supports:
    `IPAdapter.load_base` (its random stand-in adapter and the release's CLIP vision
    tower at full size with random weights, as the method's `weights: random` builds
    them), `fit` (encoding the reference photo: untimed), then `generate` as above.
B is 1 and the protocols' default generation batch (4). A batch above 1 is skipped
(listed under `skipped`) when the batch-1 time predicts it would take the run past
`budget_s` (full: 390 s; FLUX.1-dev's IP-Adapter samples at 1024 px with true CFG: two
12 B transformer passes per step; the prediction adds the batch-1 first call's one-time
capture and compile, which a new batch size pays again). The fits and batch-1 calls are
never skipped. The defaults compile where a 30-cell worker would (every family's fit and
sampling: one to seven minutes per compiled fit or sampling batch size; SDXL's fit 6.6),
so one family can take more than a 10-minute call: run one family per call (`--families`),
per method (`--methods`), or a fit's rows and the sampling apart (`--step-variants`,
`--batches`; SDXL's eager and default fits apart).

Families run smallest first (SD 1.5, SDXL, SD3, FLUX.1-dev); each method's models are
freed (gc + torch.cuda.empty_cache) before the next are built. A benchmark that fails
(e.g. out of memory) is an error entry; the others still run. Peak memory is the
allocator's peak over the measurement, resident weights included. Random-init weights:
timings only.

    python -m baselines.family_bench --size full --device cuda --json family_bench.json
    python -m baselines.family_bench --size tiny --device cpu --families sd15,flux
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from baselines.bench_device import (
    StepFlopCounter,
    count_flops,
    device_name,
    free_memory,
    is_cuda,
    peak_memory_gb,
    reset_peak_memory,
    synchronize,
)
from baselines.dreambooth_lora import DreamBoothLora
from baselines.ip_adapter import IPAdapter
from baselines.synthetic import synthetic_subject
from varbench.execution import settle_auto
from varbench.method import CellContext
from varbench.models.families import FAMILIES
from varbench.schema import from_dict
from varbench.timing import matmul_rate

LABEL = "random-init weights: timings only, not image quality"
FAMILY_ORDER = ("sd15", "sdxl", "sd3", "flux")  # smallest first: FLUX.1-dev (12 B + T5-XXL) last
# Trained with gradient checkpointing at their default config: FLUX.1-dev's LoRA fit does
# not fit one 80 GB card without it (protocols/dreambench.yaml and vico_live.yaml set it).
CHECKPOINTED = frozenset({"flux"})
DEFAULT_BATCH = 4  # the protocols' default generation batch (execution.batch_size)
SUBJECT_PHOTOS = 5  # DreamBench subjects have 4-6
LORA_PROMPT = "a photo of sks dog in the snow"  # the subject phrase and a prompt as the protocols write them
IP_PROMPT = "a photo of dog in the snow"  # IP-Adapter prompts name the plain class


@dataclass
class FamilyBenchSettings:
    size: Literal["full", "tiny"] = "full"
    device: str = "cuda"
    families: tuple[str, ...] = FAMILY_ORDER
    warmup_steps: int = 2  # >= 2: step 2 is the FLOP-counted one
    timed_steps: int = 6  # in `windows` equal windows; the median window rate is reported
    windows: int = 3
    sample_repeats: int = 2  # timed generate calls per batch, after one warm-up call
    batches: tuple[int, ...] = (1, DEFAULT_BATCH)
    sample_steps: int | None = None  # None: the method's default (the family's)
    count_flops: bool = True
    budget_s: float | None = 390.0  # skip a batch > 1 that would end past this; None: no limit
    cache_dir: str | None = None  # IP-Adapter stand-ins (built once per base); None: a temp folder
    step_variants: tuple[str, ...] | None = None  # fits per family (STEP_VARIANTS); None: see variants_to_fit()
    # DreamBooth-LoRA's sampling under each (STEP_VARIANTS' options); None: eager and default on a GPU
    sampling_variants: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ("dreambooth_lora", "ip_adapter")
    seed: int = 0
    # DreamBooth-LoRA fits per step variant, each on a fresh base in this one process, as a
    # protocol worker runs its cells: the later cells' first step and first sampling call
    # show what compiling costs again once dynamo's and inductor's caches are warm
    cells: int = 1

    @classmethod
    def for_size(cls, size: str, device: str, **overrides: Any) -> FamilyBenchSettings:
        """The defaults of `size`: full on a GPU; tiny small enough for a CPU test."""
        tiny = dict(timed_steps=2, windows=2, sample_repeats=1, batches=(1, 2), budget_s=None)
        base = cls(size=size, device=device, **(tiny if size == "tiny" else {}))  # type: ignore[arg-type]
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# The fit (and sampling) under the method's default speed options, and eager (no graphs,
# NHWC weights, one-pass q/k/v or compile: the before of each family's before/after pair;
# cuDNN attention at the family's default). Opt-in (--step-variants / --sampling-variants):
# `graphs` (the defaults without compiling), `compiled` (the denoiser compiled too, in the
# fit and in sampling), `cudnn` / `flash` (SDPA's cuDNN kernel allowed / not in the fit),
# `qkv` / `noqkv` (a UNet's self-attention LoRA q/k/v in one pass / as peft's three, in the
# fit); joined with "+" they combine, e.g. `graphs+flash`.
STEP_VARIANTS = {"default": {},
                 "eager": {"cuda_graphs": False, "compile": False, "channels_last": False, "compile_generation": False,
                           "fuse_lora_qkv": False},
                 "graphs": {"compile": False, "compile_generation": False},
                 "compiled": {"compile": True, "compile_generation": True},
                 "cudnn": {"cudnn_attention": True},
                 "flash": {"cudnn_attention": False},
                 "qkv": {"fuse_lora_qkv": True},
                 "noqkv": {"fuse_lora_qkv": False}}
# How a protocol worker settles the defaults' `auto` compile fields: one GPU running a
# DreamBench arm's 30 cells (execution.settle_auto).
WORKER_CELLS = 30


def step_name(family: str, checkpointing: bool, variant: str = "default") -> str:
    return (f"dreambooth_lora {family} step" + (" (gradient checkpointing)" if checkpointing else "")
            + ("" if variant == "default" else f" ({variant})"))


def sampling_name(method: str, family: str, batch: int, variant: str = "default") -> str:
    return f"{method} {family} sampling@{batch}" + ("" if variant == "default" else f" ({variant})")


def variant_options(variant: str) -> dict[str, Any]:
    """DreamBooth-LoRA's speed options under `variant`: its defaults, changed as STEP_VARIANTS
    says ("auto" left as it is: `settled` decides it)."""
    names = {name for options in STEP_VARIANTS.values() for name in options}
    return {**{name: getattr(DreamBoothLora.Config, name) for name in sorted(names)}, **variant_changes(variant)}


def variant_changes(variant: str) -> dict[str, Any]:
    """The speed options `variant` changes: its parts' (joined by "+"), later parts winning."""
    return {name: value for part in variant.split("+") for name, value in STEP_VARIANTS[part].items()}


def settled(config: Any, method_class: type = DreamBoothLora) -> Any:
    """`config` with its `auto` compile fields decided as a protocol worker would (WORKER_CELLS)."""
    return settle_auto(config, WORKER_CELLS, method_class.compile_break_even(config))


# --- running one method of one family -------------------------------------------------------

def make_method(method_class: type, family: str, settings: FamilyBenchSettings, **overrides: Any) -> Any:
    """`method_class` on `family` at its defaults, with random weights at full size
    (`random_weights`) or its tiny parts (`tiny_config`: 64 px, few sampler steps)."""
    weights = method_class.random_weights if settings.size == "full" else method_class.tiny_config
    values = {"base_model": family, **weights, **overrides}
    if settings.sample_steps is not None:
        values["sample_steps"] = settings.sample_steps
    fields = method_class.Config.__dataclass_fields__
    config = from_dict(method_class.Config, {k: v for k, v in values.items() if k in fields}, "baselines.family_bench")
    return method_class(settled(config, method_class))


def make_context(settings: FamilyBenchSettings, folder: Path, cache: Path,
                 on_step: Callable[[int, int], None] | None = None) -> CellContext:
    return CellContext(device=torch.device(settings.device), fit_seed=settings.seed, workdir=folder / "work",
                       cache_dir=cache, on_fit_step=on_step or (lambda done, total: None))


def subject_of(settings: FamilyBenchSettings, folder: Path, resolution: int) -> Any:
    return synthetic_subject(folder / "subject", count=SUBJECT_PHOTOS, size=resolution, seed=settings.seed)


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:500]


def fallback_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    """The speed options that failed and fell back (each warns once): a row must say it
    ran without them. Printed too."""
    messages = [str(w.message) for w in caught
                if issubclass(w.category, RuntimeWarning) and "failed" in str(w.message)]
    for message in messages:
        print(f"warning: {message}", flush=True)
    return messages


@dataclass
class Fitted:
    """A timed DreamBooth-LoRA fit: its result entry and the fitted model (to sample with)."""

    result: dict[str, Any]
    model: Any = None


def bench_lora_fit(family: str, settings: FamilyBenchSettings, folder: Path, cache: Path,
                   checkpointing: bool, variant: str = "default", count: bool = True, **overrides: Any) -> Fitted:
    """The method's fit for warm-up + timed steps, timed in windows from its step callback,
    under the speed options of `variant`; its FLOPs counted when `count` (a step replayed
    as CUDA graphs is invisible to the counter: count a variant without graphs)."""
    window = max(1, settings.timed_steps // settings.windows)
    steps = settings.warmup_steps + window * settings.windows
    stamps: list[float] = []
    started: list[float] = []
    first_step: list[float] = []
    flops = StepFlopCounter(step=1) if settings.count_flops and count else None

    def on_step(done: int, total: int) -> None:
        if flops is not None:
            flops.on_step(done)
        if done == 1:  # encoding the photos and prompts, adding the adapters, step 1
            synchronize(settings.device)
            first_step.append(time.perf_counter() - started[0])
        if done >= settings.warmup_steps and (done - settings.warmup_steps) % window == 0:
            synchronize(settings.device)  # window edges only: the loop itself never waits
            stamps.append(time.perf_counter())

    method = make_method(DreamBoothLora, family, settings, steps=steps, gradient_checkpointing=checkpointing,
                         **{**variant_changes(variant), **overrides})
    config = method.config
    ctx = make_context(settings, folder, cache, on_step)
    build = time.perf_counter()
    base = method.load_base(ctx)
    synchronize(settings.device)
    build_s = time.perf_counter() - build
    subject = subject_of(settings, folder, config.resolution)
    reset_peak_memory(settings.device)
    started.append(time.perf_counter())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            model = method.fit(base, subject, ctx)
        ctx.flush_losses()
    finally:
        if flops is not None:
            flops.stop()
    fallbacks = fallback_messages(caught)
    seconds = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    rate = window / statistics.median(seconds)
    result = {
        "name": step_name(family, checkpointing, variant), "method": DreamBoothLora.name, "family": family,
        "kind": "step", "variant": variant,
        "value": rate, "unit": "steps/s", "batch": config.batch_size * (2 if config.prior_preservation else 1),
        "seconds": seconds, "flops": float(flops.total) if flops is not None and flops.total else None,
        "peak_memory_gib": peak_memory_gb(settings.device), "steps": steps,
        "extra": {"resolution": config.resolution, "batch_size": config.batch_size,
                  "prior_preservation": config.prior_preservation, "rank": config.rank,
                  "gradient_checkpointing": checkpointing, "cuda_graphs": config.cuda_graphs,
                  "compile": config.compile, "channels_last": config.channels_last,
                  "cudnn_attention": config.cudnn_attention, "fuse_lora_qkv": config.fuse_lora_qkv,
                  "fallbacks": fallbacks,
                  "trainable_parameters": model.trainable_parameters,
                  "build_s": build_s, "first_step_s": first_step[0], "steps_per_window": window}}
    return Fitted(result, model)


def bench_sampling(model: Any, method: str, family: str, batch: int, prompt: str,
                   settings: FamilyBenchSettings, variant: str | None = None) -> dict[str, Any]:
    """`model.generate` on `batch` prompts: one warm-up call (FLOPs counted there when the
    counter sees the denoiser: no graphs, not compiled), then the timed calls; seconds per
    image = median call / batch. A `variant` sets the model's speed options (DreamBooth-LoRA)."""
    if variant is not None:
        model.config = settled(replace(model.config, **variant_options(variant)))
    config = model.config
    visible = not is_cuda(settings.device) or not (getattr(config, "cuda_graphs", False) is True
                                                   or getattr(config, "compile_generation", False) is True)
    prompts, seeds = [prompt] * batch, list(range(batch))
    reset_peak_memory(settings.device)
    synchronize(settings.device)
    start = time.perf_counter()
    flops = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if settings.count_flops and visible:
            flops = count_flops(lambda: model.generate(prompts, seeds)) / batch
        else:
            model.generate(prompts, seeds)
        synchronize(settings.device)
        first_call = time.perf_counter() - start
        seconds = []
        for _ in range(settings.sample_repeats):
            synchronize(settings.device)
            start = time.perf_counter()
            images = model.generate(prompts, seeds)
            synchronize(settings.device)
            seconds.append(time.perf_counter() - start)
    fallbacks = fallback_messages(caught)
    if len(images) != batch:
        raise RuntimeError(f"generate returned {len(images)} images for {batch} prompts")
    extra = {"resolution": config.resolution, "sample_steps": config.sample_steps, "sampler": config.sampler,
             "guidance_scale": config.guidance_scale, "first_call_s": first_call}
    if getattr(config, "true_cfg_scale", None) is not None:
        extra["true_cfg_scale"] = config.true_cfg_scale
    if variant is not None:
        extra.update(variant=variant, cuda_graphs=config.cuda_graphs, compile_generation=config.compile_generation,
                     fallbacks=fallbacks)
    return {"name": sampling_name(method, family, batch, variant or "default"), "method": method, "family": family,
            "kind": "sampling", "value": statistics.median(seconds) / batch, "unit": "s/image", "batch": batch,
            "seconds": seconds,
            "flops": flops or None, "peak_memory_gib": peak_memory_gb(settings.device), "extra": extra}


# --- the run ----------------------------------------------------------------------------------

class Run:
    """The report being filled, the clock and the budget."""

    def __init__(self, settings: FamilyBenchSettings, on_result: Callable[[dict[str, Any]], None] | None):
        import diffusers

        self.settings, self.on_result = settings, on_result
        self.began = time.perf_counter()
        self.report: dict[str, Any] = {
            "label": LABEL, "settings": asdict(settings), "device": device_name(settings.device),
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "matmul_flops_per_second": matmul_rate(settings.device), "results": [], "errors": [], "skipped": []}

    def add(self, result: dict[str, Any]) -> None:
        rate = self.report["matmul_flops_per_second"]
        flops = result["flops"]
        result["floor"] = (rate / flops if result["unit"].endswith("/s") else flops / rate) if flops else None
        self.report["results"].append(result)
        self.saved()

    def error(self, name: str, message: str) -> None:
        self.report["errors"].append({"name": name, "error": message})
        self.saved()

    def saved(self) -> None:
        self.report["seconds"] = time.perf_counter() - self.began
        if self.on_result is not None:
            self.on_result(self.report)

    def fits_budget(self, name: str, per_image_at_1: float | None, batch: int, once_s: float = 0.0) -> bool:
        """Whether a batch > 1 measurement, predicted from the batch-1 time (warm-up + timed
        calls, plus `once_s`: the batch-1 first call's one-time work, capturing and compiling,
        which a new batch size pays again), ends within the budget; else it is listed as skipped."""
        budget = self.settings.budget_s
        if batch == 1 or budget is None or per_image_at_1 is None:
            return True
        predicted = 1.1 * (per_image_at_1 * batch * (1 + self.settings.sample_repeats) + once_s)
        elapsed = time.perf_counter() - self.began
        if elapsed + predicted <= budget:
            return True
        self.report["skipped"].append({"name": name, "reason": f"predicted {predicted:.0f} s at {elapsed:.0f} s "
                                                               f"would pass the {budget:.0f} s budget"})
        self.saved()
        return False

    def sample_all(self, model: Any, method: str, family: str, prompt: str, variant: str | None = None,
                   cell: int = 1) -> None:
        at_1, once_s = None, 0.0
        for batch in sorted(self.settings.batches):
            name = sampling_name(method, family, batch, variant or "default") + cell_suffix(cell)
            if not self.fits_budget(name, at_1, batch, once_s):
                continue
            try:
                result = bench_sampling(model, method, family, batch, prompt, self.settings, variant)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory at a large batch
                traceback.print_exc()
                self.error(name, describe(err))
                continue
            finally:
                free_memory(self.settings.device)
            if batch == 1:
                at_1, once_s = result["value"], max(0.0, result["extra"]["first_call_s"] - result["value"])
            in_cell(result, cell)
            if result["flops"] is None:  # replayed or compiled: the counted FLOPs of the same images
                result["flops"] = self.counted_flops(method, family, batch)
            self.add(result)

    def counted_flops(self, method: str, family: str, batch: int) -> float | None:
        counted = [r["flops"] for r in self.report["results"] if r["kind"] == "sampling" and r["flops"]
                   and (r["method"], r["family"], r["batch"]) == (method, family, batch)]
        return counted[0] if counted else None


def run_family_bench(settings: FamilyBenchSettings,
                     on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every family of `settings` in FAMILY_ORDER; returns a JSON-ready report (settings,
    environment, results, errors, skipped). `on_result(report)` after each entry."""
    check_settings(settings)
    run = Run(settings, on_result)
    with tempfile.TemporaryDirectory(prefix="varbench-family-bench-") as tmp:
        cache = Path(settings.cache_dir) if settings.cache_dir else Path(tmp) / "cache"
        for family in [f for f in FAMILY_ORDER if f in settings.families]:
            if DreamBoothLora.name in settings.methods:
                bench_lora(run, family, Path(tmp) / family / "lora", cache)
                free_memory(settings.device)
            if IPAdapter.name in settings.methods and family in IPAdapter.families:
                bench_ip_adapter(run, family, Path(tmp) / family / "ip_adapter", cache)
                free_memory(settings.device)
    run.saved()
    return run.report


def bench_lora(run: Run, family: str, folder: Path, cache: Path) -> None:
    """The fit's steps/s under each variant (`variants_to_fit`: eager, then the method's
    defaults), each on a fresh base; then sampling with the first fit's model, under each
    sampling variant (its speed options set on that model), and with each later cell's
    (`cells`: one step variant, fitted again). FLOPs are counted on a fit the
    counter sees (no graphs, no compile) and given to every fit of the same checkpointing.
    Out of memory: an error entry, and that fit again with gradient checkpointing."""
    settings = run.settings
    checkpointing = family in CHECKPOINTED
    flops: dict[bool, float] = {}  # gradient checkpointing -> the counted FLOPs of a step
    sampled = False
    for variant in settings.step_variants or variants_to_fit(family, checkpointing, settings.device):
        if not settings.step_variants and variant not in variants_to_fit(family, checkpointing, settings.device):
            continue  # a retry with checkpointing made it the computation just measured
        for cell in range(1, settings.cells + 1):
            free_memory(settings.device)
            fitted, checkpointing = fit_or_retry(run, family, folder / variant / f"cell{cell}", cache, checkpointing,
                                                 variant, set(flops), cell)
            if fitted is None:
                break
            if fitted.result["flops"]:
                flops.setdefault(checkpointing, fitted.result["flops"])
            fitted.result["flops"] = flops.get(checkpointing)
            run.add(in_cell(fitted.result, cell))
            if not sampled or cell > 1:  # each later cell samples again: its own first calls
                for sampling in settings.sampling_variants or sampling_variants(settings.device):
                    run.sample_all(fitted.model, DreamBoothLora.name, family, LORA_PROMPT, sampling, cell)
                sampled = True
            fitted = None  # (frees the model before the next base is built)
    if not sampled:
        for batch in settings.batches:
            run.error(sampling_name(DreamBoothLora.name, family, batch), "not measured: no fit succeeded")


def cell_suffix(cell: int) -> str:
    """What names a row of a worker's `cell`-th cell (the first: nothing)."""
    return f" [cell {cell}]" if cell > 1 else ""


def in_cell(result: dict[str, Any], cell: int) -> dict[str, Any]:
    """`result`, named and marked as measured in a worker's `cell`-th cell (the first: unchanged)."""
    if cell > 1:
        result["name"] += cell_suffix(cell)
        result["extra"]["cell"] = cell
    return result


def sampling_variants(device: str) -> list[str]:
    """eager then default on a GPU (the speed options change nothing on the CPU)."""
    return ["eager", "default"] if is_cuda(device) else ["default"]


def variants_to_fit(family: str, checkpointing: bool, device: str) -> list[str]:
    """eager then default; default alone where the speed layer leaves the step as it is (the
    CPU, or a transformer trained with checkpointing, which has no graphs or NHWC weights,
    and whose defaults a 30-cell worker does not compile)."""
    defaults = default_config(family)
    transformer = FAMILIES[family].denoiser == "transformer"
    no_change = not is_cuda(device) or (transformer and checkpointing and not defaults.compile)
    return ["default"] if no_change else ["eager", "default"]


def default_config(family: str) -> Any:
    """DreamBooth-LoRA's config on `family` at its defaults, `auto` settled as a worker's."""
    return settled(DreamBoothLora.Config(base_model=family))


def flops_visible(family: str, variant: str, checkpointing: bool, device: str) -> bool:
    """Whether the FLOP counter sees this variant's step: not replayed as CUDA graphs (which
    gradient checkpointing turns off), not compiled."""
    defaults = default_config(family)
    options = {"cuda_graphs": defaults.cuda_graphs, "compile": defaults.compile, **variant_changes(variant)}
    graphs = options["cuda_graphs"] and not checkpointing
    return not is_cuda(device) or not (graphs or options["compile"])


def fit_or_retry(run: Run, family: str, folder: Path, cache: Path, checkpointing: bool, variant: str,
                 counted: set[bool], cell: int = 1) -> tuple[Fitted | None, bool]:
    """`bench_lora_fit`, and again with gradient checkpointing if it ran out of memory
    without; returns the fit (None if it failed: an error entry) and the checkpointing used.
    FLOPs are counted where the counter sees the step and none were counted yet for that
    checkpointing (`counted`)."""
    settings = run.settings

    def fit(subfolder: Path, checkpointed: bool) -> Fitted:
        count = checkpointed not in counted and flops_visible(family, variant, checkpointed, settings.device)
        return bench_lora_fit(family, settings, subfolder, cache, checkpointed, variant, count)

    failure = None
    try:
        return fit(folder, checkpointing), checkpointing
    except Exception as err:  # noqa: BLE001 - one family's failure must not lose the others
        traceback.print_exc()
        failure = (is_out_of_memory(err), describe(err))
    # (outside the except block: the traceback no longer holds the model)
    run.error(step_name(family, checkpointing, variant) + cell_suffix(cell), failure[1])
    free_memory(settings.device)
    if not failure[0] or checkpointing:
        return None, checkpointing
    try:
        return fit(folder / "checkpointed", True), True
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        run.error(step_name(family, True, variant) + cell_suffix(cell), describe(err))
    return None, True


def bench_ip_adapter(run: Run, family: str, folder: Path, cache: Path) -> None:
    """IP-Adapter's base (family, stand-in adapter, image encoder) and its fit (encoding the
    reference), then sampling; a failure before sampling is an error entry per batch."""
    model, failure = None, None
    try:
        model, setup = ip_adapter_model(family, run.settings, folder, cache)
    except Exception as err:  # noqa: BLE001 - one family's failure must not lose the others
        traceback.print_exc()
        failure = describe(err)
    if model is None:
        for batch in run.settings.batches:
            run.error(sampling_name(IPAdapter.name, family, batch), f"not measured: {failure}")
        return
    count = len(run.report["results"])
    run.sample_all(model, IPAdapter.name, family, IP_PROMPT)
    for result in run.report["results"][count:]:
        result["extra"].update(setup)


def ip_adapter_model(family: str, settings: FamilyBenchSettings, folder: Path, cache: Path) -> tuple[Any, dict]:
    """The method's `load_base` and `fit` (untimed setup; their seconds go in the rows' extras)."""
    method = make_method(IPAdapter, family, settings)
    ctx = make_context(settings, folder, cache)
    start = time.perf_counter()
    base = method.load_base(ctx)
    synchronize(settings.device)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    model = method.fit(base, subject_of(settings, folder, method.config.resolution), ctx)
    synchronize(settings.device)
    return model, {"build_s": build_s, "encode_s": time.perf_counter() - start, "scale": method.config.scale,
                   "num_references": method.config.num_references}


def check_settings(settings: FamilyBenchSettings) -> None:
    if settings.size not in ("full", "tiny"):
        raise ValueError(f"size is {settings.size!r}: use full or tiny")
    unknown = [f for f in settings.families if f not in FAMILY_ORDER]
    if unknown:
        raise ValueError(f"unknown family {', '.join(unknown)}: use {', '.join(FAMILY_ORDER)}")
    if settings.count_flops and settings.warmup_steps < 2:
        raise ValueError("warmup_steps must be at least 2 when FLOPs are counted (step 2 is the counted one)")
    if settings.timed_steps < settings.windows or settings.windows < 1:
        raise ValueError("timed_steps must be at least windows (>= 1)")
    unknown_methods = [m for m in settings.methods if m not in (DreamBoothLora.name, IPAdapter.name)]
    if unknown_methods or not settings.methods:
        raise ValueError(f"methods are {', '.join(settings.methods) or 'none'}: use dreambooth_lora, ip_adapter")
    unknown_variants = [v for v in (settings.step_variants or ()) + (settings.sampling_variants or ())
                        if any(part not in STEP_VARIANTS for part in v.split("+"))]
    if unknown_variants:
        raise ValueError(f"unknown step or sampling variant {', '.join(unknown_variants)}: "
                         f"use {', '.join(STEP_VARIANTS)}, or several joined by +")
    if settings.cells < 1:
        raise ValueError("cells must be at least 1")
    if settings.cells > 1 and len(settings.step_variants or ()) != 1:
        # later cells sample again: with several variants, whose model is the second cell's?
        raise ValueError("cells above 1 need exactly one step variant (--step-variants)")
    if settings.sample_repeats < 1 or not settings.batches or min(settings.batches) < 1:
        raise ValueError("sample_repeats and every batch must be at least 1")


def format_table(report: dict[str, Any]) -> str:
    lines = [f"DreamBooth-LoRA and IP-Adapter per family on {report['device']} ({report['label']})",
             f"{'benchmark':<48} {'value':>10} {'unit':<8} {'floor':>10} {'%floor':>7} {'peak GiB':>9}"]
    for r in report["results"]:
        floor = r["floor"]
        fraction = None if floor is None else (r["value"] / floor if r["unit"].endswith("/s") else floor / r["value"])
        lines.append(f"{r['name']:<48} {r['value']:>10.4g} {r['unit']:<8} "
                     f"{'' if floor is None else format(floor, '.4g'):>10} "
                     f"{'' if fraction is None else format(fraction, '.0%'):>7} "
                     f"{'' if r['peak_memory_gib'] is None else format(r['peak_memory_gib'], '.1f'):>9}")
    lines += [f"error: {e['name']}: {e['error']}" for e in report["errors"]]
    lines += [f"skipped: {s['name']}: {s['reason']}" for s in report["skipped"]]
    lines.append(f"total {report.get('seconds', 0):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--families", default=",".join(FAMILY_ORDER),
                        help="comma-separated, run in the order sd15, sdxl, sd3, flux whatever the order given")
    parser.add_argument("--json", type=Path, help="also write the report here (rewritten after every entry)")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--timed-steps", type=int)
    parser.add_argument("--windows", type=int)
    parser.add_argument("--repeats", type=int, help="timed generate calls per batch (after one warm-up call)")
    parser.add_argument("--batches", help="comma-separated prompts per generate call (full: 1,4; tiny: 1,2)")
    parser.add_argument("--sample-steps", type=int, help="denoising steps per image (default: the method's)")
    parser.add_argument("--budget", type=float, help="seconds: skip a batch > 1 that would end later "
                                                     "(full: 390; 0: no limit)")
    parser.add_argument("--cache-dir", help="keep the IP-Adapter stand-ins here between runs")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--cells", type=int, help="DreamBooth-LoRA fits of the one --step-variants variant on fresh "
                                                  "bases in this process, each sampling again: what a worker's "
                                                  "later cells pay")
    parser.add_argument("--methods", default="dreambooth_lora,ip_adapter", help="comma-separated: which to measure")
    parser.add_argument("--step-variants", help="comma-separated fits per family, FLOPs counted where no graph "
                                                f"hides them: {', '.join(STEP_VARIANTS)}, or several joined by + "
                                                "(default: eager,default on a GPU)")
    parser.add_argument("--sampling-variants", help="comma-separated speed options DreamBooth-LoRA samples under "
                                                    f"(the first fit's model; with --cells, each later fit's too): "
                                                    f"{', '.join(STEP_VARIANTS)}, or several joined by + (cudnn "
                                                    "and qkv change only fits) (default: eager,default on a GPU)")
    args = parser.parse_args(argv)
    settings = FamilyBenchSettings.for_size(
        args.size, args.device, families=tuple(f for f in args.families.split(",") if f),
        warmup_steps=args.warmup_steps, timed_steps=args.timed_steps, windows=args.windows,
        sample_repeats=args.repeats, sample_steps=args.sample_steps, cache_dir=args.cache_dir,
        step_variants=tuple(v for v in args.step_variants.split(",") if v) if args.step_variants else None,
        sampling_variants=(tuple(v for v in args.sampling_variants.split(",") if v)
                           if args.sampling_variants else None),
        methods=tuple(m for m in args.methods.split(",") if m), cells=args.cells,
        batches=tuple(int(b) for b in args.batches.split(",")) if args.batches else None)
    if args.budget is not None:
        settings.budget_s = args.budget or None
    settings.count_flops = not args.no_flops
    try:
        check_settings(settings)
    except ValueError as err:
        parser.error(str(err))

    def save(report: dict[str, Any]) -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    report = run_family_bench(settings, on_result=save)
    save(report)
    print(format_table(report))
    return report


if __name__ == "__main__":
    main()
