"""The two losses of ARBooth: scale-weighted bitwise cross-entropy and prior distillation.

Logits are (B, L, 64): for each of the 32 bits of a token, the logits of the values 0 and 1
(`varbench.models.infinity.transformer.bit_logits` views them as (B, L, 32, 2)).

Cross-entropy (subject images): per token, the 2-way CE of every bit averaged over the 32
bits; weighted per token and normalised as in `scale_weights`; mean over the batch.

Distillation (class-prompt samples of the frozen teacher; not scale-weighted, as released):
  soft, over the 64-logit vector (released, quirk 4 faithful): per token
      KL(softmax(t / T) || softmax(s / T)) with one softmax over all 64 logits;
  soft, per bit (quirk 4 fixed): the KL of each bit's 2-way softmax, averaged over the 32 bits
      (the same averaging as the CE), which is the distribution the sampler draws from;
  hard: the bitwise CE against the teacher's per-bit argmax.
Then the mean over tokens (sum / L, as released) and over the batch. The weight lambda is
applied by the caller; no T^2 factor (as released).
All arithmetic is fp32 whatever the autocast state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from varbench.models.infinity.transformer import bit_logits


def bitwise_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, L) per-token CE: logits (B, L, 64), labels (B, L, 32) in {0, 1}; mean over bits."""
    pairs = bit_logits(logits.float())  # (B, L, 32, 2)
    per_bit = F.cross_entropy(pairs.permute(0, 3, 1, 2), labels.long(), reduction="none")  # (B, L, 32)
    return per_bit.mean(dim=-1)


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, token_weights: torch.Tensor,
                normalizer: float) -> torch.Tensor:
    """Scalar: mean over the batch of sum_t w_t CE_t / normalizer (see `scale_weights`)."""
    per_token = bitwise_ce(logits, labels)
    return (per_token * token_weights).sum(dim=-1).div(normalizer).mean()


def soft_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      per_bit: bool) -> torch.Tensor:
    """(B, L) per-token KL(teacher || student) at `temperature` (module docstring)."""
    s, t = student.float() / temperature, teacher.float() / temperature
    if per_bit:
        s, t = bit_logits(s), bit_logits(t)
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="none", log_target=True).sum(-1)
    return kl.mean(dim=-1) if per_bit else kl


def hard_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(B, L) per-token bitwise CE against the teacher's per-bit argmax."""
    targets = bit_logits(teacher.float()).argmax(dim=-1)  # (B, L, 32): 1 where logit(1) > logit(0)
    return bitwise_ce(student, targets)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float = 1.0,
                      per_bit: bool = False) -> torch.Tensor:
    """Scalar: mean over tokens and batch of the per-token distillation loss (no lambda)."""
    if kind == "soft":
        per_token = soft_distillation(student, teacher, temperature, per_bit)
    elif kind == "hard":
        per_token = hard_distillation(student, teacher)
    else:
        raise ValueError(f"unknown distillation kind {kind!r}")
    return per_token.mean()
