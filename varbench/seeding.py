"""Seeds derived from names, never from order.

The seed of a generated image is a hash of (base seed, subject, prompt index, sample
index), so an image is the same whether it was generated alone, in a batch of 8, by
worker 3 or after a resume. Fit seeds hash (base seed, subject, arm name).
"""
from __future__ import annotations

import hashlib
import random

SEED_BITS = 63  # torch.Generator.manual_seed takes any non-negative int64


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (same parts -> same seed)."""
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def image_seed(base_seed: int, subject: str, prompt_index: int, sample_index: int) -> int:
    return derive_seed("image", base_seed, subject, prompt_index, sample_index)


def fit_seed(base_seed: int, subject: str, arm: str) -> int:
    return derive_seed("fit", base_seed, subject, arm)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (for code that uses them)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
