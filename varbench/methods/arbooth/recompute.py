"""Which transformer blocks recompute their activations in backward (`checkpoint_blocks`).

Recomputing a block costs one more forward of it; keeping its activations costs memory
(a few GiB per block at 2B, 1024^2, batch 2). Keeping the last half of the blocks on an
80 GB GPU made an iteration clearly faster than recomputing all of them (the release),
at a much higher peak (benchmarks/NOTES-arbooth.md). How many fit depends on the GPU,
the model size, the resolution and whether blocks are compiled, so "auto" measures
instead of guessing:

  iteration 1   the last block keeps its activations: peak P1
  iteration 2   the last two keep them: peak P2, so one more kept block costs P2 - P1
                (skipped, keeping none from then on, when P1 is already above the budget)
  iteration 3+  the last n blocks keep them, n as large as keeps the peak within
                MEMORY_FRACTION of what this process can have (free + its own reserve)

Why start from one kept block, not none: the peak comes during the backward of the last
block, when its activations exist whether kept or recomputed, so keeping one block costs
(almost) nothing and P1 - P0 would say nothing about the next ones. Measured at 2B, the
peak grows by the same amount per further kept block, so the peak at n kept blocks is
P1 + (n - 1) * (P2 - P1).

Recomputation gives the same values as keeping (the same kernels run again), so the
choice changes speed and memory, not results. On the CPU "auto" recomputes every block.
Peaks come from the caching allocator's host-side counters: no GPU sync. Resetting them
means the fit phase's recorded peak memory (varbench.timing) covers iteration 2 onwards,
which holds the fit's largest activations anyway.
"""
from __future__ import annotations

from typing import Literal

import torch

MEMORY_FRACTION = 0.85  # headroom for allocator fragmentation and other processes


def configured_count(setting: int | Literal["auto"], depth: int) -> int:
    """Blocks recomputed for a fixed setting (-1: all, n: the first n); "auto" starts from
    all, the release's choice, and the CPU stays there."""
    return depth if setting in (-1, "auto") else min(int(setting), depth)


def blocks_to_keep(peak_one: int, peak_two: int, capacity: int, depth: int,
                   fraction: float = MEMORY_FRACTION) -> int:
    """How many of the last blocks may keep their activations, from the peaks (bytes) with
    one and with two kept blocks and the bytes this process can use."""
    budget = fraction * capacity
    if peak_one > budget:
        return 0
    if peak_two > budget:
        return 1
    per_block = peak_two - peak_one
    if per_block <= 0:  # keeping cost nothing measurable: the peak lies elsewhere
        return depth
    return min(depth, 2 + int((budget - peak_two) // per_block))


class Recompute:
    """The `checkpointing` argument of each iteration's forward passes."""

    def __init__(self, setting: int | Literal["auto"], depth: int, device: torch.device):
        self.depth, self.device = depth, device
        self.auto = setting == "auto" and device.type == "cuda"
        self.recomputed = configured_count(setting, depth)
        self.peaks: list[int] = []
        self.decided = False

    def before(self) -> int:
        """Blocks recomputed in the coming iteration: the first ones, an int for
        `Infinity.forward_train(checkpointing=...)`."""
        if self.measuring():
            torch.cuda.reset_peak_memory_stats(self.device)
            self.recomputed = self.depth - 1 - len(self.peaks)  # keep the last one, then two
        return self.recomputed

    def after(self) -> None:
        """Read the finished iteration's peak while measuring; decide after the second."""
        if not self.measuring():
            return
        self.peaks.append(torch.cuda.max_memory_allocated(self.device))
        free, _ = torch.cuda.mem_get_info(self.device)
        capacity = free + torch.cuda.memory_reserved(self.device)
        over_budget = self.peaks[0] > MEMORY_FRACTION * capacity
        if len(self.peaks) == 1 and (over_budget or self.depth == 1):
            self.decided = True  # no riskier second measurement (or nothing more to try)
            self.recomputed = self.depth if over_budget else 0
        elif len(self.peaks) == 2:
            self.decided = True
            self.recomputed = self.depth - blocks_to_keep(*self.peaks, capacity, self.depth)

    def measuring(self) -> bool:
        return self.auto and not self.decided
