"""Device helpers of the GPU benchmark (`baselines.bench`): synchronisation, peak memory,
the two measured ceilings (bf16 matmul rate, device memory bandwidth), FLOP counting,
and a micro-benchmark of the attention kernels on Stable Diffusion's attention shapes."""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


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


def free_memory(device: str, compiled: bool = False) -> None:
    if compiled:
        from torch import _dynamo  # (not `import torch._dynamo`: that would make `torch` local here)

        _dynamo.reset()  # compiled graphs may hold the last benchmark's modules
    gc.collect()  # drop the last benchmark's tensors (and CUDA graph pools) first
    if is_cuda(device):
        torch.cuda.empty_cache()


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if is_cuda(device) else "cpu"


def copy_bandwidth(device: str) -> float:
    """Measured device memory bandwidth in bytes/s (a large copy; bytes read + written)."""
    count = 2**28 if is_cuda(device) else 2**22  # 1 GiB of fp32 on the GPU
    source = torch.randn(count, device=device)
    target = torch.empty_like(source)
    for _ in range(2):
        target.copy_(source)
    synchronize(device)
    repeats = 10 if is_cuda(device) else 3
    start = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    synchronize(device)
    return 2 * source.numel() * source.element_size() * repeats / (time.perf_counter() - start)


def count_flops(function: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


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


# --- attention kernels on SD 1.5's attention shapes ------------------------------------------

# (query tokens, key tokens, heads, head dim) of SD 1.5's attention layers at 512 px:
# self-attention at the 64/32/16/8 latent levels, and cross-attention to 77 text tokens.
SD15_ATTENTION = [(4096, 4096, 8, 40), (1024, 1024, 8, 80), (256, 256, 8, 160), (64, 64, 8, 160),
                  (4096, 77, 8, 40), (1024, 77, 8, 80), (256, 77, 8, 160)]
TINY_ATTENTION = [(64, 64, 8, 40), (16, 16, 8, 80), (64, 77, 8, 40)]  # a quick CPU check of the code
BACKENDS = ("flash", "efficient", "cudnn", "math")


def attention_table(device: str, batch: int, backward: bool, shapes: list[tuple[int, int, int, int]],
                    repeats: int = 20) -> list[dict[str, Any]]:
    """Milliseconds per SDPA call (forward, or forward + backward) for each backend and shape;
    None where a backend cannot run the shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    dtype = torch.bfloat16 if is_cuda(device) else torch.float32
    rows = []
    for queries, keys, heads, width in shapes:
        q = torch.randn(batch, heads, queries, width, device=device, dtype=dtype, requires_grad=backward)
        k = torch.randn(batch, heads, keys, width, device=device, dtype=dtype, requires_grad=backward)
        v = torch.randn(batch, heads, keys, width, device=device, dtype=dtype, requires_grad=backward)
        row: dict[str, Any] = {"queries": queries, "keys": keys, "heads": heads, "head_dim": width}
        for name in BACKENDS:
            def call() -> None:
                out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                if backward:
                    out.backward(torch.ones_like(out))
            try:
                with sdpa_kernel([kernels[name]]):
                    row[name] = median_ms(call, device, repeats)
            except RuntimeError:  # this backend does not support the shape/dtype/device
                row[name] = None
        rows.append(row)
    return rows


def median_ms(call: Callable[[], None], device: str, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
