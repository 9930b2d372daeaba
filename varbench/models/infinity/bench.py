"""Benchmark Infinity sampling: seconds per image, transformer vs VAE decode, peak memory.

    python -m varbench.models.infinity.bench --size infinity-2b --batch 1 4 8     # on a GPU
    python -m varbench.models.infinity.bench --size infinity-tiny --device cpu    # smoke check

Random weights (timing only, never image quality), random text features (T5 time is not
included), 1024x1024 for the 2B (the size's default schedule otherwise), CFG 4, tau 0.5,
top-p 0.97. Each batch size runs `--warmup` untimed generations, then `--repeats` timed
ones (CUDA-synchronised); the median is reported. Variants are settings of the speed
layer (`VARIANTS`, fast.SpeedOptions): `eager` (nothing compiled, no graphs; sub-pixel
upsampling in the decoder), `fused` (+ compiled VAE decoder), `graphs` (compiled decoder +
CUDA-graph replay per scale, batches <= 4), `compiled` (compiled decoder + compiled
transformer blocks, batches >= 8; the warm-up time then includes compiling),
`compiled-graphs` (the same, each scale's compiled forward replayed as a CUDA graph).
The FLOP floor is the counted matrix-product and attention FLOPs per image divided by a
measured bf16 matmul rate. Prints a table and one JSON document (also `--json PATH`).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch

from varbench.models.infinity.architecture import InfinityConfig, get_size
from varbench.models.infinity.factory import build_infinity, build_vae
from varbench.models.infinity.fast import SpeedOptions, accelerate, release_graphs
from varbench.models.infinity.sampler import SamplingConfig, decode_images, sample
from varbench.models.infinity.schedule import ScaleSchedule, get_schedule
from varbench.models.infinity.text import TextFeatures
from varbench.timing import matmul_rate, timed

RANDOM_INIT_NOTE = "random-init weights: timing only"
# CUDA graphs pay where kernel launches dominate (small batches); above this batch the
# graphs' static buffers cost more memory than the replay saves time.
GRAPH_MAX_BATCH = 4
# Compiled blocks pay where the elementwise passes around the matmuls dominate (large
# batches); each batch size is compiled anew.
COMPILE_MIN_BATCH = 8
VARIANTS = {
    "eager": SpeedOptions(compile_decoder=False),
    "fused": SpeedOptions(),
    "graphs": SpeedOptions(cuda_graphs=True),
    "compiled": SpeedOptions(compile_blocks=True),
    "compiled-graphs": SpeedOptions(compile_blocks=True, cuda_graphs=True),
}


def count_flops(config: InfinityConfig, schedule: ScaleSchedule, text_tokens: int,
                cfg: bool = True) -> dict[str, float]:
    """FLOPs of one image's transformer sampling (multiply-add = 2 FLOPs), CFG rows included."""
    width, hidden, depth = config.width, config.ffn_hidden, config.depth
    tokens = schedule.num_tokens
    per_token_block = 2 * width * (3 * width + 3 * width) + 2 * 2 * width * hidden  # qkv, proj, ca q/proj, ffn
    matmul = depth * tokens * per_token_block + tokens * 2 * width * (config.token_bits + config.num_logits)
    matmul += depth * text_tokens * 2 * width * 2 * width  # cross-attention keys/values, once
    self_attention = sum(4 * n * end * width for n, (_, end) in zip(schedule.tokens_per_scale, schedule.bounds()))
    attention = depth * (self_attention + 4 * tokens * text_tokens * width)
    rows = 2 if cfg else 1
    return {"matmul": rows * matmul, "attention": rows * attention, "total": rows * (matmul + attention)}


def random_text(batch: int, tokens: int, channels: int, device: torch.device, seed: int = 0) -> TextFeatures:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, tokens, channels, generator=generator) * 0.15  # T5-like scale
    return TextFeatures(features.to(device), (tokens,) * batch)


