"""A pool of pretraining scenes rendered once, for training on a GPU: rendering costs
about a millisecond a scene on one CPU core, more than a toy model's step on a GPU, so the
GPU recipes render a pool up front (in worker processes) and draw their batches from it.
Draws come from `step_random`, seeded by (seed, stage, step) alone, so a run resumed at
step k draws what an uninterrupted run would have."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from varbench.toyworld.world import Scene, caption, pretraining_scenes, render_batch

RENDER_CHUNK = 512  # scenes per worker task


@dataclass
class Pool:
    """Pretraining scenes, their pictures (N, 64, 64, 3 uint8) and captions."""

    scenes: list[Scene]
    images: np.ndarray
    captions: list[str]


def render_pool(count: int, seed: int, workers: int = 1) -> Pool:
    """`count` pretraining scenes of `seed`, rendered in `workers` processes."""
    scenes = pretraining_scenes(count, seed=seed * 1_000_003 + 777_777)
    chunks = [scenes[i:i + RENDER_CHUNK] for i in range(0, count, RENDER_CHUNK)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            images = np.concatenate(list(pool.map(render_batch, chunks)))
    else:
        images = np.concatenate([render_batch(chunk) for chunk in chunks])
    return Pool(scenes, images, [caption(scene) for scene in scenes])


def step_random(seed: int, stage: int, step: int, device: torch.device) -> tuple[np.random.Generator, torch.Generator]:
    """The randomness of one step, from (seed, stage, step) alone: a resumed run draws
    what an uninterrupted one would have."""
    rng = np.random.default_rng([0x5D, seed, stage, step])
    return rng, torch.Generator(device).manual_seed(int(rng.integers(2**62)))
