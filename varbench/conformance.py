"""The conformance kit: does a method keep the rules the runner relies on?

The runner trusts every method to keep six rules; breaking one does not crash a run, it
silently makes results wrong (images that change with the batch size, a resume that
generates from an untrained model, a NaN fit saved as if it had worked). `check_method`
fits the method once on a small drawn subject, on its tiny config (`Method.tiny_config`,
plus overrides), and checks each rule:

  batch       image i of `generate(prompts, seeds)` depends only on (prompts[i], seeds[i]):
              each image generated alone equals the same image inside a batch of mixed
              prompts, within BATCH_TOLERANCE (below)
  images      `generate` returns one RGB image of the config's `resolution` per prompt
  artifact    `save`, then `load_artifact` on a fresh method and base, generates exactly
              (bit for bit) the same images, and reports the same trainable parameters
  parameters  `trainable_parameters` is a positive int (0 is allowed only when the
              artifact holds no tensor file: a method that trains nothing)
  fit-steps   `fit` reports every step through `ctx.fit_step(step, total, loss=...)`:
              steps 1..total in order, each with at least one loss
  nan-loss    a NaN loss stops `fit` with the `NonFiniteLoss` that `ctx.fit_step` raises

The NaN is injected by the context, not the method: a second fit gets a CellContext
whose first reported loss is replaced by NaN and which checks losses at every step, so
`fit_step` raises `NonFiniteLoss` at once, exactly as it would for a real NaN. This works
for any method that reports its losses, without knowing its model or optimiser. A fit
that catches the error and returns would have the runner save NaN weights as a finished
fit; one that catches it and goes on is stopped at its next `fit_step` (by an exception
that `except Exception` does not catch), so the check cannot hang on it. A fit that
loops without ever calling `fit_step` again cannot be interrupted from inside the process.

The check is made for the tiny random-init configs: seconds to a minute on a CPU.
"""
from __future__ import annotations

import numbers
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from varbench.errors import NonFiniteLoss, UserError
from varbench.method import CellContext, Method, PersonalizedModel

