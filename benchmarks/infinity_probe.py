"""Where does Infinity sampling time go? A profiling probe for speed work (GPU only).

    python benchmarks/infinity_probe.py --batch 8 --out probe.json
    python benchmarks/infinity_probe.py --batch 8 --compiled --profile-only   # compiled blocks

1. one profiled 2B sampling pass (random weights, 1024^2, CFG 4; the transformer eager,
   or with `--compiled` its blocks compiled: `SpeedOptions(compile_blocks=True)`, no CUDA
   graphs): CUDA time by kernel family (matmul, attention, elementwise/norm, sampling, copies);
2. self-attention of the last scale under each SDPA backend (flash, cuDNN, efficient);
3. VAE decode (the speed layer's default decoder, `SpeedOptions()`: compiled, sub-pixel
   upsampling) in NCHW vs channels_last memory format.
Timing only: the weights are random.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from varbench.models.infinity.bench import random_text
from varbench.models.infinity.architecture import get_size
from varbench.models.infinity.factory import build_infinity, build_vae
from varbench.models.infinity.fast import SpeedOptions, accelerate
from varbench.models.infinity.sampler import SamplingConfig, decode_images, sample
from varbench.models.infinity.schedule import get_schedule

FAMILIES = [("attention", r"flash|fmha|attention|cudnn.*sdpa|sdpa"), ("matmul", r"gemm|sm90_xmma|cutlass|nvjet|matmul"),
            ("conv", r"conv|implicit|winograd"), ("norm", r"norm|welford"),
            ("copy/cast", r"copy|cast|cat|index|fill"), ("elementwise", r"elementwise|vectorized|reduce|softmax")]


def family(name: str) -> str:
    for label, pattern in FAMILIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def cuda_time(fn, repeats: int = 5) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def profile_sampling(model, vae, schedule, batch: int, compiled: bool = False) -> dict:
    text = random_text(batch, 32, model.config.text_channels, torch.device("cuda"))
    config = SamplingConfig()
    from torch.profiler import ProfilerActivity, profile

    with accelerate(model, SpeedOptions(compile_blocks=compiled)):
        sample(model, vae, text, schedule, list(range(batch)), config, decode=False)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            sample(model, vae, text, schedule, list(range(batch)), config, decode=False)
            torch.cuda.synchronize()
    by_family: dict[str, float] = defaultdict(float)
    kernels = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us <= 0 or event.key.startswith("ProfilerStep"):
            continue
        by_family[family(event.key)] += device_us / 1e6
        kernels.append((device_us / 1e6, event.count, event.key[:110]))
    kernels.sort(reverse=True)
    return {"seconds_by_family": dict(sorted(by_family.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"seconds": s, "calls": c, "kernel": k} for s, c, k in kernels[:40]],
            "per_image_total": sum(by_family.values()) / batch}


def attention_backends(batch: int) -> dict:
    rows = 2 * batch  # CFG
    q = torch.randn(rows, 16, 4096, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(rows, 16, 10521, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    flops = 4 * rows * 16 * 4096 * 10521 * 128
    out = {}
    for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            with sdpa_kernel([backend]):
                seconds = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v, scale=1.0))
            out[name] = {"seconds": seconds, "tflops": flops / seconds / 1e12}
        except Exception as err:  # noqa: BLE001 - a backend may not support this shape or build
            out[name] = {"error": f"{type(err).__name__}: {str(err)[:120]}"}
    return out


def decode_formats(vae, batch: int) -> dict:
    summed = torch.randn(batch, 32, 64, 64, device="cuda")
    with accelerate(vae, SpeedOptions()):  # compiled decoder, sub-pixel upsampling
        out = {"nchw": cuda_time(lambda: decode_images(vae, summed), 3) / batch}
        vae.decoder.to(memory_format=torch.channels_last)
        cl = summed.contiguous(memory_format=torch.channels_last)
        out["channels_last"] = cuda_time(lambda: decode_images(vae, cl), 3) / batch
        vae.decoder.to(memory_format=torch.contiguous_format)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default=None)
    parser.add_argument("--compiled", action="store_true", help="profile with compiled blocks")
    parser.add_argument("--profile-only", action="store_true", help="skip the attention and decoder probes")
    args = parser.parse_args()
    device = torch.device("cuda")
    model = build_infinity("infinity-2b", device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
    vae = build_vae("infinity-2b", device=device)
    schedule = get_schedule(*get_size("infinity-2b").default_schedule)
    report = {"profile": profile_sampling(model, vae, schedule, args.batch, args.compiled)}
    if not args.profile_only:
        report["attention_last_scale"] = attention_backends(args.batch)
        report["decode_s_per_image"] = decode_formats(vae, args.batch)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        open(args.out, "w").write(text)


if __name__ == "__main__":
    main()
