"""Pretraining the toyworld's metric encoders (backbones.py) on freshly rendered scenes.

CLIP: image-text contrastive, as CLIP was trained, on (scene, caption) pairs from
`world.pretraining_scenes`. Captions repeat within a batch ("a dog in the snow" many
times), so every pair with the same caption counts as a positive (a multi-positive
InfoNCE in both directions); the temperature is learned, as in CLIP.

DINO: the DINO metric asks "is this the same thing?", so the toy encoder learns instance
discrimination directly: each batch holds two renders of each of B instances (different
pose, context or plain room, never a modifier, which changes the instance's looks), and
a supervised contrastive loss on the normalised class token (the embedding the metric
reads) pulls the two renders of an instance together and pushes other instances away.
Instances are drawn from thousands per class, so the encoder must read colours, patterns
and parts instead of remembering ids; the held-out subjects are never drawn.

Pixels go through the metric modes' canonical preprocessing, done on tensors: CLIP
224 px bicubic + CLIP normalisation; DINO 256 px bicubic, centre crop 224, ImageNet
normalisation. Everything random comes from the seed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from varbench.toyworld.pool import Pool, render_pool, step_random
from varbench.toyworld.world import (
    CLASSES, CONTEXT_NAMES, HELD_OUT_START, Pose, Scene, caption, pretraining_scenes, render_batch,
)

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DINO_INSTANCES = 4096  # pretraining instances per class the DINO encoder sees


@dataclass
class Schedule:
    steps: int
    batch: int
    learning_rate: float
    warmup: int = 100

    def rate(self, step: int) -> float:
        """Linear warm-up, then cosine decay to zero."""
        if step < self.warmup:
            return self.learning_rate * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        # a Python float: a numpy one in the optimizer's state would make checkpoints
        # unreadable by torch.load(weights_only=True), so runs could not resume
        return float(self.learning_rate * 0.5 * (1 + np.cos(np.pi * progress)))


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> the CLIP input (N, 3, 224, 224), on the pictures' device."""
    x = images.permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False).clamp(0, 1)
    return _normalise(x, CLIP_MEAN, CLIP_STD)


def dino_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> the canonical DINO input (N, 3, 224, 224)."""
    x = images.permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(256, 256), mode="bicubic", align_corners=False).clamp(0, 1)
    return _normalise(x[:, :, 16:240, 16:240], IMAGENET_MEAN, IMAGENET_STD)


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]


def multi_positive_nce(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row's softmax against the uniform distribution over its
    positives (`positives`: boolean, at least one per row)."""
    target = positives.float() / positives.float().sum(1, keepdim=True)
    return -(target * F.log_softmax(similarity, dim=1)).sum(1).mean()


# ---- CLIP --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipRecipe:
    """How much CLIP pretraining, and where its batches come from: fresh scenes rendered
    every step (`pool` 0; every pair is new, and rendering is the cost on a CPU anyway), or
    a pool of `pool` scenes rendered once (pool.py; a GPU outruns the renderer)."""

    schedule: Schedule
    pool: int = 0


# "cpu": the recipe of the first shipped weights (about an hour on the 2-core CPU; it names
# the context of real pictures but their class only half the time); "gpu": 20 times as many
# pairs in larger batches (more same-context pairs of different classes per batch).
CLIP_RECIPES = {"cpu": ClipRecipe(Schedule(steps=1200, batch=128, learning_rate=2e-3)),
                "gpu": ClipRecipe(Schedule(steps=6000, batch=512, learning_rate=1e-3, warmup=300), pool=131072)}

# a batch: CLIP pixels, token ids, and one integer per caption (equal captions, equal keys)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def fresh_batches(tokenizer: Callable, batch: int, seed: int, device: torch.device) -> Callable[[int], Batch]:
    """Step -> a batch of newly rendered pretraining scenes."""
    def draw(step: int) -> Batch:
        scenes = pretraining_scenes(batch, seed=seed * 1_000_003 + step)
        texts = [caption(scene) for scene in scenes]
        keys = np.unique(texts, return_inverse=True)[1]
        pixels = clip_pixels(torch.from_numpy(render_batch(scenes))).to(device)
        return pixels, tokenizer(texts).to(device), torch.from_numpy(keys).to(device)
    return draw