RULES = {
    "batch": "image i of generate(prompts, seeds) depends only on (prompts[i], seeds[i])",
    "images": "generate returns one RGB image of the config's resolution per (prompt, seed)",
    "artifact": "save, then load_artifact on a fresh base, reproduces the images exactly",
    "parameters": "trainable_parameters is a positive int for a method that trains",
    "fit-steps": "fit reports every step through ctx.fit_step(step, total, loss=...)",
    "nan-loss": "a NaN loss stops fit with the NonFiniteLoss raised by ctx.fit_step",
}
# An image generated alone may differ from the same image generated in a batch by one
# level (of 255) per pixel: batched convolutions and matmuls add in another order, so
# float results round differently. The built-in methods show exactly that on a CPU
# (ARBooth's decoder, the diffusion UNets); a batch-dependent draw differs by far more.
BATCH_TOLERANCE = 1
# What `save` writes when it saves trained tensors (a method that trains nothing, like
# the reference-copy example, writes none and may report 0 trainable parameters).
TENSOR_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npy", ".npz")
FIT_SEED = 1234
SEEDS = (101, 202, 303)
SUBJECT_VIEWS = 3


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict: `detail` says what was seen, and on failure how to fix it."""

    rule: str  # a key of RULES
    passed: bool
    detail: str
    error: BaseException | None = None  # the method's exception behind a failure, if any

    def line(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return f"{verdict}  {self.rule:<10} {' '.join(self.detail.split())}"


class Broken(Exception):
    """A rule is broken: the message says how, and how to fix it."""


# --- entry point ------------------------------------------------------------------------

def check_method(method: str | type[Method], config: dict[str, Any] | None = None, device: Any = "cpu",
                 where: str = "config") -> list[RuleResult]:
    """Check `method` (a registered name or a Method subclass) on its `tiny_config`
    updated with `config`; one RuleResult per rule, in RULES order. A bad name or config,
    or a base model that cannot load, is a UserError (`where` names the config's source)."""
    cls = method_class(method)  # an unknown name fails before torch is imported
    build_config(cls, cls.tiny_config, "tiny_config")  # the class's own mistake, named as such
    settings = {**cls.tiny_config, **(config or {})}
    import torch

    from varbench.worker import limit_cpu_threads

    device = torch.device(device)
    threads = torch.get_num_threads()
    limit_cpu_threads(device)  # as a worker runs it; given back after, for a test session's sake
    try:
        with tempfile.TemporaryDirectory(prefix="varbench-check-") as folder:
            return Check(lambda: cls(build_config(cls, settings, where)), device, Path(folder)).run()
    finally:
        torch.set_num_threads(threads)


def method_class(method: str | type[Method]) -> type[Method]:
    if isinstance(method, str):
        from varbench.registry import get_method

        return get_method(method, "check-method")
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise UserError(f"{method!r} is not a varbench Method subclass", "check_method",
                        "Pass a method name or a subclass of varbench.method.Method.")
    return method


def build_config(cls: type[Method], settings: dict[str, Any], where: str) -> Any:
    from varbench.schema import from_dict

    return from_dict(cls.Config, settings, f"{cls.name} {where}")


def parse_config_pairs(pairs: Sequence[str], where: str = "--config") -> dict[str, Any]:
    """`KEY=VALUE` strings -> {key: value}; values are read as YAML (4, null, true, [ca, ffn])."""
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{where} expects KEY=VALUE, got {pair[:60]!r}", where, "e.g. --config steps=2")
        if key in settings:
            raise UserError(f"{where} {key} given twice", where, "Give each key once.")
        try:
            settings[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            settings[key] = text  # not YAML: the plain string (the config's types check it)
    return settings


def summary(name: str, results: Sequence[RuleResult], seconds: float) -> str:
    failed = [r.rule for r in results if not r.passed]
    verdict = f"{len(failed)} of {len(results)} rules fail ({', '.join(failed)})" if failed else \
        f"all {len(results)} rules pass"
    return f"{name}: {verdict} in {seconds:.1f} s"


# --- the checks -----------------------------------------------------------------------------

@dataclass
class RecordingContext(CellContext):
    """A CellContext that remembers each fit_step call: (step, total, loss names)."""

    calls: list[tuple[Any, Any, tuple[str, ...]]] = field(default_factory=list)

    def fit_step(self, step: int, total: int, **losses: Any) -> None:
        self.calls.append((step, total, tuple(losses)))
        super().fit_step(step, total, **losses)


class WentOnAfterNaN(BaseException):
    """Raised at a fit_step call after NonFiniteLoss: a BaseException, so a method's
    `except Exception` that swallowed the NaN cannot swallow this too and loop forever."""


@dataclass
class NaNContext(CellContext):
    """A CellContext whose first reported loss becomes NaN, checked at once (every step)."""

    loss_check_every: int = 1
    nan_step: Any = None  # the step whose loss was made NaN
    went_on_to: Any = None  # a step reported after NonFiniteLoss was raised

    def fit_step(self, step: int, total: int, **losses: Any) -> None:
        if self.nan_step is not None:
            self.went_on_to = step
            raise WentOnAfterNaN(step)
        if losses:
            self.nan_step = step
            losses[next(iter(losses))] = float("nan")
        super().fit_step(step, total, **losses)


class Check:
    """One method checked in one scratch folder: fit once, then judge each rule."""

    def __init__(self, make_method: Callable[[], Method], device: Any, folder: Path):
        self.make_method = make_method
        self.method = make_method()  # a bad config fails here, before anything runs
        self.device = device
        self.folder = folder
        self.subject = draw_subject(folder / "subject")
        phrase = self.method.subject_phrase(self.subject.class_noun)
        # Mixed prompts of different lengths (text padding is a classic way to make an
        # image depend on its batch), with and without the identifier.
        self.prompts = [f"a photo of {phrase}",
                        f"a {phrase} on a sandy beach at sunset, next to a red umbrella and a palm tree",
                        f"a photo of a {self.subject.class_noun}"]

    def context(self, kind: type[CellContext], name: str) -> Any:
        workdir = self.folder / name
        workdir.mkdir(parents=True, exist_ok=True)
        return kind(device=self.device, fit_seed=FIT_SEED, workdir=workdir, cache_dir=self.folder / "cache",
                    subject_name=self.subject.name)

    def run(self) -> list[RuleResult]:
        ctx = self.context(RecordingContext, "fit")
        base = self.method.load_base(ctx)  # a UserError (missing weights) is the user's to fix
        model, fit_error = fit(self.method, base, self.subject, ctx)
        trains = getattr(type(self.method), "trains", True)
        steps_check = check_fit_steps if trains else check_no_fit_steps
        results = {"fit-steps": judge("fit-steps", lambda: steps_check(ctx, fit_error))}
        if model is None:
            why = f"not checked: fit raised {describe(fit_error)}; fix fit first"
            results.update({rule: RuleResult(rule, False, why, fit_error)
                            for rule in ("batch", "images", "artifact", "parameters")})
        else:
            results.update(self.check_model(model))
        del base, model
        results["nan-loss"] = judge("nan-loss", self.check_nan_loss) if trains else RuleResult(
            "nan-loss", True, "not applicable: the method does not train (Method.trains is False)")
        return [results[rule] for rule in RULES]

    def check_model(self, model: PersonalizedModel) -> dict[str, RuleResult]:
        batch = generate(model, self.prompts, SEEDS)
        alone = [generate(model, [prompt], [seed]) for prompt, seed in zip(self.prompts, SEEDS)]
        resolution = getattr(self.method.config, "resolution", None)
        results = {"images": judge("images", lambda: check_images(batch, alone, resolution)),
                   "batch": judge("batch", lambda: check_batch(batch, alone))}
        artifact, save_error = self.save(model)
        if getattr(type(self.method), "trains", True):
            results["parameters"] = judge("parameters", lambda: check_parameters(model, artifact, save_error))
        else:
            results["parameters"] = judge("parameters", lambda: check_untrained(model))
        results["artifact"] = judge("artifact", lambda: self.check_artifact(model, batch, artifact, save_error))
        return results

    def save(self, model: PersonalizedModel) -> tuple[Path | None, BaseException | None]:
        """Save as the runner does: into a fresh folder under a temporary name, renamed after."""
        from varbench.fileio import atomic_dir

        artifact = self.folder / "artifact"
        try:
            atomic_dir(artifact, model.save)
        except Exception as err:
            return None, err
        return artifact, None

    def check_artifact(self, model: PersonalizedModel, batch: Generated, artifact: Path | None,
                       save_error: BaseException | None) -> str:
        if artifact is None:
            raise Broken(f"save raised {describe(save_error)}; write the trained tensors into the folder it gets")
        if batch.error is not None:
            raise Broken(f"not checked: generate raised {describe(batch.error)}; fix rule images first")
        method = self.make_method()  # a resumed cell: a new method instance, a fresh base
        ctx = self.context(CellContext, "load_artifact")
        base = method.load_base(ctx)
        try:
            loaded = method.load_artifact(base, artifact, ctx)
        except Exception as err:
            raise Broken(f"load_artifact raised {describe(err)}; make it read what save wrote") from err
        again = generate(loaded, self.prompts, SEEDS)
        if again.error is not None:
            raise Broken(f"the loaded model's generate raised {describe(again.error)}; restore everything "
                         "generate needs in load_artifact") from again.error
        for index, (first, second) in enumerate(zip(batch.images, again.images)):
            difference = pixel_difference(first, second)
            if difference != 0:
                raise Broken(f"after save + load_artifact image {index} differs (largest pixel difference "
                             f"{difference}); save every trained tensor and restore all of them in load_artifact")
        counts = (model.trainable_parameters, loaded.trainable_parameters)
        if counts[0] != counts[1]:
            raise Broken(f"trainable_parameters is {counts[0]} after fit but {counts[1]} after load_artifact; "
                         "count the same tensors in both")
        return f"{len(again.images)} images equal bit for bit after save + load_artifact on a fresh base"

    def check_nan_loss(self) -> str:
        method = self.make_method()
        ctx = self.context(NaNContext, "nan_fit")
        base = method.load_base(ctx)
        try:
            method.fit(base, self.subject, ctx)
        except NonFiniteLoss:
            return f"fit stopped with NonFiniteLoss at step {ctx.nan_step} (NaN injected through ctx)"
        except WentOnAfterNaN:
            raise Broken(f"fit caught the NonFiniteLoss of step {ctx.nan_step} and called ctx.fit_step again "
                         f"(step {ctx.went_on_to}); let the error of ctx.fit_step propagate") from None
        except Exception as err:
            if ctx.nan_step is None:
                raise Broken(f"fit raised {describe(err)} before reporting any loss; make fit run on the "
                             "tiny config and report each step's losses") from err
            if caused_by_nan(err):
                raise Broken(f"fit turned NonFiniteLoss into {type(err).__name__}; let it propagate unchanged, "
                             "so the cell records a NaN loss") from err
            raise Broken(f"fit raised {describe(err)} instead of NonFiniteLoss; let the error of "
                         "ctx.fit_step propagate") from err
        if ctx.nan_step is None:
            raise Broken("fit reported no loss, so a NaN cannot be caught; pass each step's losses to "
                         "ctx.fit_step(step, total, loss=...)")
        raise Broken(f"fit returned a model after a NaN loss at step {ctx.nan_step} (the runner would save "
                     "it); do not catch the NonFiniteLoss raised by ctx.fit_step")


# --- single rules ---------------------------------------------------------------------------

@dataclass
class Generated:
    images: list[Any]
    error: BaseException | None = None


def fit(method: Method, base: Any, subject: Any, ctx: CellContext) -> tuple[Any, BaseException | None]:
    """Fit as the worker does (losses flushed at the end); an error is returned, not raised."""
    try:
        model = method.fit(base, subject, ctx)
        ctx.flush_losses()
    except Exception as err:
        return None, err
    return model, None


def generate(model: PersonalizedModel, prompts: list[str], seeds: Sequence[int]) -> Generated:
    try:
        return Generated(list(model.generate(list(prompts), list(seeds))))
    except Exception as err:
        return Generated([], err)


def check_fit_steps(ctx: RecordingContext, fit_error: BaseException | None) -> str:
    fix = "call ctx.fit_step(step, total, loss=...) after each step, step = 1..total"
    if fit_error is not None:
        raise Broken(f"fit raised {describe(fit_error)}; make fit run to its end on the tiny config")
    if not ctx.calls:
        raise Broken(f"fit never called ctx.fit_step; {fix}")
    steps = [call[0] for call in ctx.calls]
    totals = {call[1] for call in ctx.calls}
    if len(totals) != 1 or steps != list(range(1, len(steps) + 1)) or steps[-1] != next(iter(totals)):
        shown = ", ".join(f"{s}/{t}" for s, t, _ in ctx.calls[:6]) + (", ..." if len(steps) > 6 else "")
        raise Broken(f"fit reported steps {shown}; {fix}")
    silent = [step for step, _, names in ctx.calls if not names]
    if silent:
        raise Broken(f"fit reported no loss at step {silent[0]}; pass the step's losses as keywords (loss=...)")
    return f"{len(steps)} steps reported with losses ({', '.join(ctx.calls[0][2])})"


def check_images(batch: Generated, alone: list[Generated], resolution: Any) -> str:
    for images, prompts in [(batch, len(SEEDS))] + [(one, 1) for one in alone]:
        if images.error is not None:
            raise Broken(f"generate raised {describe(images.error)}; make it take any batch of prompts "
                         "and seeds") from images.error
        if len(images.images) != prompts:
            raise Broken(f"generate returned {len(images.images)} images for {prompts} prompts; "
                         "return one image per (prompt, seed)")
    from PIL import Image

    every = batch.images + [one.images[0] for one in alone]
    for image in every:
        if not isinstance(image, Image.Image):
            raise Broken(f"generate returned a {type(image).__name__}; return PIL images")
        if image.mode != "RGB":
            raise Broken(f"generate returned a {image.mode}-mode image; return RGB images (image.convert('RGB'))")
        if resolution is not None and image.size != (resolution, resolution):
            raise Broken(f"generate returned a {image.size[0]}x{image.size[1]} image for resolution "
                         f"{resolution}; generate resolution x resolution images")
    if resolution is None and len({image.size for image in every}) > 1:
        raise Broken("generate returned images of different sizes; give every image one size")
    size = "x".join(map(str, every[0].size))
    return f"{len(batch.images)} RGB {size} images for {len(batch.images)} prompts, 1 for 1"


def check_batch(batch: Generated, alone: list[Generated]) -> str:
    if batch.error or len(batch.images) != len(SEEDS) or any(one.error or len(one.images) != 1 for one in alone):
        raise Broken("not checked: generate gave no images to compare (see rule images); fix that rule first")
    differences = [pixel_difference(first, one.images[0]) for first, one in zip(batch.images, alone)]
    worst = max(differences)
    if worst > BATCH_TOLERANCE:
        index = differences.index(worst)
        raise Broken(f"image {index} differs alone and in a batch (largest pixel difference {worst} > "
                     f"{BATCH_TOLERANCE}); draw each image's noise from its own torch.Generator seeded "
                     "with seeds[i], and keep one image's inputs from affecting another's")
    return f"{len(differences)} mixed prompts: each image alone equals its batched copy (largest pixel difference {worst})"


def check_no_fit_steps(ctx: RecordingContext, fit_error: BaseException | None) -> str:
    """A method that declares `trains = False` must fit without reporting steps."""
    if fit_error is not None:
        raise Broken(f"fit raised {describe(fit_error)}; make fit run to its end on the tiny config")
    if ctx.calls:
        raise Broken(f"fit reported {len(ctx.calls)} steps but the method declares trains = False; "
                     "drop the declaration or the step reports")
    return "no fit steps, as a method that does not train (trains = False) declares"


def check_untrained(model: PersonalizedModel) -> str:
    count = model.trainable_parameters
    if count != 0:
        raise Broken(f"trainable_parameters is {count!r} but the method declares trains = False; report 0")
    return "0 trainable parameters (the method does not train: its artifact may hold inputs such as embeddings)"


def check_parameters(model: PersonalizedModel, artifact: Path | None, save_error: BaseException | None) -> str:
    try:
        count = model.trainable_parameters
    except Exception as err:
        raise Broken(f"trainable_parameters raised {describe(err)}") from err
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise Broken(f"trainable_parameters is {count!r}; return the number of parameters the fit changed (an int)")
    if count > 0:
        return f"{int(count):,} trainable parameters"
    if artifact is None:
        raise Broken(f"trainable_parameters is 0 and save raised {describe(save_error)}, so nothing shows "
                     "that the method trains nothing; count the parameters the fit changed")
    tensors = sorted(str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.name.endswith(TENSOR_SUFFIXES))
    if tensors:
        raise Broken(f"trainable_parameters is 0 but save wrote tensors ({tensors[0]}); count the parameters "
                     "the fit changed")
    return "0 trainable parameters, and the artifact holds no tensors (the method trains nothing)"


# --- helpers ------------------------------------------------------------------------------

def judge(rule: str, check: Callable[[], str]) -> RuleResult:
    """Run one rule's check: its pass line, or its failure (Broken, or the method's own error)."""
    try:
        return RuleResult(rule, True, check())
    except Broken as err:
        return RuleResult(rule, False, str(err), err.__cause__)
    except Exception as err:  # the method failed in a way the check did not foresee
        return RuleResult(rule, False, f"{describe(err)} while checking this rule; fix the method where the "
                          "traceback points (varbench.testing.assert_conforms shows it)", err)


def pixel_difference(first: Any, second: Any) -> int:
    """Largest per-pixel, per-channel difference of two images (levels of 255)."""
    import numpy as np

    a, b = np.asarray(first, dtype=np.int16), np.asarray(second, dtype=np.int16)
    if a.shape != b.shape:
        return 255
    return int(np.abs(a - b).max()) if a.size else 0


def caused_by_nan(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, NonFiniteLoss):
            return True
        err = err.__cause__ or err.__context__
    return False


def describe(err: BaseException | None) -> str:
    """`TypeError: the first line of its message`, shortened."""
    if err is None:
        return "nothing"
    text = (str(err).strip().splitlines() or [""])[0][:160]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def draw_subject(folder: Path) -> Any:
    """A few views of the smoke dataset's toy robot, as a Subject with its own files."""
    from PIL import Image

    from varbench.data.smoke_images import draw_robot, render_view
    from varbench.data.subject import Subject

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for view in range(SUBJECT_VIEWS):
        path = folder / f"{view:02d}.png"
        Image.fromarray(render_view(draw_robot, 0, view)).save(path)
        paths.append(path)
    return Subject(name="check_robot", class_noun="toy robot", live=False, image_paths=tuple(paths))
