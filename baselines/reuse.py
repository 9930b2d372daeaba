"""Reusing a loaded Stable Diffusion base across a worker's cells (the baselines'
`Method.snapshot_base` / `restore_base`).

A cell changes its base in many ways: DreamBooth trains every UNet weight and its
artifact replaces the UNet; Custom Diffusion puts attention processors with trained K/V
into the UNet; Custom Diffusion and Textual Inversion add a word to the tokenizer and a
row to the embedding table (which grows in place); on CUDA the frozen networks are cast to
bf16; and the speed layer (baselines/fast) leaves module classes, weight layouts and
attention projections of a sampling pipeline's networks changed. Rather than undoing each
change on its own, the snapshot records the three networks as loaded, every submodule's
class and attributes (parameters, buffers and children included) and a CPU copy of every
tensor, and the restore puts exactly that back into the same module objects, so that
what was compiled for them stays valid. The tokenizer, which learns words in place, is
restored from a copy.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch

from varbench.models.diffusion import DiffusionComponents

NETWORKS = ("text_encoder", "vae", "unet")
# The mutable containers among a module's attributes (exact types: diffusers' frozen
# config dict is a dict subclass that never changes).
CONTAINERS = (dict, OrderedDict, set, list)


@dataclass
class NetworkState:
    """A module tree as it was: each submodule with its class and attributes, and each
    tensor's value (on the CPU) and whether it required gradients."""

    modules: list[tuple[torch.nn.Module, type, dict[str, Any]]]
    tensors: dict[str, tuple[torch.Tensor, bool]]


@dataclass
class BaseState:
    tokenizer: Any
    networks: dict[str, tuple[torch.nn.Module, NetworkState]]  # field of DiffusionComponents -> its state
    vocab_size: int  # the text encoder's config entry, which growing the embedding table changes


def snapshot_components(components: DiffusionComponents) -> BaseState:
    networks = {name: (getattr(components, name), snapshot_network(getattr(components, name))) for name in NETWORKS}
    return BaseState(copy.deepcopy(components.tokenizer), networks, components.text_encoder.config.vocab_size)


def restore_components(components: DiffusionComponents, state: BaseState) -> None:
    """Put `components` back as they were at `snapshot_components` (module docstring)."""
    components.tokenizer = copy.deepcopy(state.tokenizer)  # the snapshot's copy stays clean
    for name, (network, network_state) in state.networks.items():
        restore_network(network, network_state)
        setattr(components, name, network)  # DreamBooth's artifact brings its own UNet
    components.text_encoder.config.vocab_size = state.vocab_size


def snapshot_network(network: torch.nn.Module) -> NetworkState:
    modules = [(module, type(module), _attributes(module)) for module in network.modules()]
    tensors = {name: (tensor.detach().to("cpu", copy=True), tensor.requires_grad)
               for name, tensor in _named_tensors(network)}
    return NetworkState(modules, tensors)


def restore_network(network: torch.nn.Module, state: NetworkState) -> None:
    """Classes and attributes first (which also drops children, parameters and buffers
    added since), then every tensor's value, dtype and layout, in place."""
    for module, cls, attributes in state.modules:
        module.__class__ = cls
        _put_back(module.__dict__, attributes)
    with torch.no_grad():
        for name, tensor in _named_tensors(network):
            saved, requires_grad = state.tensors[name]
            if (tensor.dtype, tensor.shape, tensor.stride()) == (saved.dtype, saved.shape, saved.stride()):
                tensor.copy_(saved)
            else:  # cast, re-laid out or grown since: the same object gets storage like the saved one
                tensor.data = saved.to(tensor.device, copy=True)
            if isinstance(tensor, torch.nn.Parameter):
                tensor.grad = None
                tensor.requires_grad_(requires_grad)


def _named_tensors(network: torch.nn.Module) -> chain:
    return chain(network.named_parameters(), network.named_buffers())


def _attributes(module: torch.nn.Module) -> dict[str, Any]:
    """A copy of the module's attributes in which containers (its parameters, buffers,
    children, hooks) are copied too, so later changes to them do not reach the copy."""
    return {key: copy.copy(value) if type(value) in CONTAINERS else value
            for key, value in module.__dict__.items()}


def _put_back(current: dict[str, Any], saved: dict[str, Any]) -> None:
    """Make the attribute dict `current` equal to `saved` again. Containers present in
    both are refilled rather than replaced: whatever refers to a module's parameter or
    child dict (compiled code's guards, say) keeps referring to the live one."""
    for key in [key for key in current if key not in saved]:
        del current[key]
    for key, value in saved.items():
        now = current.get(key)
        if type(value) in CONTAINERS and type(now) is type(value):
            now.clear()
            if isinstance(now, list):
                now.extend(value)
            else:
                now.update(value)
        else:
            current[key] = copy.copy(value) if type(value) in CONTAINERS else value