def bench_batch(model, vae, schedule: ScaleSchedule, batch: int, config: SamplingConfig, text_tokens: int,
                repeats: int, warmup: int, device: torch.device) -> dict:
    """Median seconds per image of sampling (transformer) and decoding, plus peak memory,
    through whatever speed layer is switched on for `model` and `vae`."""
    text = random_text(batch, text_tokens, model.config.text_channels, device)
    seeds = list(range(batch))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm_start = time.perf_counter()
    for _ in range(warmup):
        out = sample(model, vae, text, schedule, seeds, config, decode=False)
        decode_images(vae, out.summed, config.amp)
    warmup_seconds = time.perf_counter() - warm_start
    sampling, decoding = [], []
    for _ in range(repeats):
        with timed("sample", device) as record:
            out = sample(model, vae, text, schedule, seeds, config, decode=False)
        sampling.append(record.seconds / batch)
        with timed("decode", device) as record:
            decode_images(vae, out.summed, config.amp)
        decoding.append(record.seconds / batch)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    release_graphs(model)  # graphs keep their KV caches: free them before the next batch size
    gc.collect()
    transformer, decode = statistics.median(sampling), statistics.median(decoding)
    return {"batch": batch, "transformer_s_per_image": transformer, "vae_decode_s_per_image": decode,
            "total_s_per_image": transformer + decode, "peak_memory_gib": peak / 2**30,
            "warmup_seconds": warmup_seconds, "repeats": repeats}


def run_benchmark(size: str = "infinity-2b", batches: tuple[int, ...] = (1, 4, 8), device: str = "cuda",
                  repeats: int = 3, warmup: int = 1, text_tokens: int = 32, cfg: float = 4.0,
                  variants: tuple[str, ...] = ("fused",), schedule: ScaleSchedule | None = None) -> dict:
    device = torch.device(device)
    spec = get_size(size)
    if schedule is None:
        schedule = get_schedule(*spec.default_schedule)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_infinity(size, device=device, dtype=dtype).eval().requires_grad_(False)
    vae = build_vae(size, device=device)
    flops = count_flops(spec.transformer, schedule, text_tokens, cfg != 1)
    rate = matmul_rate(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed decoder shapes: autotune the convolutions
    rows = []
    config = SamplingConfig(cfg=cfg)
    for variant in variants:
        for batch in batches:
            if (variant == "graphs" and batch > GRAPH_MAX_BATCH) or (variant.startswith("compiled")
                                                                      and batch < COMPILE_MIN_BATCH):
                continue
            try:
                with accelerate((model, vae), VARIANTS[variant]):
                    row = bench_batch(model, vae, schedule, batch, config, text_tokens, repeats, warmup, device)
            except Exception as err:  # noqa: BLE001 - report a failing variant (e.g. OOM) and go on
                row = {"batch": batch, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            row["variant"] = variant
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {
        "size": size, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "pixels": list(schedule.pixel_size(vae.stride)), "tokens": schedule.num_tokens,
        "cfg": cfg, "text_tokens": text_tokens, "note": RANDOM_INIT_NOTE,
        "flops_per_image": flops, "matmul_flops_per_second": rate,
        "flop_floor_s_per_image": flops["total"] / rate, "results": rows,
    }


def format_table(report: dict) -> str:
    tflop, rate = report["flops_per_image"]["total"] / 1e12, report["matmul_flops_per_second"] / 1e12
    lines = [f"Infinity sampling, {report['size']} ({report['note']}), {report['pixels'][0]}x{report['pixels'][1]}, "
             f"cfg {report['cfg']}, {report['device']}",
             f"FLOP floor {report['flop_floor_s_per_image']:.3f} s/image ({tflop:.1f} TFLOP at {rate:.0f} TFLOP/s)",
             f"{'variant':15} {'batch':>5} {'transformer':>12} {'vae decode':>11} {'total s/img':>12} {'peak GiB':>9}"]
    for row in report["results"]:
        if "error" in row:
            lines.append(f"{row['variant']:15} {row['batch']:>5}  failed: {row['error']}")
            continue
        lines.append(f"{row['variant']:15} {row['batch']:>5} {row['transformer_s_per_image']:>12.4f} "
                     f"{row['vae_decode_s_per_image']:>11.4f} {row['total_s_per_image']:>12.4f} "
                     f"{row['peak_memory_gib']:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="infinity-2b")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--variants", nargs="+", default=["fused"], choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = run_benchmark(args.size, tuple(args.batch), args.device, args.repeats, args.warmup,
                           args.text_tokens, args.cfg, tuple(args.variants))
    print(format_table(report))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    return report


if __name__ == "__main__":
    main()
