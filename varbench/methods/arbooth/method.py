"""ARBooth as a varbench method plugin (`arbooth`, entry point in pyproject.toml).

    base  = method.load_base(ctx)            # Infinity-2B + BSQ tokenizer + Flan-T5-XL (base.py)
    model = method.fit(base, subject, ctx)   # selective tuning + scale weights + distillation (fit.py)
    model.save(folder)                       # trained tensors only (artifact.py)
    model = method.load_artifact(base, folder, ctx)
    images = model.generate(prompts, seeds)  # KV-cached sampler, CFG 4 (model.py)

The identifier enters prompts as "<placeholder> {class}"; after T5 its single output
vector is replaced by 4 learned vectors. This module imports no torch: protocols can be
validated without loading the model code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from varbench.method import CellContext, Method
from varbench.methods.arbooth.config import ARBoothConfig, check_config
from varbench.models.infinity.architecture import get_size


class ARBooth(Method):
    name = "arbooth"
    version = "1"
    Config = ARBoothConfig
    description = ("ARBooth (arXiv 2504.02612): Infinity-2B with selective layer tuning, scale-wise "
                   "weighted CE and prior distillation")
    family = "autoregressive"
    # `compile: auto`: compiling the fit's blocks (~92 s in a worker's first cell, ~30 s in
    # each later one, measured: benchmarks/NOTES-compile-auto.md) saves ~1.3 s on each of a
    # fit's 500 iterations, so it pays from the first cell; compiled generation
    # (~60 s per batch size) saves ~0.08 s/image, so from ~700 images: 7 DreamBench cells
    # of 100 (benchmarks/NOTES-speed-layer.md).
    compile_pays_after = {"compile_blocks": 1, "compile_generation": 7}
    random_weights = {"weights": "random", "vae_weights": "random", "text_encoder": "random"}
    fit_steps_field = "iterations"
    tiny_config = {"model": "infinity-tiny", "resolution": 64, "iterations": 4}  # varbench check-method

    def __init__(self, config: ARBoothConfig | None = None):
        super().__init__(config)
        check_config(self.config)
        get_size(self.config.model)  # an unknown size fails here, with close matches

    def uses_random_init(self) -> bool:
        config = self.config
        return get_size(config.model).random_init_only or "random" in (config.weights, config.vae_weights,
                                                                        config.text_encoder)

    def toy_backbone(self) -> str | None:
        return "infinity" if self.config.model == "infinity-toyworld" else None

    def weights_needed(self) -> list[tuple[str, Any, Any]]:
        from varbench.models.infinity.checkpoint import INFINITY_2B_FILE, VAE_D32REG_FILE
        from varbench.models.infinity.text import FLAN_T5_FILES, FLAN_T5_XL, FLAN_T5_XL_REVISION
        from varbench.weights import Snapshot

        config = self.config
        if config.model != "infinity-2b":  # random-init stand-ins, or the toyworld's checked folder
            return []
        needs = [("Infinity-2B transformer", INFINITY_2B_FILE, config.weights),
                 ("Infinity BSQ tokenizer", VAE_D32REG_FILE, config.vae_weights),
                 ("Flan-T5-XL text encoder", Snapshot(FLAN_T5_XL, FLAN_T5_XL_REVISION, tuple(FLAN_T5_FILES)),
                  config.text_encoder)]
        return [need for need in needs if need[2] != "random"]

    def subject_phrase(self, class_noun: str) -> str:
        return f"{self.config.placeholder} {class_noun}"

    def load_base(self, ctx: CellContext) -> Any:
        import torch

        from varbench.methods.arbooth.base import load_base

        return load_base(self.config, torch.device(ctx.device))

    def fit(self, base: Any, subject: Any, ctx: CellContext) -> Any:
        from varbench.methods.arbooth.fit import fit_subject

        return fit_subject(base, subject, self.config, ctx, self.subject_phrase(subject.class_noun))

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> Any:
        from varbench.methods.arbooth.model import ARBoothModel

        return ARBoothModel.from_artifact(base, self.config, Path(artifact_dir))

    def snapshot_base(self, base: Any) -> Any:
        from varbench.methods.arbooth.base import snapshot_blocks

        return snapshot_blocks(base)

    def restore_base(self, base: Any, snapshot: Any) -> None:
        from varbench.methods.arbooth.base import restore_blocks

        restore_blocks(base, snapshot)
