"""Probes behind the third and sixth sessions' notes (GPU only; random weights, timings only).

    python benchmarks/speed_probes.py encode      # SD VAE encoder: layout x autocast x batch (NOTES-baselines.md)
    python benchmarks/speed_probes.py cd-profile  # where a Custom Diffusion step's GPU time goes (same notes)
    python benchmarks/speed_probes.py decoder     # Infinity BSQ decoder: layout, compiled or eager (NOTES-infinity.md)
    python benchmarks/speed_probes.py gelu        # FFN first matmul: GELU as a separate pass or a cuBLASLt epilogue
    python benchmarks/speed_probes.py upsample    # upsample + conv layers: plain vs four 2x2 convs (sixth session)
    python benchmarks/speed_probes.py convs       # 3x3 conv TFLOP/s by layout and cuDNN autotuning; decoder profile
    python benchmarks/speed_probes.py decoder-norm  # Infinity decoder: GroupNorm x upsampling, compiled and eager
    python benchmarks/speed_probes.py sd-norm     # compiled SD sampling@4: inductor's GroupNorm vs per-channel stats
    python benchmarks/speed_probes.py ffn-epilogue  # compiled Infinity sampling@8: GELU separate or in the matmul

Each figure is the median of 5 CUDA-synchronised calls after 2 warm-up calls.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

DEVICE = torch.device("cuda")


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def sd_encoder() -> None:
    """Custom Diffusion re-encodes its augmented subject images every step."""
    from baselines.fast.calls import LatentMoments
    from varbench.models.diffusion import sd15_components

    vae = sd15_components(0).vae.to(DEVICE, torch.bfloat16)
    moments = LatentMoments(vae)
    for channels_last in (False, True):
        vae.to(memory_format=layout(channels_last))
        for amp in (True, False):
            for batch in (2, 16):
                pixels = torch.randn(batch, 3, 512, 512, device=DEVICE, dtype=torch.bfloat16)
                pixels = pixels.contiguous(memory_format=layout(channels_last))

                def encode() -> None:
                    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
                        moments(pixels)

                name = "NHWC" if channels_last else "NCHW"
                print(f"SD VAE encode {name} autocast={amp} batch {batch}: "
                      f"{median_seconds(encode) / batch * 1e3:.2f} ms/image", flush=True)


def custom_diffusion_profile(steps: int = 10) -> None:
    """Kernel time of `steps` Custom Diffusion steps without CUDA graphs (the graphed
    default runs the same kernels; the profiler sees them one by one only without graphs)."""
    import tempfile
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    from baselines.bench import BenchSettings, build_components, run_fit
    from baselines.custom_diffusion import CustomDiffusion

    settings = BenchSettings(size="sd15", device="cuda")
    profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    warmup = 12

    def on_step(done: int, total: int) -> None:
        if done == warmup:
            torch.cuda.synchronize()
            profiler.start()
        elif done == warmup + steps:
            torch.cuda.synchronize()
            profiler.stop()

    with tempfile.TemporaryDirectory() as folder:
        run_fit(CustomDiffusion, build_components(settings), settings, Path(folder), warmup + steps + 1,
                "nographs", on_step)
    print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


def infinity_decoder() -> None:
    """The BSQ decoder at batch 8 and 1, NCHW or NHWC, compiled
    (`SpeedOptions(compile_decoder=True)`) or eager; sub-pixel upsampling in both."""
    from varbench.models.infinity.factory import build_vae
    from varbench.models.infinity.fast import SpeedOptions, accelerate
    from varbench.models.infinity.fast.compiled import reset_compiled
    from varbench.models.infinity.sampler import decode_images

    vae = build_vae("infinity-2b", device=DEVICE)
    for batch in (8, 1):
        summed = torch.randn(batch, 32, 64, 64, device=DEVICE)
        for compiled in (True, False):
            for channels_last in (False, True):
                torch._dynamo.reset()
                reset_compiled()
                vae.decoder.to(memory_format=layout(channels_last))
                codes = summed.contiguous(memory_format=layout(channels_last))
                with accelerate(vae, SpeedOptions(compile_decoder=compiled)):
                    seconds = median_seconds(lambda: decode_images(vae, codes))
                print(f"Infinity decoder batch {batch} {'NHWC' if channels_last else 'NCHW'} "
                      f"{'compiled' if compiled else 'eager'}: {seconds / batch * 1e3:.2f} ms/image", flush=True)
        vae.decoder.to(memory_format=torch.contiguous_format)


def gelu_epilogue() -> None:
    """Infinity-2B's fc1 (2048 -> 8192) at the token counts of its last scales (batch 8, CFG)."""
    for rows in (65536, 36864, 16384):
        x = torch.randn(rows, 2048, device=DEVICE, dtype=torch.bfloat16)
        weight = torch.randn(8192, 2048, device=DEVICE, dtype=torch.bfloat16) * 0.02
        bias = torch.randn(8192, device=DEVICE, dtype=torch.bfloat16) * 0.02
        separate = lambda: F.gelu(F.linear(x, weight, bias), approximate="tanh")  # noqa: E731
        fused = lambda: torch._addmm_activation(bias, x, weight.t(), use_gelu=True)  # noqa: E731
        difference = (separate().float() - fused().float()).abs().max().item()
        print(f"rows {rows}: linear + gelu {median_seconds(separate) * 1e3:.3f} ms, "
              f"epilogue {median_seconds(fused) * 1e3:.3f} ms, max |difference| {difference:.2e}", flush=True)


