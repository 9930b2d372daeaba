"""The fit's optimizers: torch's AdamW, or an AdamW keeping its moments in bf16.

`optimizer_states: bf16` (the 24 GB recipe) halves the memory of the two AdamW moments of
the tuned block tensors: 12.9 -> 6.4 GB at Infinity-2B with the released layers. The
update rule is torch's AdamW (decoupled weight decay, bias-corrected moments, eps added
to the corrected root): each step computes in fp32 and then rounds the moments to bf16
for storage, so results differ slightly from fp32 states (a test checks the rule equals
torch's with fp32 storage).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Iterable

import torch

from varbench.methods.arbooth.config import ARBoothConfig


class RoundedStateAdamW(torch.optim.Optimizer):
    """AdamW storing each group's moments in its `state_dtype` (default bf16)."""

    def __init__(self, groups: Iterable[dict], lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, state_dtype: torch.dtype = torch.bfloat16):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "state_dtype": state_dtype}
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)

    def _update(self, param: torch.Tensor, group: dict) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, dtype=group["state_dtype"])
            state["exp_avg_sq"] = torch.zeros_like(param, dtype=group["state_dtype"])
        state["step"] += 1
        grad = param.grad.float()
        first = state["exp_avg"].float().lerp_(grad, 1 - beta1)
        second = state["exp_avg_sq"].float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        state["exp_avg"].copy_(first)
        state["exp_avg_sq"].copy_(second)
        correction1 = 1 - beta1 ** state["step"]
        correction2 = 1 - beta2 ** state["step"]
        denominator = (second.sqrt() / math.sqrt(correction2)).add_(group["eps"])
        updated = param.float().mul_(1 - group["lr"] * group["weight_decay"])
        updated.addcdiv_(first, denominator, value=-group["lr"] / correction1)
        param.copy_(updated)


def make_adamw(groups: list[dict], config: ARBoothConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over parameter groups (each a dict with "params" and optionally "lr" and
    "state_dtype"); torch's own (one fused kernel on CUDA) unless a group keeps its moments
    in another dtype than fp32."""
    options = {"lr": config.learning_rate, "betas": (config.adam_beta1, config.adam_beta2),
               "eps": config.adam_epsilon, "weight_decay": config.weight_decay}
    if any(group.get("state_dtype", torch.float32) != torch.float32 for group in groups):
        return RoundedStateAdamW(groups, **options)
    plain = [{key: value for key, value in group.items() if key != "state_dtype"} for group in groups]
    # One fused kernel for all tensors on CUDA (older torch releases lack the option).
    if device.type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        options["fused"] = True
    return torch.optim.AdamW(plain, **options)


def state_dtype(config: ARBoothConfig) -> torch.dtype:
    return torch.bfloat16 if config.optimizer_states == "bf16" else torch.float32
