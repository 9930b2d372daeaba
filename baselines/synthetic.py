"""Synthetic subjects and small configs for tests, the offline `smoke` protocol and timings.

Nothing here measures method quality: the images are random smooth colour fields and the
`SMOKE_*` configs run the tiny random-init components (`base_model: tiny`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from varbench.data.subject import Subject

# Config overrides that make a baseline cell take seconds on a CPU (tiny components,
# 64 px, 10 sampler steps, a few fit steps). Everything else keeps the release default.
SMOKE_COMMON: dict[str, Any] = {"base_model": "tiny", "revision": None, "resolution": 64, "sample_steps": 10}
SMOKE_CONFIGS: dict[str, dict[str, Any]] = {
    "dreambooth": {**SMOKE_COMMON, "steps": 30, "num_class_images": 4},
    "custom_diffusion": {**SMOKE_COMMON, "steps": 20, "num_class_images": 4},
    "textual_inversion": {**SMOKE_COMMON, "steps": 10},
}


def synthetic_subject(folder: Path, count: int = 3, size: int = 96, seed: int = 0,
                      class_noun: str = "dog", name: str = "synthetic") -> Subject:
    """`count` PNGs of smooth random colour fields written to `folder`, as a Subject."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        # A coarse random grid upsampled smoothly: image-like low frequencies, unlike noise.
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), resample=Image.Resampling.BICUBIC)
        path = folder / f"{index:02d}.png"
        image.save(path)
        paths.append(path)
    return Subject(name=name, class_noun=class_noun, live=True, image_paths=tuple(paths))