def upsample_conv_probe() -> None:
    """Nearest 2x + 3x3 conv, plain vs `upsample_conv`, bf16, one layer at a time: the
    SD 1.5 UNet's three upsamplers (batch 8 = 4 images with CFG) and its VAE decoder's at
    batch 4. The Infinity decoder end to end: `decoder-norm`."""
    from varbench.models.fast.upsample import upsample_conv

    def plain(x, weight, bias):
        return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)

    shapes = [("unet 1280 ch 8->16", 8, 1280, 8), ("unet 1280 ch 16->32", 8, 1280, 16),
              ("unet 640 ch 32->64", 8, 640, 32), ("vae 512 ch 64->128", 4, 512, 64),
              ("vae 512 ch 128->256", 4, 512, 128), ("vae 256 ch 256->512", 4, 256, 256)]
    for name, batch, channels, side in shapes:
        x = torch.randn(batch, channels, side, side, device=DEVICE, dtype=torch.bfloat16)
        weight = torch.randn(channels, channels, 3, 3, device=DEVICE, dtype=torch.bfloat16) * 0.02
        bias = torch.randn(channels, device=DEVICE, dtype=torch.bfloat16) * 0.02
        error = ((upsample_conv(x, weight, bias).float() - plain(x, weight, bias).float()).norm()
                 / plain(x, weight, bias).float().norm()).item()
        figures = []
        for label, fn in (("plain", plain), ("subpixel", upsample_conv), ("plain compiled", torch.compile(plain)),
                          ("subpixel compiled", torch.compile(upsample_conv))):
            figures.append(f"{label} {median_seconds(lambda: fn(x, weight, bias), repeats=20) * 1e3:.3f}")
        print(f"{name}: ms {', '.join(figures)}; relative difference {error:.1e}", flush=True)


def conv_rates() -> None:
    """bf16 3x3 convolutions at the decoders' shapes: TFLOP/s by layout and cuDNN
    autotuning; then where the compiled Infinity decoder's GPU time goes (batch 8; the
    speed layer's default decoder options, `SpeedOptions()`)."""
    from varbench.models.infinity.factory import build_vae
    from varbench.models.infinity.fast import SpeedOptions, accelerate
    from varbench.models.infinity.sampler import decode_images

    shapes = [(8, 1280, 32), (8, 640, 64), (4, 512, 256), (4, 256, 512), (8, 512, 512), (8, 256, 1024),
              (8, 128, 1024)]
    for batch, channels, side in shapes:
        flops = 2 * 9 * channels * channels * side * side * batch
        figures = []
        for autotune in (False, True):
            torch.backends.cudnn.benchmark = autotune
            for channels_last in (False, True):
                x = torch.randn(batch, channels, side, side, device=DEVICE, dtype=torch.bfloat16)
                x = x.contiguous(memory_format=layout(channels_last))
                conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(DEVICE, torch.bfloat16)
                conv.to(memory_format=layout(channels_last))
                with torch.no_grad():
                    seconds = median_seconds(lambda conv=conv, x=x: conv(x), repeats=10)
                figures.append(f"{'NHWC' if channels_last else 'NCHW'}{' tuned' if autotune else ''} "
                               f"{flops / seconds / 1e12:.0f}")
                del x, conv
        print(f"conv3x3 {batch}x{channels}x{side}^2: TFLOP/s {', '.join(figures)}", flush=True)
    torch.backends.cudnn.benchmark = True
    vae = build_vae("infinity-2b", device=DEVICE)
    accelerate(vae, SpeedOptions())  # compiled decoder, sub-pixel upsampling
    summed = torch.randn(8, 32, 64, 64, device=DEVICE)
    for _ in range(3):
        decode_images(vae, summed)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        decode_images(vae, summed)
        torch.cuda.synchronize()
    print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=90))


