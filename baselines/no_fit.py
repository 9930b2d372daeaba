"""`no_fit`: the floor arm of subject fidelity. The pretrained Stable Diffusion base, not
personalized at all, prompted with the class noun where other methods name the subject
("a dog in the snow" for "a sks dog in the snow"). Its DINO and CLIP-I are what knowing
only the subject's class scores; a method's personalization is read between this and the
`copy_references` ceiling. Nothing is trained and the artifact is empty: a reloaded
model is the base again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.common import DiffusionConfig, DiffusionMethod
from varbench.method import CellContext


@dataclass
class NoFitConfig(DiffusionConfig):
    """Only what sampling the base needs (DiffusionConfig's fields)."""


class NoFit(DiffusionMethod):
    name = "no_fit"
    version = "1"
    Config = NoFitConfig
    description = "The floor: the pretrained base prompted with the class noun, no personalization"
    family = "reference"
    trains = False
    fit_steps_field = None
    compile_pays_after: dict[str, int] = {}
    rehearsal_config: dict[str, Any] = {}
    tiny_config = {k: v for k, v in DiffusionMethod.tiny_config.items() if k != "steps"}

    def subject_phrase(self, class_noun: str) -> str:
        return class_noun

    def fit(self, base: Any, subject: Any, ctx: CellContext) -> Any:
        return self._model(base, ctx)

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> Any:
        return self._model(base, ctx)

    def _model(self, base: Any, ctx: CellContext) -> Any:
        from baselines.sampling import BaseModel
        from baselines.training import cast, compute_dtype

        cast([base.text_encoder, base.vae, base.unet], compute_dtype(self.config, ctx.device))
        return BaseModel(base, base.unet, self.config, 0)
