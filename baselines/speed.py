"""Speed options of the diffusion baselines: how a network call runs on a GPU.

Every option is a field of `DiffusionConfig` (see its comments) and acts on CUDA only; on
the CPU none of them changes anything, so CPU results (the tests) are the same with them
on or off.

  - `cudnn_benchmark`: cuDNN times its convolution algorithms once per input shape and
    keeps the fastest (off by default: no gain measured on an H100, seconds of timing
    per new shape). Set for the duration of `speed_context` only.
  - `attention_backend`: which fused scaled-dot-product-attention kernel PyTorch tries
    first ("auto" lets PyTorch choose), also set by `speed_context`.
  - `channels_last` (fit) and `channels_last_sampling`: UNet and VAE convolutions in NHWC
    memory order, the layout the tensor cores read directly; measured faster for
    training, slower for (uncompiled) sampling, where GroupNorm dominates more (Custom
    Diffusion's per-step VAE encoder is GroupNorm-bound too and stays NCHW).
  - `compile` and `cuda_graphs`: `accelerate()` wraps a module so that it runs compiled
    (`torch.compile`, default mode, fixed shapes) and/or replayed as a CUDA graph that was
    captured at its first call. A graph replays a whole forward (and, when training, a
    whole backward) with one launch, which removes the per-kernel CPU cost that dominates
    small batches. Compiled GroupNorms compute per-channel statistics first (the same
    function; inductor's own GroupNorm reduction is slow on NHWC activations: compiled
    sampling@4 0.258 -> 0.233 s/image, `varbench.models.groupnorm`). If compiling or
    capturing fails (an old torch, an op that cannot be captured), one warning is issued
    and the module runs as before: a speed option never fails a cell.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from varbench.errors import warn_fallback
from varbench.models.groupnorm import use_channel_stats

TRAINING_WARMUP_CALLS = 3  # make_graphed_callables' warm-up iterations before capture
INFERENCE_WARMUP_CALLS = 2


def on_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


@contextlib.contextmanager
def speed_context(config: Any, device: torch.device | str) -> Iterator[None]:
    """cuDNN autotuning and the attention backend of `config`, for the duration of a fit
    or a sampling call (the previous global settings are restored after)."""
    if not on_cuda(device):
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(config.cudnn_benchmark)
    try:
        with attention_backend(config.attention_backend):
            yield
    finally:
        torch.backends.cudnn.benchmark = previous


def attention_backend(name: str) -> contextlib.AbstractContextManager:
    """SDPA tries kernel `name` first and the others where it cannot run a shape (e.g. the
    VAE's head dim of 512). Needs `sdpa_kernel(..., set_priority=True)`; older torch keeps
    its own choice (forcing one kernel there would send every unsupported shape to the
    slow math kernel, and early cuDNN attention releases were not trusted by default)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if "set_priority" not in inspect.signature(sdpa_kernel).parameters:
        return contextlib.nullcontext()
    kernels = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
    order = [kernels[name]] + [k for key, k in kernels.items() if key != name] + [SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def set_memory_format(modules: Sequence[torch.nn.Module], channels_last: bool, device: torch.device | str) -> None:
    """NHWC (channels_last) or NCHW convolution weights, in place, on CUDA; activations
    follow the weights' layout. (Fits and sampling have separate options: the H100
    measurements favour NHWC for training and NCHW for eager/graphed sampling.)"""
    if on_cuda(device):
        for module in modules:
            module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def to_contiguous(module: torch.nn.Module) -> None:
    """Back to the standard layout (safetensors stores only contiguous tensors)."""
    module.to(memory_format=torch.contiguous_format)


def accelerate(module: torch.nn.Module, config: Any, device: torch.device | str, training: bool,
               allow_compile: bool = True) -> Callable[..., Any]:
    """`module` itself, or a wrapper that runs it compiled and/or as CUDA graphs, per `config`.

    Arguments must be tensors (positional). With `training`, gradients flow as through
    the module itself (to its trainable parameters and to inputs that require grad).
    """
    use_compile = bool(config.compile) and allow_compile
    if not on_cuda(device) or not (use_compile or config.cuda_graphs):
        return module
    return Accelerated(module, training, use_compile, bool(config.cuda_graphs))


class Accelerated:
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
        self.compiled: Callable[..., Any] | None = None
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
        if self.compiled is None:
            use_channel_stats(self.module)  # compiled GroupNorms reduce per channel first (varbench.models.groupnorm)
            self.compiled = torch.compile(self.module, dynamic=False)
        try:
            # Compile now (forward, and backward when training), on copies of the real
            # arguments, so a failure shows here and not in the middle of a step.
            samples = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
            run_once(self.compiled, self.module, samples, self.training)
            check_same_outputs(self.compiled, self.module, samples, self.training)
            return self.compiled
        except Exception as err:  # noqa: BLE001 - see above
            warn_fallback(f"torch.compile of {name}", err, "running eager")
            self.compile = False
            return self.module


def check_same_outputs(runner: Callable[..., Any], module: torch.nn.Module, args: Sequence[torch.Tensor],
                       training: bool, tolerance: float = 0.25) -> None:
    """Raise if `runner` (graphed/compiled) and the plain module disagree on `args` by more
    than bf16 rounding and kernel choice explain (relative error of the norms). A guard
    against gross failures (wrong buffers, garbage), not a numerics test: bf16 differences
    between fused and unfused kernels reach a few percent through a random-init UNet, and
    guidance (x 7.5) amplifies them (seen: 5% for compiled vs eager on an H100).

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


# --- the networks' calls, as modules with tensor-only arguments ----------------------------

class NoisePrediction(torch.nn.Module):
    """UNet(noisy latents, timesteps, text states) -> predicted noise (a plain tensor)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, timesteps, states, return_dict=False)[0]


class TextStates(torch.nn.Module):
    """Text encoder(token ids) -> last hidden states (what conditions the UNet)."""

    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)[0]


class LatentMoments(torch.nn.Module):
    """VAE encoder(pixels) -> the (mean, log-variance) tensor of the latent distribution."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels).latent_dist.parameters
