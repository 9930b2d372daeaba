"""Scale-wise weights of the cross-entropy: coarse scales shape the subject, fine ones add detail.

A weight per scale k = 1..K (K = 13 at 1024 px):

    released   1.0 for k <= 8, 0.5 after (the release hard-codes this step)
    uniform    1.0 for every k (plain Infinity training)
    step       1.0 for k <= weight_cutoff_scale, fine_scale_weight after
    geometric  scale_weight_decay ** (k - 1)

A cut-off at or beyond the last scale weighs every scale 1.0: at 512 px (10 scales) the
released step still applies, at the tiny model's 5 scales it equals uniform. One arm
config thus runs at any resolution.

Every token of scale k carries w_k. With per-token CE c_t (the 2-way CE of each of the 32
bits, averaged over the bits) the loss of one image is

    "tokens"  normalisation (released):  sum_t w_t c_t / L            (L = all tokens, 10,521)
    "weights" normalisation:             sum_t w_t c_t / sum_t w_t    (a weighted mean)

and the batch loss is the mean over images. Under "tokens", scaling the weights down also
scales the gradient down (the released step lowers it by ~46% at 1024 px, since 91% of
the tokens are in scales 9-13); "weights" keeps the loss on the CE scale for sweeps.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from varbench.errors import UserError
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.models.infinity.schedule import ScaleSchedule

RELEASED_CUTOFF = 8
RELEASED_FINE_WEIGHT = 0.5


def step_weights(num_scales: int, cutoff: int, fine_weight: float) -> list[float]:
    return [1.0 if k <= cutoff else float(fine_weight) for k in range(1, num_scales + 1)]


def geometric_weights(num_scales: int, decay: float) -> list[float]:
    return [float(decay) ** (k - 1) for k in range(1, num_scales + 1)]


def scale_weights(config: ARBoothConfig, num_scales: int) -> list[float]:
    """The per-scale weights w_1..w_K of `config` (module docstring)."""
    kind = config.scale_weights
    if kind == "released":
        return step_weights(num_scales, RELEASED_CUTOFF, RELEASED_FINE_WEIGHT)
    if kind == "uniform":
        return [1.0] * num_scales
    if kind == "step":
        return step_weights(num_scales, config.weight_cutoff_scale, config.fine_scale_weight)
    if kind == "geometric":
        return geometric_weights(num_scales, config.scale_weight_decay)
    raise ValueError(f"unknown scale_weights {kind!r}")


def token_weights(weights: Sequence[float], schedule: ScaleSchedule,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(L,) fp32: the weight of every token of `schedule` (its scale's weight)."""
    if len(weights) != schedule.num_scales:
        raise ValueError(f"{len(weights)} weights for {schedule.num_scales} scales")
    counts = torch.tensor(schedule.tokens_per_scale)
    return torch.repeat_interleave(torch.tensor(list(weights), dtype=torch.float32), counts).to(device)


def loss_normalizer(weights: torch.Tensor, normalization: str) -> float:
    """The divisor of sum_t w_t c_t: the number of tokens, or the sum of the weights."""
    if normalization == "tokens":
        return float(weights.numel())
    if normalization == "weights":
        total = float(weights.sum())
        if total <= 0:
            raise UserError("every scale weight is 0: the loss would be empty", "arbooth config",
                            "Give at least one scale a positive weight.")
        return total
    raise ValueError(f"unknown loss normalization {normalization!r}")
