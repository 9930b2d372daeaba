"""The metric plugin interface: what a metric declares and what it computes.

A metric is a `Metric` subclass with a `name`, a `version` and a `score` method. The
`Scorer` owns everything else (decoding, batching, devices, precision, the rows on disk),
so a plugin metric is computed exactly like the built-in ones:

    class BrightnessGap(Metric):
        name, version = "brightness_gap", "1"
        needs = frozenset({"references"})       # what it reads besides the images
        better = "lower"                         # for tables: which direction is better
        encoders = (BRIGHTNESS,)                 # the per-image outputs it reads
        def score(self, cell):                   # cell: CellInputs of one cell
            gap = (cell.embeddings(BRIGHTNESS) - cell.references(BRIGHTNESS).mean()).abs()
            return [cell.per_image(gap)]         # one value per image -> one row each

Encoders are shared. A metric lists the `Encoder`s it reads; the Scorer builds each one
once per worker (from its name: two metrics naming "clip" share one CLIP), decodes each
image once, runs every encoder over the same batches, and embeds a subject's references
once. So DINO and PRES share one DINO pass, CLIP-I, CLIP-T and the copy guard one CLIP
pass. An encoder reads one of the mode's pixel inputs ("dino", "clip": the tensors the
mode's DINO or CLIP encoder takes; "square": the uint8 256x256 view LPIPS reads) and is
built in three sizes from one `EncoderSetup`: published weights, the real architecture
with random weights (`backbones: random`), or a tiny random-init stand-in (`backbones:
tiny`, tests and `smoke`).

What a metric may read is what it declares in `needs` (`CellInputs` refuses the rest, so
`varbench list metrics` tells the truth): "references" (the subject's photos, through
the same encoders), "prompt" (each image's prompt text in the mode's CLIP-T form),
"prompt_images" (the other images of the same prompt). `kind` says which images it
scores: "eval" (the prompt images) or "pres" (the class-prompt images of PRES).

Nothing here imports torch: planning code reads metric declarations (names, versions,
pinned weights for the score id) without loading any model library.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from varbench.data.subject import Subject
    from varbench.metrics.modes import ModeSpec
    from varbench.metrics.scoring import GeneratedImage, Scorer

NEEDS = ("references", "prompt", "prompt_images")
PIXELS = ("dino", "clip", "square")
KINDS = ("eval", "pres")
BETTER = ("higher", "lower")


@dataclass(frozen=True)
class EncoderSetup:
    """How the Scorer asks an encoder to be built."""

    size: str  # "real", "tiny" or "toyworld"
    pretrained: bool  # with size "real": published weights (True) or random ones (False)
    device: torch.device
    mode: ModeSpec  # the metric mode (DINO patch and input size, pixel pipeline)


def _call(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    return model(pixels)


@dataclass(frozen=True)
class Encoder:
    """A per-image output several metrics may read, computed once per image."""

    name: str  # shared by name: every metric listing an encoder of this name gets the same outputs
    pixels: str  # which input it reads: "dino", "clip" or "square" (see the module docstring)
    build: Callable[[EncoderSetup], Any]  # the model (or None for a pixel statistic)
    encode: Callable[[Any, torch.Tensor], torch.Tensor] = _call  # (model, batch) -> (B, ...) outputs
    text: Callable[[Any, list[str]], torch.Tensor] | None = None  # (model, texts) -> (T, D), for "prompt"
    weights: tuple[str, ...] = ()  # its published files as "repo/file@revision" (enter the score id)


class Metric:
    """Base class of every metric; subclasses set the class attributes and `score`."""

    name: ClassVar[str]  # the `metric` column of its rows and its name in `metrics.extra`
    version: ClassVar[str] = "1"  # bump when its values change: an extra's version enters the score id
    needs: ClassVar[frozenset[str]] = frozenset()  # subset of NEEDS
    kind: ClassVar[str] = "eval"  # which images it scores: "eval" or "pres"
    better: ClassVar[str] = "higher"  # "higher" or "lower"
    encoders: ClassVar[tuple[Encoder, ...]] = ()
    rows: ClassVar[tuple[str, ...]] = ()  # the metric names of its rows, when not just (name,)
    description: ClassVar[str] = ""

    @classmethod
    def row_names(cls) -> tuple[str, ...]:
        return cls.rows or (cls.name,)

    def score(self, cell: CellInputs) -> list[Values]:
        """The values of one cell: per image (`cell.per_image`) or per prompt (`cell.per_prompt`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Values:
    """Values of one metric name: values[i] belongs to keys[i] = (kind, prompt_index,
    sample_index, image), the row columns besides `metric`, `mode` and `value`."""

    metric: str
    keys: tuple[tuple[str, int, int, str], ...]
    values: Any  # a 1-D tensor (read back to the host once per cell) or a sequence of floats
    per_image: bool  # one value per image (rows interleaved by image) or per prompt


class CellInputs:
    """What one metric sees of one cell: its images, their encoder outputs and whatever
    else it declared in `needs`. Tensors live on the scoring device."""

    def __init__(self, metric: Metric, subject: Subject, images: list[GeneratedImage],
                 embedded: dict[str, torch.Tensor], paired: int | None, scorer: Scorer):
        self.metric = metric
        self.subject = subject
        self.images = images  # the cell's images of `metric.kind`, in the cell's order
        self.paired = paired  # kosmosg / dreambench++: the one reference every image is compared with
        self.mode: ModeSpec = scorer.mode
        self.device: torch.device = scorer.device
        self._embedded = embedded
        self._scorer = scorer

    # --- inputs ---------------------------------------------------------------------------
    def embeddings(self, encoder: Encoder) -> torch.Tensor:
        """The encoder's outputs for `images`, row i = image i."""
        return self._embedded[self._listed(encoder)]

    def references(self, encoder: Encoder) -> torch.Tensor:
        """The encoder's outputs for the subject's reference photos (dataset order)."""
        self._require("references")
        return self._scorer.reference_embeddings(self.subject)[self._listed(encoder)]

    def texts(self) -> list[str]:
        """Each image's prompt as this mode's CLIP-T reads it ("a dog in the jungle", or the
        raw template in dreammatcher mode)."""
        self._require("prompt")
        return [getattr(image, self.mode.clip_text) for image in self.images]

    def text_embeddings(self, encoder: Encoder) -> torch.Tensor:
        """The encoder's text embedding of each image's prompt, row i = image i."""
        return self._scorer.text_embeddings(self.texts(), self._listed(encoder))

    def prompt_groups(self) -> dict[int, list[int]]:
        """Prompt index -> the positions in `images` of that prompt's images."""
        self._require("prompt_images")
        groups: dict[int, list[int]] = defaultdict(list)
        for position, image in enumerate(self.images):
            groups[image.prompt_index].append(position)
        return dict(groups)

    def model(self, encoder: Encoder) -> Any:
        """The encoder's built model (e.g. the LPIPS network DIV runs on its views)."""
        return self._scorer.models[self._listed(encoder)]

    # --- the mode's comparisons -------------------------------------------------------------
    def similarity(self, encoder: Encoder) -> torch.Tensor:
        """Per image, the mode's similarity to the references: the mean cosine over all of
        them, or (kosmosg, dreambench++) the cosine to the paired one; times the mode's scale."""
        import torch

        from varbench.metrics.similarity import ImageSimilarity

        pairs = None if self.paired is None else torch.full((len(self.images),), self.paired, device=self.device)
        metric = ImageSimilarity(self.mode.scale)
        metric.update(self.embeddings(encoder), self.references(encoder), pairs)
        return metric.compute().reshape(-1)  # torchmetrics squeezes a single value

    def text_alignment(self, encoder: Encoder) -> torch.Tensor:
        """Per image, the cosine to its prompt's text embedding, times the mode's scale."""
        from varbench.metrics.similarity import TextAlignment

        metric = TextAlignment(self.mode.scale)
        metric.update(self.embeddings(encoder), self.text_embeddings(encoder))
        return metric.compute().reshape(-1)

    # --- results ---------------------------------------------------------------------------
    def per_image(self, values: Any, metric: str | None = None) -> Values:
        """One value per image of `images`, in order."""
        keys = tuple((image.kind, image.prompt_index, image.sample_index, image.name) for image in self.images)
        return Values(metric or self.metric.name, keys, values, per_image=True)

    def per_prompt(self, prompt_indices: Sequence[int], values: Any, metric: str | None = None) -> Values:
        """One value per prompt (rows with sample_index -1 and no image)."""
        keys = tuple((self.metric.kind, int(index), -1, "") for index in prompt_indices)
        return Values(metric or self.metric.name, keys, values, per_image=False)

    def _require(self, need: str) -> None:
        if need not in self.metric.needs:
            raise RuntimeError(f"metric {self.metric.name!r} reads {need} but does not declare it: "
                               f"add {need!r} to its `needs`")

    def _listed(self, encoder: Encoder) -> str:
        if encoder.name not in {listed.name for listed in self.metric.encoders}:
            raise RuntimeError(f"metric {self.metric.name!r} reads encoder {encoder.name!r} but does not "
                               "list it in `encoders`")
        return encoder.name
