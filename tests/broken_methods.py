"""Methods that break the runner's rules on purpose, for the conformance kit's tests.

`Tidy` keeps every rule: it fits a colour to the subject's photos by gradient descent and
paints it plus noise drawn from each image's own seed. Each subclass breaks one rule the
way a real method might (noise shared across a batch, a save that misses the trained
tensor, a NaN swallowed by a broad `except`); `BROKEN` maps each to the rules it fails.
`Tidy` and `SharedNoise` are registered (`tidy`, `broken_batch`) for the CLI's tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from varbench.errors import NonFiniteLoss
from varbench.method import Method, PersonalizedModel
from varbench.registry import register_method


@dataclass
class TidyConfig:
    steps: int = 3
    resolution: int = 16
    lr: float = 0.3


class TidyModel(PersonalizedModel):
    def __init__(self, colour: torch.Tensor, config: TidyConfig):
        self.colour = colour.detach().clone()
        self.config = config

    @property
    def trainable_parameters(self) -> int:
        return self.colour.numel()

    def generate(self, prompts, seeds):
        return [self.paint(prompt, torch.Generator().manual_seed(seed)) for prompt, seed in zip(prompts, seeds)]

    def paint(self, prompt: str, generator: torch.Generator) -> Image.Image:
        size = self.config.resolution
        noise = torch.rand(size, size, 3, generator=generator) * 0.2 - 0.1
        shift = (len(prompt) % 7) / 70.0  # the prompt matters a little
        pixels = (self.colour.clamp(0, 1) + noise + shift).clamp(0, 1)
        return Image.fromarray((pixels.numpy() * 255).round().astype(np.uint8))

    def save(self, artifact_dir: Path) -> None:
        save_file({"colour": self.colour}, str(artifact_dir / "colour.safetensors"))


@register_method
class Tidy(Method):
    name = "tidy"
    version = "1"
    Config = TidyConfig
    Model = TidyModel
    tiny_config = {"steps": 3}

    def subject_phrase(self, class_noun: str) -> str:
        return f"qzx {class_noun}"

    def load_base(self, ctx):
        return torch.full((3,), 0.5)

    def fit(self, base, subject, ctx):
        target = torch.tensor(np.stack([np.asarray(im, dtype=np.float32).mean((0, 1)) / 255
                                        for im in subject.load_images()]).mean(0))
        colour = base.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([colour], lr=self.config.lr)
        for step in range(1, self.config.steps + 1):
            loss = ((colour - target) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.report(ctx, step, loss.detach())
        return self.Model(colour, self.config)

    def report(self, ctx, step, loss):
        ctx.fit_step(step, self.config.steps, loss=loss)

    def load_artifact(self, base, artifact_dir, ctx):
        return self.Model(load_file(str(Path(artifact_dir) / "colour.safetensors"))["colour"], self.config)


# --- batch: image i depends on the batch ----------------------------------------------------

class SharedNoiseModel(TidyModel):
    def generate(self, prompts, seeds):
        generator = torch.Generator().manual_seed(seeds[0])  # one generator for the whole batch
        return [self.paint(prompt, generator) for prompt in prompts]


@register_method
class SharedNoise(Tidy):
    name = "broken_batch"
    Model = SharedNoiseModel


# --- images: wrong mode, wrong count ---------------------------------------------------------

class GreyModel(TidyModel):
    def generate(self, prompts, seeds):
        return [image.convert("L") for image in super().generate(prompts, seeds)]


class Grey(Tidy):
    name = "broken_grey"
    Model = GreyModel


class OneShortModel(TidyModel):
    def generate(self, prompts, seeds):
        images = super().generate(prompts, seeds)
        return images[:-1] if len(images) > 1 else images


class OneShort(Tidy):
    name = "broken_count"
    Model = OneShortModel


# --- artifact: save misses the trained tensor --------------------------------------------------

class Forgetful(Tidy):
    name = "broken_artifact"

    def load_artifact(self, base, artifact_dir, ctx):
        return self.Model(base, self.config)  # the saved colour is never read back


# --- parameters: trains, but counts nothing ----------------------------------------------------

class UncountedModel(TidyModel):
    @property
    def trainable_parameters(self) -> int:
        return 0


class Uncounted(Tidy):
    name = "broken_parameters"
    Model = UncountedModel


# --- fit-steps: 0-based steps, or no report at all ----------------------------------------------

class ZeroBased(Tidy):
    name = "broken_steps"

    def report(self, ctx, step, loss):
        ctx.fit_step(step - 1, self.config.steps, loss=loss)


class Silent(Tidy):
    name = "broken_silent"

    def report(self, ctx, step, loss):
        pass  # no steps, so no losses either: a NaN would go unnoticed (rule nan-loss too)


# --- nan-loss: the NonFiniteLoss from ctx.fit_step is caught ------------------------------------

class ReturnsAfterNaN(Tidy):
    name = "broken_nan_return"

    def fit(self, base, subject, ctx):
        try:
            return super().fit(base, subject, ctx)
        except NonFiniteLoss:
            return self.Model(base, self.config)  # "best effort": the runner would save it


class GoesOnAfterNaN(Tidy):
    name = "broken_nan_loop"

    def report(self, ctx, step, loss):
        while True:  # retries forever: only the kit's BaseException stops it
            try:
                ctx.fit_step(step, self.config.steps, loss=loss)
                return
            except Exception:
                continue


class WrapsNaN(Tidy):
    name = "broken_nan_wrap"

    def report(self, ctx, step, loss):
        try:
            ctx.fit_step(step, self.config.steps, loss=loss)
        except NonFiniteLoss as err:
            raise RuntimeError("training diverged") from err


BROKEN: dict[type[Method], set[str]] = {
    SharedNoise: {"batch"},
    Grey: {"images"},
    OneShort: {"images", "batch"},  # too few images: nothing to compare them with
    Forgetful: {"artifact"},
    Uncounted: {"parameters"},
    ZeroBased: {"fit-steps"},
    Silent: {"fit-steps", "nan-loss"},
    ReturnsAfterNaN: {"nan-loss"},
    GoesOnAfterNaN: {"nan-loss"},
    WrapsNaN: {"nan-loss"},
}
