"""GPU feasibility of ARBooth fine-tuning: seconds per iteration, its split, memory, FLOP floor.

    python -m varbench.methods.arbooth.bench                               # Infinity-2B, CUDA
    python -m varbench.methods.arbooth.bench --size infinity-tiny --device cpu   # quick check

At full size with random weights (timing only, never image quality), batch 2, 1024^2,
soft prior distillation, the method's own `Trainer` runs `--warmup` untimed iterations and
then `--iterations` timed ones, for each variant (a set of config overrides; the speed
layer follows the config's execution fields as in a fit, see base.speed_options):
  default      the default config: CE step, then distillation step (quirk 5 faithful),
               teacher samples drawn on the fly with the KV-cached sampler replayed as
               CUDA graphs, compiled transformer blocks (the warm-up compiles)
  eager        default without compiled blocks (compile_blocks false)
  no-graphs    default without CUDA graphs (cuda_graphs false)
  joint        quirk_optimizer_steps "fixed": CE and distillation rows in one forward/backward
  joint-pool   joint, teacher samples from a pool sampled once (before the clock starts)
  recompute-all  every block recomputed in backward (the release; the default before
               checkpoint_blocks "auto", which keeps as many of the last blocks' activations
               as fit: recompute.py; the warm-up's first two iterations measure what fits)
  ckpt26       the last 6 of 32 blocks keep their activations instead of being recomputed
  ckpt16       the last 16 blocks keep them
  lora-r4, lora-r16   layers [lora, identifier]: LoRA of rank 4 / 16 on cross-attention +
               FFN instead of the full tensors (lora.py)
  low-memory   the 24 GB recipe with the released layers: tuned tensors stored in bf16 as
               released (quirk_bf16_weights faithful, so AdamW's moments are bf16 too),
               teacher samples from a pool (the teacher's copy is freed once the pool is
               drawn), every block recomputed
  low-memory-fp32-master  the same with fp32 master weights and bf16 AdamW moments
               (optimizer_states bf16)
  lora-r4-low-memory  LoRA rank 4 with the pool and every block recomputed
The split (teacher sampling, CE pass, distillation or joint pass, optimizer) comes from CUDA
events around each section, so timing adds no host sync inside an iteration. Data are
synthetic (random latents and text features): the VAE encoder and T5 run once per fit,
outside the iteration. The FLOP count is `flops.iteration_flops` (checked against torch's
FlopCounterMode by the tests); the floor is FLOPs / measured bf16 matmul rate.
Prints a table and the JSON report (also written to --json).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from varbench.methods.arbooth.base import model_overrides
from varbench.methods.arbooth.config import ARBoothConfig, check_config, quirk_settings
from varbench.methods.arbooth.data import PromptFeatures
from varbench.methods.arbooth.fit import make_teacher, make_trainer, prior_condition
from varbench.methods.arbooth.lora import add_adapters
from varbench.methods.arbooth.flops import iteration_flops
from varbench.methods.arbooth.model import tuned_tensor_names
from varbench.methods.arbooth.training import TrainingData, prepare_storage
from varbench.models.infinity.architecture import get_size
from varbench.models.infinity.factory import build_infinity
from varbench.models.infinity.schedule import ScaleSchedule, get_schedule
from varbench.timing import matmul_rate

NOTE = "random-init weights: timings only, not image quality"
TARGET_SECONDS = 3.0  # per iteration on one H100 (500 iterations in 25 minutes)
SIZES = ("infinity-2b", "infinity-small", "infinity-tiny")
# Named overrides of the default config (quirks as released but 3 and 6 fixed, CUDA
# graphs on); measured figures: benchmarks/NOTES-arbooth.md.
VARIANTS = {
    "default": {},
    "eager": {"compile_blocks": False},
    "no-graphs": {"cuda_graphs": False},
    "joint": {"quirk_optimizer_steps": "fixed"},
    "joint-pool": {"quirk_optimizer_steps": "fixed", "teacher_source": "pool", "teacher_pool_size": 8},
    "recompute-all": {"checkpoint_blocks": -1},
    "ckpt26": {"checkpoint_blocks": 26},
    "ckpt16": {"checkpoint_blocks": 16},
    "lora-r4": {"layers": ["lora", "identifier"]},
    "lora-r16": {"layers": ["lora", "identifier"], "lora_rank": 16},
    "low-memory": {"quirk_bf16_weights": "faithful", "teacher_source": "pool", "teacher_pool_size": 8,
                   "checkpoint_blocks": -1},
    "low-memory-fp32-master": {"optimizer_states": "bf16", "teacher_source": "pool", "teacher_pool_size": 8,
                               "checkpoint_blocks": -1},
    "lora-r4-low-memory": {"layers": ["lora", "identifier"], "teacher_source": "pool", "teacher_pool_size": 8,
                           "checkpoint_blocks": -1},
}
# Card sizes and the GiB of allocations that fit each, leaving room for the CUDA context
# and the allocator's fragmentation (a 24 GB card holds 22.35 GiB in all).
CARDS = {"24 GB": 21.5, "40 GB": 36.5, "80 GB": 77.0}
PROMPT_TOKENS, PRIOR_TOKENS = 7, 6  # "a photo of <placeholder> dog" / "a photo of dog" with EOS
PLACEHOLDER_ID, PLACEHOLDER_POSITION = 99, 3


class SectionClock:
    """Times named sections: CUDA events on the GPU (read after one final sync), the host
    clock on the CPU. `section` is what the Trainer calls."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.records: list[tuple[str, object, object]] = []

    def _stamp(self) -> object:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = self._stamp()
        yield
        self.records.append((name, start, self._stamp()))

    def totals(self) -> dict[str, float]:
        """Seconds per section name (call after synchronizing)."""
        out: dict[str, float] = {}
        for name, start, end in self.records:
            seconds = start.elapsed_time(end) / 1000 if self.cuda else end - start
            out[name] = out.get(name, 0.0) + seconds
        return out


