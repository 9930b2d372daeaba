"""The method plugin interface.

A method (ARBooth, DreamBooth, ... or yours) is a class with a `name`, a `version`, a
config dataclass `Config`, and four operations the runner calls for every cell
(one method arm x one subject):

    base  = method.load_base(ctx)                     # timed as "load"
    model = method.fit(base, subject, ctx)            # timed as "fit"
    model.save(artifact_dir)                          # only the trained tensors
    model = method.load_artifact(base, artifact_dir, ctx)   # on resume, "load_artifact"
    images = model.generate(prompts, seeds)           # timed as "generate"

Optionally, a method lets a worker keep its base across the cells of one arm instead of
loading it for each (seconds to minutes per cell, and compiled modules built on the
base stay valid):

    snapshot = method.snapshot_base(base)     # once, on a freshly loaded base (None: not reusable)
    method.restore_base(base, snapshot)       # before each later cell, timed as "reuse_base"

The runner owns seeding, timing, storage and scoring, so every method is measured the
same way; a method only reports its fit progress and losses through `ctx`.
Register a method through the entry-point group `varbench.methods` (see README,
"Adding a method") or, for code inside this repository, with `@register_method`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from varbench.errors import NonFiniteLoss

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from varbench.data.subject import Subject


@dataclass
class CellContext:
    """What the runner hands a method for one cell."""

    device: torch.device
    fit_seed: int  # derived from (base seed, subject, arm): see varbench.seeding
    workdir: Path  # scratch folder of this cell, removed when the cell is done
    cache_dir: Path  # shared across cells and runs (class images, teacher pools, ...)
    subject_name: str = ""
    on_fit_step: Callable[[int, int], None] = lambda done, total: None
    losses: list[dict[str, float]] = field(default_factory=list)
    loss_check_every: int = 10
    _pending: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def fit_step(self, step: int, total: int, **losses: Any) -> None:
        """Report that fit step `step` (1-based) of `total` finished, with its losses.

        Loss values may be tensors: they are only read back every `loss_check_every`
        steps (and at the last step), so logging adds no host sync to the hot loop.
        A NaN or infinite loss raises `NonFiniteLoss`, which fails the cell.
        """
        self._pending.append((step, losses))
        if step % self.loss_check_every == 0 or step == total:
            self.flush_losses()
        self.on_fit_step(step, total)

    def flush_losses(self) -> None:
        for step, losses in self._pending:
            row = {"step": float(step)}
            for key, value in losses.items():
                row[key] = float(value.item() if hasattr(value, "item") else value)
                if not math.isfinite(row[key]):
                    self._pending.clear()
                    raise NonFiniteLoss(f"{key} became {row[key]} at fit step {step}")
            self.losses.append(row)
        self._pending.clear()


class PersonalizedModel(ABC):
    """A fitted subject model: generates images and saves its trained tensors."""

    @property
    @abstractmethod
    def trainable_parameters(self) -> int:
        """Number of parameters the fit changed (the identifier included)."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """One RGB image per (prompt, seed). Image i must depend only on
        (prompts[i], seeds[i]), never on the batch it was generated in."""

    @abstractmethod
    def save(self, artifact_dir: Path) -> None:
        """Write the trained tensors (safetensors or a diffusers format) into `artifact_dir`."""


class Method(ABC):
    """A personalization method. Subclasses set the class attributes below."""

    name: ClassVar[str]
    version: ClassVar[str]
    Config: ClassVar[type]  # a dataclass whose fields all have defaults
    description: ClassVar[str] = ""
    # The method family shown in reports, e.g. "autoregressive", "diffusion": reports group
    # sample grids, loss curves and cost-plot markers by it instead of by method name.
    family: ClassVar[str] = "other"
    # With `compile: auto`, a worker compiles through a Config field (by name) once it will
    # run at least this many cells of one arm (compile cost / per-cell saving, measured:
    # benchmarks/); a field not listed never compiles on `auto`. Speed fields are Config
    # fields marked metadata={"execution": KEY} (varbench.execution), never part of what a
    # result is.
    compile_pays_after: ClassVar[dict[str, int]] = {}
    # Config values that swap every published weight for random weights at the real
    # architecture size (`varbench run --backbones random`: a full-size rehearsal with
    # nothing to download; timings and memory are real, images and scores are not).
    # None: the method has no such stand-in, and the rehearsal refuses it.
    random_weights: ClassVar[dict[str, Any] | None] = None
    # The Config field that counts a fit's optimizer steps (`varbench rehearse` shortens it
    # and projects the full fit from the measured time per step); None: no such field.
    fit_steps_field: ClassVar[str | None] = None
    # False for a tuning-free method (an adapter that only encodes the references): its fit
    # reports no steps or losses and changes no parameters (the conformance kit checks that).
    trains: ClassVar[bool] = True
    # Config values the rehearsal sets to cut one-time work out of the measured fit (e.g.
    # fewer prior-preservation class images, which are shared per class, not per step).
    rehearsal_config: ClassVar[dict[str, Any]] = {}
    # Config values for a tiny cell (random-init backbone, 64 px, a few steps: seconds on a
    # CPU) that `varbench check-method` and `varbench.testing.check_method` fit to check
    # the rules the runner relies on (varbench.conformance); {} means the defaults.
    tiny_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any = None):
        from varbench.execution import settle_auto

        config = config if config is not None else self.Config()
        # A compile field still `auto` here was not settled by a protocol worker (a method
        # built directly: tests, check-method, scripts): decide it as for one cell.
        self.config = settle_auto(config, 1, self.compile_break_even(config))

    @classmethod
    def compile_break_even(cls, config: Any) -> dict[str, int]:
        """`compile_pays_after` for `config`. A method whose compile cost and saving depend on
        its config (the model family it fine-tunes, say) overrides this."""
        return cls.compile_pays_after

    def uses_random_init(self) -> bool:
        """True when this config runs a random-init backbone (tiny test configs, rehearsals).

        Results of such runs check the pipeline, not the method; reports say so.
        """
        return False

    def toy_backbone(self) -> str | None:
        """The toyworld backbone this config runs ("sd", "infinity"; None: none), a model at
        toy size with trained weights: its numbers mean something inside the toyworld, the
        real-size speed figures of `varbench bench` do not apply to it, and its weights'
        digests are part of the run identity (retrained weights make other images)."""
        return None

    def weights_needed(self) -> list[tuple[str, Any, Any]]:
        """What `load_base` will read, for the preflight (`varbench check`): one
        (label, `varbench.weights.WeightFile` or `Snapshot`, the local path the config
        gives or None) per file or folder. Nothing is downloaded or verified here."""
        return []

    @abstractmethod
    def subject_phrase(self, class_noun: str) -> str:
        """How the identifier enters a prompt, e.g. 'sks dog' or '<placeholder> dog'."""

    @abstractmethod
    def load_base(self, ctx: CellContext) -> Any:
        """Load the pretrained model(s) the fit starts from (timed separately from fit)."""

    @abstractmethod
    def fit(self, base: Any, subject: Subject, ctx: CellContext) -> PersonalizedModel:
        """Personalize `base` to `subject`. May modify `base` in place."""

    @abstractmethod
    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> PersonalizedModel:
        """Apply a saved artifact on top of `base`: the inverse of `PersonalizedModel.save`."""

    def snapshot_base(self, base: Any) -> Any:
        """What `restore_base` needs to undo any cell's changes to `base`, taken once from a
        freshly loaded base (keep large copies on the CPU: the GPU is the fit's). None,
        the default, means this method's bases are not reused: the worker loads a fresh
        one for every cell."""
        return None

    def restore_base(self, base: Any, snapshot: Any) -> None:
        """Undo whatever `fit` or `load_artifact` (and the model they returned) did to `base`,
        so that the next cell computes on it exactly what it computes on a freshly loaded
        base. Keep the module objects where possible: what a speed layer compiled for them
        is then reused. The worker reuses a base only after cells that finished; raising
        here makes it load a fresh one."""
        raise NotImplementedError(f"{type(self).__name__} takes a snapshot of its base but cannot restore it")
