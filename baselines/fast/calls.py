"""Network calls run compiled and/or replayed as CUDA graphs, with a fallback that never
fails a cell, and how a fit's plain network calls are routed to them.

`fast_call(module, config, device, training)` gives `module` itself, or a `FastCall`
that runs it compiled (`torch.compile`, default mode, fixed shapes, a version per setting
of SDPA's kernel switches: `Compiled`) and/or as a CUDA graph captured at its first call
per argument shapes. A graph replays a whole forward (and, when training, a whole
backward) with one launch, which removes the per-kernel CPU cost that dominates small
batches; it runs the plain kernels. If compiling or capturing fails (an old torch, an op
that cannot be captured) or gives other values than the plain module, one warning is
issued and the module runs as before: a speed option never fails a cell.

`route_unet_calls` / `route_text_encoder_calls` make a module's own calls (`unet(noisy,
t, states, return_dict=False)`, `text_encoder(ids)[0]`, as the plain training code
writes them) run through such a `FastCall` while gradients are on; everything else (no
gradient, other arguments, a deep copy of the module) runs the module's own forward.
`route_keyword_calls` does the same for a LoRA family's denoiser, whose calls pass their
tensors by keyword (one `FastCall` per set of keywords), in a fit or, without gradients,
in its pipeline's sampling loop (family_sampling.py).
"""
from __future__ import annotations

import contextlib
import inspect
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from baselines.fast import settings
from varbench.errors import warn_fallback

TRAINING_WARMUP_CALLS = 3  # make_graphed_callables' warm-up iterations before capture
INFERENCE_WARMUP_CALLS = 2


def on_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def fast_call(module: torch.nn.Module, config: Any, device: torch.device | str, training: bool,
              allow_compile: bool = True) -> Callable[..., Any]:
    """`module` itself, or a `FastCall` that runs it compiled and/or as CUDA graphs, per
    `config` (`compile`, `cuda_graphs`; CUDA only).

    Arguments must be tensors (positional). With `training`, gradients flow as through
    the module itself (to its trainable parameters and to inputs that require grad).
    """
    use_compile = bool(config.compile) and allow_compile
    if not on_cuda(device) or not (use_compile or config.cuda_graphs):
        return module
    return FastCall(module, training, use_compile, bool(config.cuda_graphs))


class FastCall:
    """Runs `module` compiled and/or as CUDA graphs, built lazily for each new set of
    argument shapes (from the real arguments of the first such call).

    A graph's outputs are overwritten by its next replay: callers use each output
    before the next call (every loop here does).
    """

    def __init__(self, module: torch.nn.Module, training: bool, compile: bool, cuda_graphs: bool):
        self.module = module
        self.training = training
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.compiled: Compiled | None = None
        self.runners: dict[tuple, Callable[..., Any]] = {}

    def __call__(self, *args: torch.Tensor) -> Any:
        key = tuple((tuple(a.shape), a.dtype, a.requires_grad) for a in args)
        if key not in self.runners:
            self.runners[key] = self._build(args)
        return self.runners[key](*args)

    def _build(self, args: Sequence[torch.Tensor]) -> Callable[..., Any]:
        runner: Callable[..., Any] = self.module
        name = type(self.module).__name__
        if self.compile:
            runner = self._compiled_or_eager(args, name)
        if not self.cuda_graphs:
            return runner
        samples = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
        try:
            if self.training:
                graphed = capture_training_graph(runner, samples)
            else:
                graphed = InferenceGraph(runner, samples)
            check_same_outputs(graphed, self.module, args, self.training)
            return graphed
        except Exception as err:  # noqa: BLE001 - a speed option must never fail a cell
            warn_fallback(f"CUDA graph capture of {name}", err, "running without graphs")
            return runner

    def _compiled_or_eager(self, args: Sequence[torch.Tensor], name: str) -> Callable[..., Any]:
        try:
            if self.compiled is None:
                self.compiled = Compiled(self.module)
            # Compile now (forward, and backward when training), on copies of the real
            # arguments, so a failure shows here and not in the middle of a step.
            samples = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
            breaks = graph_breaks()
            run_once(self.compiled, self.module, samples, self.training)
            warn_graph_breaks(name, graph_breaks() - breaks)
            check_same_outputs(self.compiled, self.module, samples, self.training)
            return self.compiled
        except Exception as err:  # noqa: BLE001 - see above
            warn_fallback(f"torch.compile of {name}", err, "running eager")
            self.compile = False
            return self.module


