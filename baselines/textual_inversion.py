"""Textual Inversion (Gal et al., ICLR 2023) on Stable Diffusion, as in diffusers'
`examples/textual_inversion/textual_inversion.py`.

One new word `<placeholder>` is learnt; every network weight stays frozen. Its embedding
starts from the class noun's and is fitted on the subject's photos (random horizontal
flip, p = 0.5) captioned with a random template of the release's object list
("a photo of a {}", "a rendering of a {}", ...). The recipe is
`baselines/train_textual_inversion.py`.

Subject phrase: by default the word stands for the whole subject ("a <placeholder> in the
jungle"), as in the Textual Inversion paper and the DreamBooth paper's comparison (their
"S*"): the release's templates contain no class noun, and training and evaluation
prompts must use the word the same way. `keep_class_noun: true` gives "<placeholder> dog"
in both, the variant some later benchmarks use. CLIP-T is unaffected either way: the
runner scores against the template with the class noun, not this phrase.

Artifact: `learned_embeds.safetensors` = {"<placeholder>": (1, dim)}, diffusers' own
format, loadable with `pipeline.load_textual_inversion(artifact_dir)`.

This module imports no torch: the recipe is imported where it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baselines.common import DiffusionConfig, DiffusionMethod
from varbench.method import CellContext
from varbench.schema import EXECUTION

if TYPE_CHECKING:
    from varbench.data.subject import Subject


@dataclass
class TextualInversionConfig(DiffusionConfig):
    placeholder_token: str = "<placeholder>"  # the learnt word
    keep_class_noun: bool = False  # False: "<placeholder>"; True: "<placeholder> dog" (see module docs)
    learning_rate: float = 5e-4  # before scaling
    scale_lr: bool = True  # x batch size x grad accumulation: 2e-3 effective (the release's --scale_lr)
    steps: int = 3000  # optimizer steps (each accumulates `grad_accumulation` micro-batches)
    batch_size: int = 1
    grad_accumulation: int = 4
    max_grad_norm: float | None = None  # the release does not clip gradients
    flip_probability: float = 0.5  # random horizontal flip of the subject's photos
    # Speed only (every device): a step's `grad_accumulation` micro-batches go through the
    # networks as one batch; the same random draws and the same gradient (baselines/fast).
    fuse_micro_batches: bool = field(default=True, metadata={EXECUTION: "fuse_micro_batches"})

    def effective_learning_rate(self) -> float:
        if not self.scale_lr:
            return self.learning_rate
        return self.learning_rate * self.batch_size * self.grad_accumulation

    def fused_micro_batches(self) -> int:
        """How many micro-batches one network call carries."""
        return self.grad_accumulation if self.fuse_micro_batches else 1


class TextualInversion(DiffusionMethod):
    name = "textual_inversion"
    version = "1"
    Config = TextualInversionConfig
    description = "Textual Inversion: one learnt token embedding (Stable Diffusion 1.5)"

    def subject_phrase(self, class_noun: str) -> str:
        token = self.config.placeholder_token
        return f"{token} {class_noun}" if self.config.keep_class_noun else token

    def fit(self, base: Any, subject: Subject, ctx: CellContext) -> Any:
        from baselines.fast import accelerated
        from baselines.train_textual_inversion import TextualInversionModel, train

        with accelerated(base, self.config, ctx.device, training=True):
            vectors = train(base, subject, self.config, ctx, self.subject_phrase(subject.class_noun))
        return TextualInversionModel(base, self.config, vectors)

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> Any:
        from baselines.train_textual_inversion import load_artifact

        return load_artifact(base, Path(artifact_dir), self.config, ctx)