def pool_batches(tokenizer: Callable, pool: Pool, batch: int, seed: int, device: torch.device) -> Callable[[int], Batch]:
    """Step -> a batch drawn from `pool`, which moves to `device` once."""
    texts, keys = np.unique(pool.captions, return_inverse=True)
    tokens = tokenizer(list(texts)).to(device)  # each distinct caption tokenized once
    images, keys = torch.from_numpy(pool.images).to(device), torch.from_numpy(keys).to(device)

    def draw(step: int) -> Batch:
        rng, _ = step_random(seed, 3, step, device)
        rows = torch.from_numpy(rng.integers(len(images), size=batch)).to(device)
        return clip_pixels(images[rows]), tokens[keys[rows]], keys[rows]
    return draw


def train_clip(model: torch.nn.Module, tokenizer: Callable, recipe: ClipRecipe, seed: int, device: torch.device,
               advance: Callable[[int, float], None], workers: int = 1) -> list[float]:
    """Train `model` (an open_clip CLIP) in place; returns the loss of every step."""
    schedule = recipe.schedule
    if recipe.pool:
        draw = pool_batches(tokenizer, render_pool(recipe.pool, seed, workers), schedule.batch, seed, device)
    else:
        draw = fresh_batches(tokenizer, schedule.batch, seed, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.learning_rate, weight_decay=0.05)
    model.train().to(device)
    losses = []
    for step in range(schedule.steps):
        pixels, tokens, keys = draw(step)
        image = F.normalize(model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image @ text.T
        same = keys[:, None] == keys[None, :]
        loss = (multi_positive_nce(logits, same) + multi_positive_nce(logits.T, same)) / 2
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
    return losses


# ---- DINO --------------------------------------------------------------------------------
def instance_pairs(count: int, seed: int) -> list[Scene]:
    """Two renders of each of `count` pretraining instances: [a0, b0, a1, b1, ...]."""
    rng = np.random.default_rng([0xD1, seed])
    scenes = []
    for _ in range(count):
        class_name = CLASSES[rng.integers(len(CLASSES))].name
        instance_id = int(rng.integers(DINO_INSTANCES))
        for _ in range(2):
            context = None if rng.random() < 0.3 else CONTEXT_NAMES[rng.integers(len(CONTEXT_NAMES))]
            scale = int(rng.integers(55, 96))
            room = (100 - scale) * 64 // 200 + 2
            pose = Pose(bool(rng.integers(2)), scale, int(rng.integers(-room, room + 1)),
                        int(rng.integers(-room, room + 1)), int(rng.integers(-2, 3)))
            scenes.append(Scene(class_name, instance_id, context, None, pose, int(rng.integers(2**31))))
    assert all(scene.instance_id < HELD_OUT_START for scene in scenes)
    return scenes


def train_dino(model: torch.nn.Module, schedule: Schedule, seed: int, device: torch.device,
               advance: Callable[[int, float], None], temperature: float = 0.1) -> list[float]:
    """Train `model` (a timm ViT) in place on instance pairs; returns the step losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.learning_rate, weight_decay=0.05)
    model.train().to(device)
    losses = []
    for step in range(schedule.steps):
        scenes = instance_pairs(schedule.batch // 2, seed * 1_000_003 + step)
        pixels = dino_pixels(torch.from_numpy(render_batch(scenes))).to(device)
        embedding = F.normalize(model.forward_features(pixels)[:, 0], dim=-1)
        keys = [(scene.class_name, scene.instance_id) for scene in scenes]
        same = torch.tensor([[a == b for b in keys] for a in keys], device=device)
        eye = torch.eye(len(scenes), dtype=torch.bool, device=device)
        similarity = (embedding @ embedding.T / temperature).masked_fill(eye, -1e4)  # finite: 0 x log p must stay 0
        loss = multi_positive_nce(similarity, same & ~eye)
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
    return losses


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    optimizer.step()