class Compiled(torch.nn.Module):
    """`module` compiled (default mode, fixed shapes), each call specialised on SDPA's kernel
    switches of the moment (`SwitchKeyed`), with room for up to COMPILED_VERSIONS compiled
    versions. A module itself, so that a CUDA graph capture sees its parameters."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.optimized = torch.compile(SwitchKeyed(module), dynamic=False)

    def forward(self, *args: torch.Tensor) -> Any:
        switches = settings.sdpa_switches()
        with compiled_versions(COMPILED_VERSIONS), cache_tag(switches):
            return self.optimized(switches, *args)


class SwitchKeyed(torch.nn.Module):
    """`module(*args)`, given SDPA's kernel switches first. Compiled code keeps the attention
    kernel chosen when it was traced, and dynamo does not guard the switches: a fit with
    cuDNN attention allowed after one without it, in one process, ran the earlier fit's
    flash kernels (an H100, seventeenth session). Dynamo does guard a constant argument that
    the traced code reads, so the check below makes each switch setting a compiled version
    of its own (compiled once, reused whenever the switches are back). Only up to the
    module's first graph break, if it has one: FastCall warns of breaks."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, switches: str, *args: torch.Tensor) -> Any:
        if not switches.startswith("sdpa "):
            raise ValueError(f"expected SDPA switches (settings.sdpa_switches()), got {switches!r}")
        return self.module(*args)


# Every FastCall compiles this one function (SwitchKeyed.forward), so the versions of every
# module class share dynamo's limit per function: one version per module class, argument
# shapes, grad mode and switch setting. At its default (8) dynamo runs new versions
# uncompiled for the rest of the process, with only a log line; a worker fitting and
# sampling several families needs more (e.g. 4 families x (fit + sampling at 2 batch sizes)
# x 2 switch settings = 24).
COMPILED_VERSIONS = 64


def compiled_versions(limit: int) -> contextlib.AbstractContextManager:
    """Dynamo's limit on compiled versions of one function, raised to `limit` (older torch
    names it cache_size_limit)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(limit, getattr(config, name))})


def graph_breaks() -> int:
    """Graph breaks dynamo has met in this process so far."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


def warn_graph_breaks(name: str, breaks: int) -> None:
    """A module that breaks into several graphs still runs compiled, but the code after a
    break is not specialised on SDPA's switches (SwitchKeyed): say so, once per compile."""
    if breaks:
        warnings.warn(f"torch.compile of {name}: {breaks} graph break(s); the code after a break keeps the "
                      f"attention kernels it was first compiled with if SDPA's switches change", RuntimeWarning,
                      stacklevel=3)


def cache_tag(switches: str) -> contextlib.AbstractContextManager:
    """The switches in the key of torch's on-disk compile caches: the graph dynamo hands on
    is the same under any switches (the kernel is chosen after it), and AOT autograd's cache,
    shared by the processes of a machine, would give back code traced under other switches.
    A torch without the tag keeps that cache off around these calls instead."""
    config = getattr(torch.compiler, "config", None)
    if config is not None and hasattr(config, "cache_key_tag"):
        return config.patch(cache_key_tag=f"{config.cache_key_tag} varbench {switches}".strip())
    functorch = torch._functorch.config
    if getattr(functorch, "enable_autograd_cache", False):
        return functorch.patch(enable_autograd_cache=False)
    return contextlib.nullcontext()


def check_same_outputs(runner: Callable[..., Any], module: torch.nn.Module, args: Sequence[torch.Tensor],
                       training: bool, tolerance: float = 0.25) -> None:
    """Raise if `runner` (graphed/compiled) and the plain module disagree on `args` by more
    than bf16 rounding and kernel choice explain (relative error of the norms). A guard
    against gross failures (wrong buffers, garbage), not a numerics test: bf16 differences
    between fused and unfused kernels reach a few percent through a random-init UNet, and
    guidance (x 7.5) amplifies them.

    Called in the grad mode of real calls: compiled code is specialised on it, and a call
    in the other mode would compile a second time."""
    with contextlib.nullcontext() if training else torch.no_grad():
        expected = [t.detach().float() for t in torch.utils._pytree.tree_leaves(module(*args))]
        got = [t.detach().float() for t in torch.utils._pytree.tree_leaves(runner(*args))]
    for want, have in zip(expected, got):
        error = float((have - want).norm() / want.norm().clamp(min=1e-12))
        if not error <= tolerance:  # also catches NaN
            raise RuntimeError(f"outputs differ from the eager module's (relative error {error:.3g})")