def synthetic_data(config: ARBoothConfig, model, tuned: list[str], schedule, device: torch.device,
                   cache_dir: Path) -> TrainingData:
    generator = torch.Generator().manual_seed(0)
    h, w = schedule.final
    latents = torch.randn(4, model.config.token_bits, h, w, generator=generator).to(device)
    channels = model.config.text_channels

    def prompt(tokens: int, placeholder: int | None) -> PromptFeatures:
        features = (torch.randn(1, tokens, channels, generator=generator) * 0.15).to(device)  # T5-like scale
        ids = torch.arange(tokens)[None] + 200
        if placeholder is not None:
            ids[0, PLACEHOLDER_POSITION] = placeholder
        return PromptFeatures(features, ids, tokens, placeholder)

    training, prior = prompt(PROMPT_TOKENS, PLACEHOLDER_ID), prompt(PRIOR_TOKENS, None)
    condition = prior_condition(model, prior, config.distill_batch_size, device)
    teacher = None
    if config.distill != "off":
        identity = {"model": "bench", "transformer": {"random_init_seed": 0}}
        teacher = make_teacher(model, tuned, config, schedule, prior, device, 0, cache_dir, identity, "bench")
    return TrainingData(latents, training, condition, teacher)


def bench_variant(size: str, config: ARBoothConfig, device: torch.device, warmup: int, iterations: int,
                  cache_dir: Path) -> dict:
    model = build_infinity(size, device=device, **model_overrides(config))
    schedule = bench_schedule(size)
    tuned = tuned_tensor_names(model, config)
    prepare_storage(model, tuned, config, device)
    if device.type == "cuda":  # the peak from here on: teacher (and pool), adapters, iterations
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    data = synthetic_data(config, model, tuned, schedule, device, cache_dir)
    adapters = add_adapters(model, config, fit_seed=0)
    clock = SectionClock(device)
    trainer = make_trainer(model, tuned, config, schedule, data, device, fit_seed=0, clock=clock, adapters=adapters)
    model.train()
    _sync(device)
    warm_start = time.perf_counter()
    for step in range(1, warmup + 1):
        losses = trainer.iteration(step)
    _sync(device)
    warmup_seconds = time.perf_counter() - warm_start
    clock.records.clear()
    start = time.perf_counter()
    for step in range(warmup + 1, warmup + iterations + 1):
        losses = trainer.iteration(step)
    _sync(device)
    seconds = (time.perf_counter() - start) / iterations
    split = {name: total / iterations for name, total in clock.totals().items()}
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    finite = all(torch.isfinite(value).item() for value in losses.values())
    recomputed = trainer.recompute.recomputed
    del trainer, data, model, adapters
    _free(device)
    fits = [card for card, gib in CARDS.items() if peak is not None and peak <= gib]
    return {"seconds_per_iteration": seconds, "split_seconds": split, "peak_memory_gib": peak, "fits": fits,
            "recomputed_blocks": recomputed,
            "warmup_seconds": warmup_seconds, "losses_finite": finite,
            "projected_minutes": seconds * config.iterations / 60}


