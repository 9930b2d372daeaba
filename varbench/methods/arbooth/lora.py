"""ARBooth with LoRA (`layers: [lora, identifier]`): low-rank updates instead of full tensors.

Each adapted linear layer (the `lora_parts` of every block, cross-attention + FFN by
default) trains two small matrices, A (rank x in) and B (out x rank), and computes with

    W' = W + (alpha / rank) * B @ A

The update is a torch parametrization of the layer's `weight`, not a side branch: the
Infinity layers read `.weight` directly (fused q/k/v biases, the speed layer's fused
GELU), and a parametrization reaches every such read with the model code unchanged. The
cost of that choice: W' is formed in every forward, so the weight gradient is computed at
full size and then reduced to A and B. LoRA here saves memory (no fp32 master weights, no
moments, no teacher copy of W) and artifact size (megabytes, not gigabytes), not FLOPs.

Initialisation follows peft's default: A uniform in +-1/sqrt(in) (kaiming-uniform with
a = sqrt(5)), B zero, so a fit starts exactly at the base model; A is drawn from a
generator seeded by the fit seed. After the fit the update is merged into W (in fp32,
then stored in W's dtype) and the parametrization removed, so the same module objects
generate (CUDA graphs and compiled blocks stay valid). An artifact holds only A and B
(peft's names, `<layer>.lora_A.weight` / `<layer>.lora_B.weight`); loading merges them the
same way, so a loaded model generates exactly what the fitted one did.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from varbench.methods.arbooth.config import ARBoothConfig, lora_scale
from varbench.methods.arbooth.tuned_layers import lora_modules, lora_parts
from varbench.models.infinity.transformer import Infinity
from varbench.seeding import derive_seed


class LowRankUpdate(nn.Module):
    """The parametrization W -> W + scale * B @ A (in W's dtype: bf16 under the fit's storage)."""

    def __init__(self, weight: torch.Tensor, rank: int, scale: float, generator: torch.Generator):
        super().__init__()
        out_features, in_features = weight.shape
        bound = 1 / math.sqrt(in_features)
        down = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(down.to(weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=weight.device))
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.scale * (self.lora_B @ self.lora_A)).to(weight.dtype)


def target_layers(model: Infinity, config: ARBoothConfig) -> list[str]:
    """Module paths of the linear layers `config` adapts (none without "lora" in layers)."""
    parts = lora_parts(config.layers, config.lora_parts)
    if not parts:
        return []
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return lora_modules(linear, parts, model.config.depth, model.config.blocks_per_chunk, config.block_range)


def artifact_shapes(model: Infinity, config: ARBoothConfig) -> dict[str, tuple[int, int]]:
    """Artifact tensor name -> shape of every adapter `config` trains."""
    shapes = {}
    for name in target_layers(model, config):
        out_features, in_features = model.get_submodule(name).weight.shape
        shapes[f"{name}.lora_A.weight"] = (config.lora_rank, in_features)
        shapes[f"{name}.lora_B.weight"] = (out_features, config.lora_rank)
    return shapes


def add_adapters(model: Infinity, config: ARBoothConfig, fit_seed: int) -> dict[str, LowRankUpdate]:
    """Register a fresh LowRankUpdate on every target layer; returns them by layer path."""
    generator = torch.Generator().manual_seed(derive_seed("lora", fit_seed))
    adapters = {}
    for name in target_layers(model, config):
        layer = model.get_submodule(name)
        adapters[name] = LowRankUpdate(layer.weight, config.lora_rank, lora_scale(config), generator)
        parametrize.register_parametrization(layer, "weight", adapters[name])
    return adapters


def adapter_tensors(adapters: Mapping[str, LowRankUpdate]) -> dict[str, torch.Tensor]:
    """What the artifact stores: A and B of each adapter under peft's names."""
    tensors = {}
    for name, adapter in adapters.items():
        tensors[f"{name}.lora_A.weight"] = adapter.lora_A.detach()
        tensors[f"{name}.lora_B.weight"] = adapter.lora_B.detach()
    return tensors


def merge_adapters(model: Infinity, adapters: Mapping[str, LowRankUpdate]) -> None:
    """Fold each registered adapter into its weight and remove the parametrization."""
    with torch.no_grad():
        for name, adapter in adapters.items():
            layer = model.get_submodule(name)
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            merge_into(layer.weight, adapter.lora_A, adapter.lora_B, adapter.scale)


def merge_tensors(model: Infinity, config: ARBoothConfig, tensors: Mapping[str, torch.Tensor]) -> None:
    """Fold an artifact's A and B into the base weights (no parametrization involved)."""
    with torch.no_grad():
        for name in target_layers(model, config):
            weight = model.get_submodule(name).weight
            merge_into(weight, tensors[f"{name}.lora_A.weight"].to(weight.device),
                       tensors[f"{name}.lora_B.weight"].to(weight.device), lora_scale(config))


def merge_into(weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: float) -> None:
    """weight <- weight + scale * up @ down, summed in fp32 and stored in weight's dtype
    (the one rounding both the fitted and the loaded model go through)."""
    merged = weight.float() + scale * (up.float() @ down.float())
    weight.copy_(merged.to(weight.dtype))