def run_once(runner: Callable[..., Any], module: torch.nn.Module, args: Sequence[torch.Tensor],
             training: bool) -> None:
    """One call of `runner`, with a backward pass when training (gradients are returned
    by `torch.autograd.grad`, never accumulated into `.grad`)."""
    if not training:
        with torch.no_grad():
            runner(*args)
        return
    outputs = [o for o in torch.utils._pytree.tree_leaves(runner(*args)) if o.requires_grad]
    targets = [a for a in args if a.requires_grad] + [p for p in module.parameters() if p.requires_grad]
    if outputs and targets:
        torch.autograd.grad(outputs, targets, [torch.ones_like(o) for o in outputs], allow_unused=True)


def capture_training_graph(runner: Callable[..., Any], samples: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    """Forward and backward of `runner` as two CUDA graphs (torch.cuda.make_graphed_callables):
    parameters' gradients are accumulated into `.grad` by autograd as usual."""
    holder = ModuleHolder(runner)
    return torch.cuda.make_graphed_callables(holder, samples, num_warmup_iters=TRAINING_WARMUP_CALLS,
                                             allow_unused_input=True)


class ModuleHolder(torch.nn.Module):
    """A plain module around `runner` (e.g. a compiled module), so that
    make_graphed_callables sees its parameters and may replace this module's forward."""

    def __init__(self, runner: Callable[..., Any]):
        super().__init__()
        self.runner = runner

    def forward(self, *args: torch.Tensor) -> Any:
        return self.runner(*args)


class InferenceGraph:
    """`runner(*args)` without autograd, captured once as a CUDA graph and replayed.

    Inputs are copied into the captured buffers at every call; outputs are the captured
    output buffers (overwritten by the next replay).
    """

    def __init__(self, runner: Callable[..., Any], samples: tuple[torch.Tensor, ...]):
        self.inputs = samples
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(INFERENCE_WARMUP_CALLS):  # lazy initialisation stays out of the graph
                runner(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.outputs = runner(*self.inputs)

    def __call__(self, *args: torch.Tensor) -> Any:
        for buffer, value in zip(self.inputs, args):
            if buffer.data_ptr() != value.data_ptr():
                buffer.copy_(value)
        self.graph.replay()
        return self.outputs


# --- a fit's network calls, as modules with tensor-only arguments ---------------------------
# They call the class's forward: while a fit is routed, the instance's own `forward` leads
# back here.

class NoisePrediction(torch.nn.Module):
    """UNet(noisy latents, timesteps, text states) -> predicted noise (a plain tensor)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return type(self.unet).forward(self.unet, noisy, timesteps, states, return_dict=False)[0]


class TextStates(torch.nn.Module):
    """Text encoder(token ids) -> last hidden states (what conditions the UNet)."""

    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return type(self.text_encoder).forward(self.text_encoder, ids)[0]


class LatentMoments(torch.nn.Module):
    """VAE encoder(pixels) -> the (mean, log-variance) tensor of the latent distribution."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels).latent_dist.parameters


class KeywordCall(torch.nn.Module):
    """A denoiser called with keyword tensors (the LoRA families' `denoiser(hidden_states=...,
    timestep=..., return_dict=False)[0]`), taking them positionally in the order of `names`;
    a dotted name is an entry of a dict argument (SDXL's `added_cond_kwargs.time_ids`)."""

    def __init__(self, denoiser: torch.nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.denoiser = denoiser
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        keywords: dict[str, Any] = {}
        for name, tensor in zip(self.names, tensors):
            outer, _, inner = name.partition(".")
            if inner:
                keywords.setdefault(outer, {})[inner] = tensor
            else:
                keywords[name] = tensor
        return type(self.denoiser).forward(self.denoiser, **keywords, return_dict=False)[0]


# --- routing a module's own calls ----------------------------------------------------------

def route_unet_calls(unet: torch.nn.Module, runner: Callable[..., torch.Tensor]) -> Callable[[], None]:
    """`unet(sample, timestep, encoder_hidden_states[, return_dict])` with tensors and
    gradients on runs `runner(sample, timestep, encoder_hidden_states)`; returns the undo."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    def call(sample: Any = None, timestep: Any = None, encoder_hidden_states: Any = None, *rest: Any,
             return_dict: bool = True, **options: Any) -> Any:
        tensors = all(isinstance(t, torch.Tensor) for t in (sample, timestep, encoder_hidden_states))
        if rest or not tensors or any(value is not None for value in options.values()):
            return NotImplemented
        noise = runner(sample, timestep, encoder_hidden_states)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)

    return _route(unet, call)


def route_text_encoder_calls(text_encoder: torch.nn.Module,
                             runner: Callable[..., torch.Tensor]) -> Callable[[], None]:
    """`text_encoder(input_ids)` with gradients on runs `runner(input_ids)` (the last hidden
    states, which is what `[0]` of the output reads); returns the undo."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    def call(input_ids: Any = None, *rest: Any, **options: Any) -> Any:
        if rest or not isinstance(input_ids, torch.Tensor) or any(value is not None for value in options.values()):
            return NotImplemented
        return BaseModelOutputWithPooling(last_hidden_state=runner(input_ids))

    return _route(text_encoder, call)


def route_keyword_calls(denoiser: torch.nn.Module,
                        runner_for: Callable[[tuple[str, ...]], Callable[..., torch.Tensor]],
                        grad: bool = True) -> Callable[[], None]:
    """`denoiser(..., return_dict=False)` in one grad mode (`grad=True`: a fit's calls, with
    gradients on; False: a sampling loop's, without), whose arguments are tensors, dicts
    of tensors, or None where None is the default, runs `runner_for(names)(*tensors)`
    (`names` as `KeywordCall` reads them; one runner per set of names); returns the undo.
    Any other call (another argument, return_dict left on, the other grad mode) runs the
    denoiser's forward."""
    signature = inspect.signature(type(denoiser).forward)
    receiver = next(iter(signature.parameters))  # forward's `self`
    runners: dict[tuple[str, ...], Callable[..., torch.Tensor]] = {}

    def call(*args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        if return_dict:
            return NotImplemented
        try:
            bound = signature.bind(denoiser, *args, **kwargs).arguments
        except TypeError:
            return NotImplemented
        tensors = keyword_tensors(signature, {k: v for k, v in bound.items() if k != receiver})
        if tensors is None:
            return NotImplemented
        names = tuple(tensors)
        if names not in runners:
            runners[names] = runner_for(names)
        return (runners[names](*tensors.values()),)

    return _route(denoiser, call, grad)


def keyword_tensors(signature: inspect.Signature, arguments: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The call's tensors by (dotted) name, or None when an argument is something a
    captured graph cannot take as an input (a number, a flag, a None that is not the
    default). A None where None is the default is left out, and so is an empty options dict
    (`..._kwargs={}`, which diffusers' FLUX pipeline passes for "none"; diffusers reads it as
    None)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, value in arguments.items():
        if signature.parameters[name].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            return None
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            tensors.update({f"{name}.{key}": tensor for key, tensor in value.items()})
        elif signature.parameters[name].default is not None or not (value is None or is_empty_options(name, value)):
            return None
    return tensors


def is_empty_options(name: str, value: Any) -> bool:
    return name.endswith("_kwargs") and isinstance(value, dict) and not value


def _route(module: torch.nn.Module, call: Callable[..., Any], grad: bool = True) -> Callable[[], None]:
    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        # A deep copy of `module` gets this method bound to itself: it runs its own forward.
        if self is module and torch.is_grad_enabled() == grad:
            result = call(*args, **kwargs)
            if result is not NotImplemented:
                return result
        return type(self).forward(self, *args, **kwargs)

    routed = types.MethodType(forward, module)
    module.forward = routed

    def undo() -> None:
        if module.__dict__.get("forward") is routed:
            del module.forward

    return undo
