"""A small deterministic method for the runner's tests, registered with @register_method.

`fit` learns the mean colour of the references by gradient descent (a real optimisation
with per-step losses); `generate` paints that colour plus noise drawn from the image's
own seed, so images depend on (prompt, seed) only. `step_seconds` slows fitting and
generation down so that tests can kill a run mid-way. `fail_on` makes a named subject's
fit raise while the file `fail_flag` exists (or always, if no flag is given), for
failure-isolation and retry tests; `nan_on` makes that subject's loss NaN.

Like a real fit, `fit` changes its base in place (each step). `toy_reuse` is the same
method letting a worker keep its base across cells (`snapshot_base` / `restore_base`);
`restore_error` makes that restore raise. (A method of its own: a new ToyConfig field
would change the toy arm's pinned run id.)

torch is imported where the toy computes, not with the module: every CLI subprocess of the
tests registers the toy ($VARBENCH_PLUGINS), and those that only plan, validate or fail
early (dry runs, one-line errors) then start without torch, as they would without the toy.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from varbench.errors import UserError
from varbench.method import Method, PersonalizedModel
from varbench.registry import register_method


LOAD_CALLS: list[str] = []  # subjects whose cell called load_base (in this process)
LIVE_AT_LOAD: list[int] = []  # bases still alive each time load_base was called
BASES: weakref.WeakSet = weakref.WeakSet()  # every base load_base made that is still alive


@dataclass
class ToyConfig:
    steps: int = 20
    lr: float = 0.2
    resolution: int = 32
    step_seconds: float = 0.0
    fail_on: str = ""
    fail_flag: str = ""
    load_error: str = ""  # load_base raises this UserError (e.g. missing weights)
    nan_on: str = ""


class ToyModel(PersonalizedModel):
    def __init__(self, colour: torch.Tensor, config: ToyConfig):
        self.colour = colour.detach().clone()
        self.config = config

    @property
    def trainable_parameters(self) -> int:
        return self.colour.numel()

    def generate(self, prompts, seeds):
        import torch

        images = []
        for prompt, seed in zip(prompts, seeds):
            time.sleep(self.config.step_seconds)
            generator = torch.Generator().manual_seed(seed)
            size = self.config.resolution
            noise = torch.rand(size, size, 3, generator=generator) * 0.2 - 0.1
            shift = (len(prompt) % 7) / 70.0  # the prompt matters a little
            pixels = (self.colour.clamp(0, 1) + noise + shift).clamp(0, 1)
            images.append(Image.fromarray((pixels.numpy() * 255).round().astype(np.uint8)))
        return images

    def save(self, artifact_dir: Path) -> None:
        from safetensors.torch import save_file

        save_file({"colour": self.colour}, str(artifact_dir / "toy.safetensors"))


@register_method
class ToyMethod(Method):
    name = "toy"
    version = "1"
    Config = ToyConfig

    def subject_phrase(self, class_noun: str) -> str:
        return f"zxq {class_noun}"

    def load_base(self, ctx):
        import torch

        LOAD_CALLS.append(ctx.subject_name)
        LIVE_AT_LOAD.append(len(BASES))
        if self.config.load_error:
            raise UserError(self.config.load_error, "toy weights", "Put them in place.")
        base = torch.full((3,), 0.5)
        BASES.add(base)
        return base

    def fit(self, base, subject, ctx):
        import torch

        if subject.name == self.config.fail_on and (not self.config.fail_flag or Path(self.config.fail_flag).exists()):
            raise RuntimeError(f"toy failure on {subject.name}")
        target = torch.tensor(np.stack([np.asarray(im, dtype=np.float32).mean((0, 1)) / 255
                                        for im in subject.load_images()]).mean(0))
        generator = torch.Generator().manual_seed(ctx.fit_seed)
        colour = (base + 0.01 * torch.randn(3, generator=generator)).requires_grad_(True)
        optimizer = torch.optim.SGD([colour], lr=self.config.lr)
        for step in range(1, self.config.steps + 1):
            time.sleep(self.config.step_seconds)
            loss = ((colour - target) ** 2).sum()
            if subject.name == self.config.nan_on:
                loss = loss * float("nan")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            base.add_(0.01)  # the base changes in place, as a real fit's does
            ctx.fit_step(step, self.config.steps, loss=loss.detach())
        return ToyModel(colour, self.config)

    def load_artifact(self, base, artifact_dir, ctx):
        from safetensors.torch import load_file

        return ToyModel(load_file(str(artifact_dir / "toy.safetensors"))["colour"], self.config)


@dataclass
class ReusingToyConfig(ToyConfig):
    restore_error: str = ""


@register_method
class ReusingToyMethod(ToyMethod):
    name = "toy_reuse"
    Config = ReusingToyConfig

    def snapshot_base(self, base):
        return base.clone()

    def restore_base(self, base, snapshot):
        if self.config.restore_error:
            raise RuntimeError(self.config.restore_error)
        base.copy_(snapshot)
