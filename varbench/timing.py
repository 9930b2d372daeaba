"""Timing phases fairly: the same clock, synchronisation and memory probe for every method.

On CUDA the device is synchronised before the clock starts and before it stops (work is
asynchronous, so a host clock alone would time the launch, not the work), and the peak
memory counter is reset at the start of each phase.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class PhaseRecord:
    phase: str
    seconds: float = 0.0
    items: int = 0  # images generated, steps taken, ...; 0 when not countable
    peak_memory_bytes: int = 0
    warmup: bool = False

    @property
    def seconds_per_item(self) -> float:
        return self.seconds / self.items if self.items else float("nan")


def _is_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device)).startswith("cuda")


def synchronize(device: Any) -> None:
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


@contextmanager
def timed(phase: str, device: Any, items: int = 0, warmup: bool = False) -> Iterator[PhaseRecord]:
    """Time the body as `phase`; the yielded record's `items` may be set inside."""
    record = PhaseRecord(phase, items=items, warmup=warmup)
    cuda = _is_cuda(device)
    if cuda:
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield record
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            record.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
        record.seconds = time.perf_counter() - start


def matmul_rate(device: Any) -> float:
    """Measured dense matrix-product rate in FLOP/s: the reference of every FLOP floor.

    bf16 8192^3 on CUDA (what the models' matmuls run in), fp32 1024^3 on the CPU; random
    data (zeros run faster than real data), three warm-up products, then timed repeats.
    """
    import torch

    device = torch.device(device)
    cuda = device.type == "cuda"
    size, dtype, repeats = (8192, torch.bfloat16, 20) if cuda else (1024, torch.float32, 3)
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        left @ right
    with timed("matmul", device) as record:
        for _ in range(repeats):
            left @ right
    return 2 * size**3 * repeats / record.seconds
