"""Scoring one cell: every generated image against the subject's reference photos.

The runner builds one `Scorer` per worker process (encoders load once) and calls
`score_cell(subject, images)` for each cell. It returns one row per (image, metric):

    metric   rows                         kind   prompt_index  sample_index  image
    dino     one per eval image           eval   p             s             "images/p003_s01.png"
    clip_i   one per eval image           eval   p             s             ...
    clip_t   one per eval image           eval   p             s             ...
    div      one per prompt (>= 2 images) eval   p             -1            ""
    pres     one per pres image           pres   -1            s             "pres/s00.png"

plus `metric`, `mode` (the protocol's metric mode, in every row) and `value`; the runner
adds `run_id` and `subject`. What a value means in each mode (preprocessing, pairing,
CLIP-T text, scale: 0-1 for canonical and dreammatcher, x100 for kosmosg and
dreambench++; DIV is raw LPIPS in every mode) is in `varbench.metrics.modes`. With
`backbones: tiny` every value comes from random-init encoders: it checks the pipeline
and means nothing about the images (reports must say so).

Speed: images are decoded in a thread pool, encoded in batches of `batch_size` under
bf16 autocast on CUDA (`precision: fp32` turns it off), and values are read back to the
host a few times per cell, never per image. Reference embeddings are computed once per
subject and text embeddings once per text.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.metrics.settings import MetricsConfig
from varbench.metrics.decode import ViewLoader
from varbench.metrics.diversity import Diversity, build_lpips
from varbench.metrics.modes import mode_spec
from varbench.metrics.preprocess import clip_input, dino_input, lpips_input
from varbench.metrics.similarity import ImageSimilarity, TextAlignment
from varbench.models.encoders import build_clip, build_dino

KINDS = ("eval", "pres")


@dataclass(frozen=True)
class GeneratedImage:
    path: Path  # the PNG on disk
    name: str  # relative to the cell folder, e.g. "images/p003_s01.png" (the `image` column)
    kind: str  # "eval" (prompt images) or "pres" (class-prompt images for PRES)
    prompt_index: int  # -1 for kind "pres"
    sample_index: int
    clip_text: str  # the prompt without the identifier, class noun kept: "a dog in the jungle"
    template: str  # the raw template "a {} in the jungle" (dreammatcher's CLIP-T text)


@dataclass
class Embeddings:
    """Per-image encoder outputs, row i = image i (all on the scoring device)."""

    dino: torch.Tensor  # (N, D_dino), L2-normalised
    clip: torch.Tensor  # (N, D_clip), L2-normalised
    square: torch.Tensor | None = None  # uint8 (N, 256, 256, 3) views for LPIPS


class Scorer:
    """Encoders and pipelines of one metric mode, reused across cells."""

    def __init__(self, config: MetricsConfig, device: torch.device | str, *,
                 pretrained: bool = True, threads: int | None = None, resize_on_device: bool | None = None):
        """`pretrained=False` builds the real architectures with random weights (the
        throughput benchmark); `threads` sets the decoding threads (default: CPU count);
        `resize_on_device` see `ViewLoader`."""
        if config.batch_size < 1:
            raise UserError(f"metrics.batch_size is {config.batch_size}", "metrics.batch_size",
                            "Use a positive number of images per batch.")
        self.config = config
        self.device = torch.device(device)
        self.mode = mode_spec(config.mode)
        size = "tiny" if config.backbones == "tiny" else "real"
        pretrained = pretrained and config.backbones == "real"
        self.random_init = size == "tiny" or not pretrained
        self.dino = build_dino(self.mode.dino_patch, size, self.device,
                               input_size=self.mode.dino_input_size, pretrained=pretrained)
        self.clip = build_clip(size, self.device, pretrained=pretrained)
        self.lpips = build_lpips(size == "real" and pretrained, self.device) if config.div else None
        self.loader = ViewLoader(self.mode.pixels, self.mode.exif_and_alpha, threads, resize_on_device)
        self.loader.start(self.device)
        self._references: dict[tuple, Embeddings] = {}
        self._texts: dict[str, torch.Tensor] = {}

    # --- embeddings ------------------------------------------------------------------
    def embed(self, paths: list[Path], with_square: bool = False) -> Embeddings:
        """Decode and encode images; `with_square` also keeps their LPIPS views."""
        dino, clip, square = [], [], []
        pixels = self.mode.pixels
        for views in self.loader.batches(paths, self.config.batch_size, self.device, with_square):
            with self.autocast():
                dino.append(self.dino(dino_input(views, pixels)))
                clip.append(self.clip.encode_image(clip_input(views, pixels)))
            if with_square:
                square.append(views["square256"])
        if not dino:
            raise ValueError("no images to embed")
        return Embeddings(torch.cat(dino), torch.cat(clip), torch.cat(square) if with_square else None)

    def reference_embeddings(self, subject: Subject) -> Embeddings:
        """The subject's reference photos, embedded once and remembered."""
        key = (subject.name, tuple(str(path) for path in subject.image_paths))
        if key not in self._references:
            if not subject.image_paths:
                raise UserError(f"subject {subject.name} has no reference images", subject.name,
                                "Check the dataset folder ('varbench data verify').")
            self._references[key] = self.embed(list(subject.image_paths))
        return self._references[key]

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """CLIP text embeddings, row i = texts[i]; each distinct text is encoded once."""
        missing = sorted(set(texts) - set(self._texts))
        if missing:
            with self.autocast():
                encoded = self.clip.encode_text(missing)
            self._texts.update(zip(missing, encoded))
        # one row per distinct text, then an index: a cell has ~25 texts for ~100-4,000 images
        distinct = list(dict.fromkeys(texts))
        position = {text: index for index, text in enumerate(distinct)}
        rows = torch.tensor([position[text] for text in texts], device=self.device)
        return torch.stack([self._texts[text] for text in distinct])[rows]

    # --- scoring ---------------------------------------------------------------------
    def score_cell(self, subject: Subject, images: list[GeneratedImage]) -> list[dict[str, Any]]:
        """Metric rows for one cell (see the module docstring); [] when there are no images."""
        for image in images:
            if image.kind not in KINDS:
                raise ValueError(f"image {image.name} has kind {image.kind!r}, expected one of {KINDS}")
        if not images:
            return []
        references = self.reference_embeddings(subject)
        paired = self._paired_reference(subject)
        evals = [i for i, image in enumerate(images) if image.kind == "eval"]
        pres = [i for i, image in enumerate(images) if image.kind == "pres"]
        embedded = self.embed([image.path for image in images], with_square=self.lpips is not None)
        rows = []
        if evals:
            rows += self._eval_rows([images[i] for i in evals], _take(embedded, evals), references, paired)
        if pres:
            rows += self._pres_rows([images[i] for i in pres], embedded.dino[pres], references, paired)
        return rows

    def _eval_rows(self, images: list[GeneratedImage], embedded: Embeddings,
                   references: Embeddings, paired: int | None) -> list[dict[str, Any]]:
        scale = self.mode.scale
        pairs = None if paired is None else torch.full((len(images),), paired, device=self.device)
        dino, clip_i, clip_t = ImageSimilarity(scale), ImageSimilarity(scale), TextAlignment(scale)
        dino.update(embedded.dino, references.dino, pairs)
        clip_i.update(embedded.clip, references.clip, pairs)
        texts = [getattr(image, self.mode.clip_text) for image in images]
        clip_t.update(embedded.clip, self.text_embeddings(texts))
        values = torch.stack([_values(dino), _values(clip_i), _values(clip_t)], dim=1).tolist()
        rows = []
        for image, per_metric in zip(images, values):
            for metric, value in zip(("dino", "clip_i", "clip_t"), per_metric):
                rows.append(self._row(image.kind, image.prompt_index, image.sample_index, image.name,
                                      metric, value))
        if self.lpips is not None:
            rows += self._div_rows(images, embedded.square)
        return rows

    def _div_rows(self, images: list[GeneratedImage], square: torch.Tensor) -> list[dict[str, Any]]:
        by_prompt: dict[int, list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_prompt[image.prompt_index].append(index)
        diversity = Diversity(self.lpips)
        scored = []
        for prompt_index in sorted(by_prompt):
            if len(by_prompt[prompt_index]) >= 2:  # a single image has no pair
                diversity.update(lpips_input(square[by_prompt[prompt_index]]))
                scored.append(prompt_index)
        if not scored:
            return []
        values = _values(diversity).tolist()
        return [self._row("eval", prompt_index, -1, "", "div", value)
                for prompt_index, value in zip(scored, values)]

    def _pres_rows(self, images: list[GeneratedImage], dino: torch.Tensor,
                   references: Embeddings, paired: int | None) -> list[dict[str, Any]]:
        pairs = None if paired is None else torch.full((len(images),), paired, device=self.device)
        similarity = ImageSimilarity(self.mode.scale)
        similarity.update(dino, references.dino, pairs)
        return [self._row(image.kind, image.prompt_index, image.sample_index, image.name, "pres", value)
                for image, value in zip(images, _values(similarity).tolist())]

    def _paired_reference(self, subject: Subject) -> int | None:
        """The one reference index of the fixed-pairing modes, None for all references."""
        if self.mode.pairing == "all":
            return None
        index, count = self.config.reference_index, len(subject.image_paths)
        if not 0 <= index < count:
            raise UserError(f"metrics.reference_index is {index} but subject {subject.name} has "
                            f"{count} reference images", "metrics.reference_index",
                            f"Use an index from 0 to {count - 1}.")
        return index

    def _row(self, kind: str, prompt_index: int, sample_index: int, image: str, metric: str,
             value: float) -> dict[str, Any]:
        return {"kind": kind, "prompt_index": prompt_index, "sample_index": sample_index,
                "image": image, "metric": metric, "mode": self.config.mode, "value": float(value)}

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (unless `precision: fp32`), full precision elsewhere."""
        if self.device.type == "cuda" and self.config.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def close(self) -> None:
        """Stop the decoding threads and worker processes, free their shared buffers."""
        self.loader.close()


def _values(metric: Any) -> torch.Tensor:
    """A per-image metric's values as a 1-D tensor (torchmetrics squeezes a single value)."""
    return metric.compute().reshape(-1)


def _take(embedded: Embeddings, rows: list[int]) -> Embeddings:
    square = None if embedded.square is None else embedded.square[rows]
    return Embeddings(embedded.dino[rows], embedded.clip[rows], square)
