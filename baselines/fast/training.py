"""Training loops that compute the plain loops' steps with fewer, larger network calls
(every device; the same random draws in the same order).

  - `fused_training_loop` (Textual Inversion's `fuse_micro_batches`): a step's
    `grad_accumulation` micro-batches are drawn first and go through the networks as one
    batch. The same gradient: the mean of equal-size micro-batch means is the batch mean,
    and SD has no layer that couples a batch. Batch-1 calls leave most of a GPU idle.
  - `encoding_ahead` (Custom Diffusion's `encode_ahead`): the subject images of several
    steps are augmented ahead and encoded in one VAE call (compiled with `compile` on
    CUDA). Drawing several steps in a row consumes the random stream exactly as drawing
    them one per step, and the latent samples (device generator) are still taken per
    step, so only the encoder's batch size changes.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

from baselines.fast import calls
from baselines.training import Draw, Loss, autocast
from varbench.method import CellContext


def fused_training_loop(draw: Draw, loss: Loss, params: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                        steps: int, ctx: CellContext, dtype: torch.dtype, grad_accumulation: int = 1,
                        max_grad_norm: float | None = None) -> None:
    """`baselines.training.training_loop` with each step's micro-batches as one batch:
    `draw()` must give a tuple (e.g. a NamedTuple) of tensors batched on dimension 0, and
    `loss` batch means."""
    for step in range(1, steps + 1):
        with autocast(dtype, ctx.device):
            losses = loss(concatenated([draw() for _ in range(grad_accumulation)]))
        losses["loss"].backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ctx.fit_step(step, steps, **{name: value.detach() for name, value in losses.items()})


def concatenated(parts: list[tuple]) -> tuple:
    """Micro-batches (tuples or NamedTuples of tensors) -> one batch of the same type."""
    kind = type(parts[0])
    columns = [torch.cat(column) for column in zip(*parts)]
    return kind(*columns) if hasattr(kind, "_fields") else kind(columns)


class EncodedSteps:
    """Steps drawn `ahead` at a time, their subject images encoded in one call: an iterator
    of (the step's draws, the (mean, log-variance) moments of its images).

    `draw()` makes one step's random choices (a `.pixels` list of images); at the end of a
    fit up to `ahead - 1` drawn steps go unused (a fixed batch keeps one encoder shape:
    one compile, no re-tuning).
    """

    def __init__(self, draw: Callable[[], Any], encode: Callable[[torch.Tensor], torch.Tensor], ahead: int):
        self.draw, self.encode, self.ahead = draw, encode, ahead
        self.pending: deque[tuple[Any, torch.Tensor]] = deque()

    def __iter__(self) -> EncodedSteps:
        return self

    def __next__(self) -> tuple[Any, torch.Tensor]:
        if not self.pending:
            steps = [self.draw() for _ in range(self.ahead)]
            moments = self.encode(torch.stack([pixels for step in steps for pixels in step.pixels]))
            self.pending.extend(zip(steps, moments.split(len(steps[0].pixels))))
        return self.pending.popleft()


def encoding_ahead(config: Any, device: torch.device | str) -> Callable[[Callable[[], Any], Any], Iterator]:
    """A replacement for Custom Diffusion's plain `encoded_steps(draw_step, vae)` that
    encodes `config.encode_ahead` steps per VAE call."""

    def encoded_steps(draw_step: Callable[[], Any], vae: Any) -> Iterator[tuple[Any, torch.Tensor]]:
        # The VAE encoder has no gradient and runs eager or compiled: a CUDA graph measured
        # no faster.
        moments = calls.fast_call(calls.LatentMoments(vae), dataclasses.replace(config, cuda_graphs=False), device,
                                  training=False)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            # As the plain encoding: bf16 weights, outside the step's autocast.
            with torch.no_grad(), torch.autocast(pixels.device.type, enabled=False):
                return moments(pixels.to(vae.dtype))

        return EncodedSteps(draw_step, encode, config.encode_ahead)

    return encoded_steps