def bench_schedule(size: str) -> ScaleSchedule:
    """The size's default schedule: 1024^2 (13 scales) for the 2B, 64^2 for the tiny model."""
    return get_schedule(*get_size(size).default_schedule)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmark(size: str = "infinity-2b", device: str = "cuda", variants: tuple[str, ...] = tuple(VARIANTS),
                  warmup: int = 2, iterations: int = 5) -> dict:
    device = torch.device(device)
    rate = matmul_rate(device)
    schedule = bench_schedule(size)
    pixels = schedule.pixel_size(get_size(size).tokenizer.stride)[0]
    model_config = get_size(size).transformer
    rows = []
    with tempfile.TemporaryDirectory(prefix="arbooth-bench-") as cache_dir:
        for name in variants:
            config = replace(ARBoothConfig(model=size, resolution=pixels), **VARIANTS[name])
            check_config(config)
            row = {"variant": name, "quirks": quirk_settings(config), "teacher_source": config.teacher_source,
                   "checkpoint_blocks": config.checkpoint_blocks}
            try:
                row.update(bench_variant(size, config, device, warmup, iterations, Path(cache_dir)))
                flops = iteration_flops(config, model_config, schedule, PROMPT_TOKENS + config.identifier_vectors - 1,
                                        PRIOR_TOKENS, row["recomputed_blocks"])
                row.update(flops=flops.as_dict(), flop_floor_seconds=flops.total / rate)
                row["floor_fraction"] = row["flop_floor_seconds"] / row["seconds_per_iteration"]
                row["meets_target"] = row["seconds_per_iteration"] <= TARGET_SECONDS if size == "infinity-2b" else None
            except torch.cuda.OutOfMemoryError as err:
                row["error"] = f"out of memory: {str(err).splitlines()[0][:160]}"
                _free(device)
            rows.append(row)
    return {"size": size, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "note": NOTE, "batch_size": 2, "distill": "soft",
            "pixels": pixels, "tokens": schedule.num_tokens, "matmul_flops_per_second": rate,
            "target_seconds_per_iteration": TARGET_SECONDS, "iterations_timed": iterations, "warmup": warmup,
            "results": rows}


def format_table(report: dict) -> str:
    title = (f"ARBooth fine-tuning iteration, {report['size']} ({report['note']}), batch {report['batch_size']}, "
             f"{report['pixels']}x{report['pixels']}, soft distillation, {report['device']}")
    rate = (f"matmul rate {report['matmul_flops_per_second'] / 1e12:.3g} TFLOP/s (bf16 on CUDA, fp32 on the CPU); "
            f"target {report['target_seconds_per_iteration']:g} s/iteration at 2B on one H100")
    header = (f"{'variant':22} {'s/iter':>7} {'min/500':>8} {'TFLOP':>8} {'floor s':>8} {'of floor':>8} "
              f"{'peak GiB':>8} {'fits':>16}  split (s)")
    lines = [title, rate, header]
    for row in report["results"]:
        head = f"{row['variant']:22}"
        if "error" in row:
            lines.append(f"{head} failed: {row['error']}")
            continue
        peak = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] is not None else "-"
        split = ", ".join(f"{name} {seconds:.3f}" for name, seconds in row["split_seconds"].items())
        lines.append(f"{head} {row['seconds_per_iteration']:>7.3f} {row['projected_minutes']:>8.1f} "
                     f"{row['flops']['total'] / 1e12:>8.4g} {row['flop_floor_seconds']:>8.3f} "
                     f"{row['floor_fraction']:>8.1%} {peak:>8} {'/'.join(row.get('fits') or ['-']):>16}  {split}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="infinity-2b", choices=SIZES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = run_benchmark(args.size, args.device, tuple(args.variants), args.warmup, args.iterations)
    print(format_table(report))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