def decoder_norm() -> None:
    """The Infinity decoder at batch 8, compiled or eager, with torch's GroupNorm or the
    per-channel-statistics one (varbench.models.fast.groupnorm; forced here in both
    modes, unlike `ChannelStatsGroupNorm`, which computes it only while compiling), and
    the plain or the sub-pixel upsampling (`SpeedOptions.subpixel_upsample`)."""
    from varbench.models.fast.groupnorm import group_norm
    from varbench.models.infinity import autoencoder
    from varbench.models.infinity.factory import build_vae
    from varbench.models.infinity.fast import SpeedOptions, accelerate
    from varbench.models.infinity.fast.compiled import reset_compiled
    from varbench.models.infinity.sampler import decode_images

    torch.backends.cudnn.benchmark = True
    vae = build_vae("infinity-2b", device=DEVICE)
    summed = torch.randn(8, 32, 64, 64, device=DEVICE)
    norms = {"torch norm": lambda self, x: F.group_norm(x, self.norm.num_groups, self.norm.weight,
                                                        self.norm.bias, self.norm.eps),
             "channel-stats norm": lambda self, x: group_norm(x, self.norm.num_groups, self.norm.weight,
                                                              self.norm.bias, self.norm.eps)}
    upsamples = {"plain upsample": False, "subpixel upsample": True}
    kept = autoencoder.Normalize.forward
    try:
        for compiled in (True, False):
            for norm_name, norm in norms.items():
                for upsample_name, subpixel in upsamples.items():
                    autoencoder.Normalize.forward = norm
                    torch._dynamo.reset()
                    reset_compiled()
                    options = SpeedOptions(compile_decoder=compiled, subpixel_upsample=subpixel)
                    with accelerate(vae, options):
                        seconds = median_seconds(lambda: decode_images(vae, summed))
                    print(f"Infinity decoder batch 8 {'compiled' if compiled else 'eager'}, {norm_name}, "
                          f"{upsample_name}: {seconds / 8 * 1e3:.2f} ms/image", flush=True)
    finally:
        autoencoder.Normalize.forward = kept


def sd_norm() -> None:
    """Compiled SD 1.5 sampling at batch 4 (the bench's `compiled` variant) with the
    compiled GroupNorms as torch traces them, then as varbench.models.fast.groupnorm does
    (what baselines/fast swaps into compiled networks)."""
    from baselines.bench import BenchSettings, run_benchmarks
    from varbench.models.fast.groupnorm import ChannelStatsGroupNorm

    ours = ChannelStatsGroupNorm.forward
    for label, forward in (("torch", torch.nn.GroupNorm.forward), ("channel-stats", ours)):
        ChannelStatsGroupNorm.forward = forward
        torch._dynamo.reset()
        settings = BenchSettings(variants=("compiled",), benchmarks=("sampling@4",), count_flops=False)
        report = run_benchmarks(settings)
        value = report["results"][0]["value"] if report["results"] else report["errors"]
        print(f"SD sampling@4 compiled, {label} GroupNorm: {value} s/image", flush=True)
    ChannelStatsGroupNorm.forward = ours


def ffn_epilogue() -> None:
    """Compiled Infinity-2B sampling at batch 8 (compiled blocks + CUDA graphs), with the
    FFN's GELU as a separate pass and then in the first matmul's epilogue (what the
    compiled blocks' `FusedFeedForward` does)."""
    from varbench.models.infinity.bench import run_benchmark
    from varbench.models.infinity.fast import ops
    from varbench.models.infinity.fast.compiled import reset_compiled

    fused = ops.epilogue_gelu
    ffn = ops.FusedFeedForward(2048, 8192).to(DEVICE, torch.bfloat16)
    x = torch.randn(16, 4096, 2048, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        separate = ffn(x).float()  # eager: the release's separate GELU
        epilogue = torch.compile(ffn)(x).float()
    print(f"FFN, compiled with the epilogue vs eager: relative difference "
          f"{((epilogue - separate).norm() / separate.norm()).item():.2e}", flush=True)
    try:
        for label, rule in (("separate GELU", lambda x, dtype=None: False), ("epilogue GELU", fused)):
            ops.epilogue_gelu = rule
            torch._dynamo.reset()
            reset_compiled()
            row = run_benchmark(batches=(8,), variants=("compiled-graphs",), warmup=2, repeats=5)["results"][0]
            print(f"Infinity sampling@8 compiled-graphs, {label}: transformer {row['transformer_s_per_image']:.4f} "
                  f"+ decode {row['vae_decode_s_per_image']:.4f} s/image", flush=True)
    finally:
        ops.epilogue_gelu = fused


PROBES = {"encode": sd_encoder, "cd-profile": custom_diffusion_profile, "decoder": infinity_decoder,
          "gelu": gelu_epilogue, "upsample": upsample_conv_probe,
          "convs": conv_rates, "decoder-norm": decoder_norm, "sd-norm": sd_norm,
          "ffn-epilogue": ffn_epilogue}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probes", nargs="+", choices=list(PROBES))
    for probe in parser.parse_args().probes:
        PROBES[probe]()
