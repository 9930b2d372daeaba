"""Scoring one cell: every generated image against the subject's reference photos.

The runner builds one `Scorer` per worker process (encoders load once) and calls
`score_cell(subject, images)` for each cell. It returns one row per (image, metric):

    metric   rows                         kind   prompt_index  sample_index  image
    dino     one per eval image           eval   p             s             "images/p003_s01.png"
    clip_i   one per eval image           eval   p             s             ...
    clip_t   one per eval image           eval   p             s             ...
    div      one per prompt (>= 2 images) eval   p             -1            ""
    pres     one per pres image           pres   -1            s             "pres/s00.png"

plus one row per (image, row name) of each extra metric of `metrics.extra` (e.g.
`dinov2_s`; the copy guard writes `copy_dino`, `copy_clip_i` and `copy`), and `metric`,
`mode` (the protocol's metric mode, in every row) and `value`; the runner adds `run_id`
and `subject`. Rows come eval images first (each image's per-image metrics together,
standard then extras by name; then the per-prompt rows), then PRES images. What a value means in each mode (preprocessing, pairing,
CLIP-T text, scale: 0-1 for canonical and dreammatcher, x100 for kosmosg and
dreambench++; DIV is raw LPIPS in every mode) is in `varbench.metrics.modes`. With
`backbones: tiny` every value comes from random-init encoders: it checks the pipeline
and means nothing about the images (reports must say so).

Every metric is a plugin (varbench.metrics.plugin) that names the encoders it reads; the
Scorer builds each encoder once, so metrics share their passes. Speed: images are decoded
once (a thread pool, or worker processes on a GPU), every encoder runs on the same
batches of `batch_size` in exact fp32 (the execution options `metric_precision: bf16` and
`metric_tf32: true` trade exactness for speed on CUDA), kernels are warmed up when the
Scorer loads on a GPU, and values are read back to the host once per cell, never per image. Reference embeddings
are computed once per subject and text embeddings once per text.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.metrics.decode import ViewLoader
from varbench.metrics.modes import mode_spec
from varbench.metrics.plugin import KINDS, CellInputs, Encoder, EncoderSetup, Metric, Values
from varbench.metrics.preprocess import device_views, encoder_input
from varbench.metrics.registry import metrics_for
from varbench.metrics.references import paired_reference
from varbench.metrics.settings import MetricsConfig


@dataclass(frozen=True)
class GeneratedImage:
    path: Path  # the PNG on disk
    name: str  # relative to the cell folder, e.g. "images/p003_s01.png" (the `image` column)
    kind: str  # "eval" (prompt images) or "pres" (class-prompt images for PRES)
    prompt_index: int  # -1 for kind "pres"
    sample_index: int
    clip_text: str  # the prompt without the identifier, class noun kept: "a dog in the jungle"
    template: str  # the raw template "a {} in the jungle" (dreammatcher's CLIP-T text)


class Embeddings(dict):
    """Encoder name -> per-image outputs, row i = image i (on the scoring device);
    `embedded.dino` reads `embedded["dino"]`."""

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def take(self, rows: list[int]) -> Embeddings:
        return Embeddings({name: outputs[rows] for name, outputs in self.items()})


class Scorer:
    """The metrics of one config and their shared encoders, reused across cells."""

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
        size = {"tiny": "tiny", "toyworld": "toyworld"}.get(config.backbones, "real")
        pretrained = pretrained and config.backbones in ("real", "toyworld")
        self.random_init = size == "tiny" or not pretrained
        self.metrics: list[Metric] = [cls() for cls in metrics_for(config.div, config.extra)]
        self.encoders = shared_encoders(self.metrics)
        setup = EncoderSetup(size, pretrained, self.device, self.mode)
        # built in first-use order (dino, clip, lpips, then the extras'); each random-init
        # encoder draws from its own fixed seed (varbench.models.encoders.seeded)
        self.models = {name: encoder.build(setup) for name, encoder in self.encoders.items()}
        # The metrics' comparisons import torchmetrics, which imports matplotlib and scipy
        # (~2 s): that belongs to loading, not to the first cell's scoring.
        import varbench.metrics.similarity  # noqa: F401
        self.loader = ViewLoader(self.mode.pixels, self.mode.exif_and_alpha, threads, resize_on_device)
        self.loader.start(self.device)
        if self.device.type == "cuda":
            try:
                self.warm_up()
            except BaseException:
                self.loader.close()  # no decoding workers left behind by a failed load
                raise
        self._references: dict[tuple, Embeddings] = {}
        self._texts: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def dino(self) -> Any:
        return self.models["dino"]

    @property
    def clip(self) -> Any:
        return self.models["clip"]

    @property
    def lpips(self) -> Any:
        return self.models.get("lpips")

    def warm_up(self, source_size: int = 512) -> None:
        """One blank batch through the device resizes and every encoder, and one text
        through each text tower, at the configured batch size and arithmetic: a process's
        first use of each CUDA kernel loads and tunes it (about 3 s for DINO + CLIP on an
        H100: benchmarks/NOTES-scoring.md), a one-time cost that belongs to loading the
        metrics, not to the first cell's scoring. Nothing is kept; no result changes."""
        blank = torch.zeros((self.config.batch_size, source_size, source_size, 3), dtype=torch.uint8,
                            device=self.device)
        square = any(encoder.pixels == "square" for encoder in self.encoders.values())
        with torch.no_grad():
            self.encode_views(device_views(blank, self.mode.pixels, square), list(self.encoders))
            with self.autocast():
                for name, encoder in self.encoders.items():
                    if encoder.text is not None:
                        encoder.text(self.models[name], ["a photo"])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- embeddings ------------------------------------------------------------------
    def embed(self, paths: list[Path], with_square: bool = False, encoders: Sequence[str] | None = None) -> Embeddings:
        """Decode `paths` once and run the named encoders (default: every encoder, those
        reading the LPIPS views only `with_square`) over the same batches."""
        names = list(encoders) if encoders is not None else [
            name for name, encoder in self.encoders.items() if with_square or encoder.pixels != "square"]
        square = any(self.encoders[name].pixels == "square" for name in names)
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        batches = 0
        for views in self.loader.batches(paths, self.config.batch_size, self.device, square):
            for name, batch in self.encode_views(views, names).items():
                outputs[name].append(batch)
            batches += 1
        if not batches:
            raise ValueError("no images to embed")
        return Embeddings({name: torch.cat(parts) for name, parts in outputs.items()})

    def encode_views(self, views: dict[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
        """One decoded batch through the named encoders; each pixel input is made once."""
        inputs: dict[str, torch.Tensor] = {}
        outputs = {}
        with self.autocast():
            for name in names:
                encoder = self.encoders[name]
                if encoder.pixels not in inputs:
                    inputs[encoder.pixels] = encoder_input(views, encoder.pixels, self.mode.pixels,
                                                           self.config.clip_resize == "antialias")
                outputs[name] = encoder.encode(self.models[name], inputs[encoder.pixels])
        return outputs

    def reference_embeddings(self, subject: Subject) -> Embeddings:
        """The subject's reference photos through the encoders of the metrics that read
        references, embedded once and remembered."""
        key = (subject.name, tuple(str(path) for path in subject.image_paths))
        if key not in self._references:
            if not subject.image_paths:
                raise UserError(f"subject {subject.name} has no reference images", subject.name,
                                "Check the dataset folder ('varbench data verify').")
            self._references[key] = self.embed(list(subject.image_paths), encoders=self._reference_encoders())
        return self._references[key]

    def text_embeddings(self, texts: list[str], encoder: str = "clip") -> torch.Tensor:
        """Text embeddings of `encoder`, row i = texts[i]; each distinct text is encoded once."""
        known = self._texts.setdefault(encoder, {})
        missing = sorted(set(texts) - set(known))
        if missing:
            spec = self.encoders[encoder]
            if spec.text is None:
                raise RuntimeError(f"encoder {encoder!r} has no text tower")
            with self.autocast():
                encoded = spec.text(self.models[encoder], missing)
            known.update(zip(missing, encoded))
        # one row per distinct text, then an index: a cell has ~25 texts for ~100-4,000 images
        distinct = list(dict.fromkeys(texts))
        position = {text: index for index, text in enumerate(distinct)}
        rows = torch.tensor([position[text] for text in texts], device=self.device)
        return torch.stack([known[text] for text in distinct])[rows]

    def _reference_encoders(self) -> list[str]:
        wanted = {encoder.name for metric in self.metrics if "references" in metric.needs
                  for encoder in metric.encoders}
        return [name for name in self.encoders if name in wanted]

    # --- scoring ---------------------------------------------------------------------
    def score_cell(self, subject: Subject, images: list[GeneratedImage]) -> list[dict[str, Any]]:
        """Metric rows for one cell (see the module docstring); [] when there are no images."""
        for image in images:
            if image.kind not in KINDS:
                raise ValueError(f"image {image.name} has kind {image.kind!r}, expected one of {KINDS}")
        if not images:
            return []
        if self._reference_encoders():
            self.reference_embeddings(subject)
        paired = self._paired_reference(subject)
        embedded = self.embed([image.path for image in images], encoders=list(self.encoders))
        scored = []
        for kind in KINDS:
            positions = [i for i, image in enumerate(images) if image.kind == kind]
            if not positions:
                continue
            of_kind, taken = [images[i] for i in positions], embedded.take(positions)
            values = [values for metric in self.metrics if metric.kind == kind
                      for values in self._score_metric(metric, subject, of_kind, taken, paired)]
            scored.append((of_kind, values))
        return self._rows(scored)

    def _score_metric(self, metric: Metric, subject: Subject, images: list[GeneratedImage],
                      embedded: Embeddings, paired: int | None) -> list[Values]:
        values = metric.score(CellInputs(metric, subject, images, embedded, paired, self))
        for item in values:
            if item.metric not in metric.row_names():
                raise RuntimeError(f"metric {metric.name!r} returned rows named {item.metric!r}; it declares "
                                   f"{metric.row_names()} (set `rows` on the class)")
        return values

    def _rows(self, scored: list[tuple[list[GeneratedImage], list[Values]]]) -> list[dict[str, Any]]:
        """Rows kind by kind: each image's per-image values together (in metric order), then
        the per-prompt rows."""
        floats = iter(self._to_host([item for _, results in scored for item in results]))
        rows = []
        for images, results in scored:
            per_image: dict[str, list[dict[str, Any]]] = {image.name: [] for image in images}
            per_prompt = []
            for item in results:
                made = [self._row(*key, item.metric, value) for key, value in zip(item.keys, next(floats))]
                if item.per_image:
                    for row in made:
                        per_image[row["image"]].append(row)
                else:
                    per_prompt += made
            rows += [row for image in images for row in per_image[image.name]] + per_prompt
        return rows

    def _to_host(self, results: list[Values]) -> list[list[float]]:
        """Every metric's values as floats, in one device-to-host copy per cell (float32
        values widen to float64 exactly, so a value is the float32 the metric computed)."""
        parts = [_as_float64(item.values).to(self.device) for item in results]
        for item, part in zip(results, parts):
            if len(part) != len(item.keys):
                raise RuntimeError(f"metric rows {item.metric!r}: {len(part)} values for {len(item.keys)} keys")
        if not parts:
            return []
        flat = torch.cat(parts).tolist()
        bounds = [0]
        for part in parts:
            bounds.append(bounds[-1] + len(part))
        return [flat[low:high] for low, high in zip(bounds, bounds[1:])]

    def _paired_reference(self, subject: Subject) -> int | None:
        """The one reference index of the fixed-pairing modes, None for all references."""
        if self.mode.pairing == "all":
            return None
        found = paired_reference(self.config.mode, self.config.reference, self.config.reference_index, subject)
        if isinstance(found, str):
            raise UserError(found, "metrics.reference_index",
                            f"Use an index from 0 to {len(subject.image_paths) - 1}.")
        return found

    def _row(self, kind: str, prompt_index: int, sample_index: int, image: str, metric: str,
             value: float) -> dict[str, Any]:
        return {"kind": kind, "prompt_index": prompt_index, "sample_index": sample_index,
                "image": image, "metric": metric, "mode": self.config.mode, "value": float(value)}

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The encoders' arithmetic: full fp32 (TF32 off) unless the execution options ask
        for bf16 autocast (`precision: bf16`) or TF32 (`tf32: true`); CUDA only."""
        if self.device.type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.config.tf32
        try:
            if self.config.precision == "bf16":
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                    yield
            else:
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def close(self) -> None:
        """Stop the decoding threads and worker processes, free their shared buffers."""
        self.loader.close()


def _as_float64(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).to(torch.float64)
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1)


def shared_encoders(metrics: list[Metric]) -> dict[str, Encoder]:
    """Encoder name -> encoder, in first-use order; one name must mean one encoder."""
    encoders: dict[str, Encoder] = {}
    for metric in metrics:
        for encoder in metric.encoders:
            known = encoders.setdefault(encoder.name, encoder)
            if known != encoder:
                raise UserError(f"two different encoders are named {encoder.name!r}", f"metric {metric.name!r}",
                                "Rename the plugin's encoder (names are shared between metrics).")
    return encoders
