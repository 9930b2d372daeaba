"""DreamBooth on tiny random-init SD components (CPU, fp32): training, the diffusers-format
artifact, exact reloads, per-image seeding, parameter counts and the shared class-image cache."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

import baselines.class_images as class_images
from baselines.custom_diffusion import CustomDiffusion, CustomDiffusionConfig
from baselines.dreambooth import DreamBooth, DreamBoothConfig
from baselines.sampling import generate_images, sampling_pipeline
from baselines.synthetic import SMOKE_CONFIGS, synthetic_subject
from baselines.textual_inversion import TextualInversion
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.diffusion import SD15_ID, SD15_REVISION, tiny_components
from varbench.schema import from_dict

PROMPTS = ["a sks dog in the jungle", "a photo of sks dog"]
SEEDS = [11, 12]
STEPS = 3


def make_method(**overrides) -> DreamBooth:
    # A large learning rate so three steps visibly change the toy model's images.
    settings = {**SMOKE_CONFIGS["dreambooth"], "steps": STEPS, "num_class_images": 2, "sample_steps": 3,
                "learning_rate": 1e-3, **overrides}
    return DreamBooth(from_dict(DreamBoothConfig, settings, "test"))


def make_context(tmp_path, seed: int = 7) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=seed, workdir=tmp_path / "work",
                       cache_dir=tmp_path / "cache")


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dreambooth")
    method = make_method()
    ctx = make_context(tmp)
    model = method.fit(method.load_base(ctx), synthetic_subject(tmp / "subject"), ctx)
    ctx.flush_losses()
    artifact = tmp / "artifact"
    artifact.mkdir()
    model.save(artifact)
    return SimpleNamespace(method=method, ctx=ctx, model=model, artifact=artifact, tmp=tmp,
                           images=model.generate(PROMPTS, SEEDS))


def test_fit_logs_one_finite_loss_row_per_step(fitted):
    rows = fitted.ctx.losses
    assert [row["step"] for row in rows] == [1.0, 2.0, 3.0]
    for row in rows:
        assert all(math.isfinite(row[key]) for key in ("loss", "instance_loss", "prior_loss"))
        assert row["loss"] == pytest.approx(row["instance_loss"] + row["prior_loss"], rel=1e-5)


def test_artifact_reloads_with_diffusers_and_changes_the_images(fitted):
    assert sorted(p.name for p in fitted.artifact.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    config = fitted.method.config
    unet = UNet2DConditionModel.from_pretrained(str(fitted.artifact), use_safetensors=True)
    fresh = tiny_components()
    reloaded = generate_images(sampling_pipeline(fresh, unet, config), PROMPTS, SEEDS, config)
    untrained = generate_images(sampling_pipeline(fresh, fresh.unet, config), PROMPTS, SEEDS, config)
    for trained, loaded, base in zip(fitted.images, reloaded, untrained):
        assert max_difference(trained, loaded) == 0
        assert max_difference(loaded, base) > 20


def test_load_artifact_reproduces_the_in_memory_images(fitted):
    method = make_method()
    model = method.load_artifact(method.load_base(fitted.ctx), fitted.artifact, fitted.ctx)
    assert [max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), fitted.images)] == [0, 0]
    assert model.trainable_parameters == fitted.model.trainable_parameters


def test_each_image_depends_only_on_its_own_prompt_and_seed(fitted):
    alone = fitted.model.generate(PROMPTS[1:], SEEDS[1:])[0]
    swapped = fitted.model.generate(PROMPTS[::-1], SEEDS[::-1])
    assert max_difference(alone, fitted.images[1]) <= 1
    assert max_difference(swapped[0], fitted.images[1]) <= 1
    assert max_difference(swapped[1], fitted.images[0]) <= 1
    assert max_difference(fitted.images[0], fitted.images[1]) > 20  # the seeds do matter


def test_trainable_parameters_are_exactly_what_the_fit_changed(fitted):
    reference = tiny_components()
    trained = fitted.model.trained_unet.state_dict()
    changed = sum(t.numel() for name, t in reference.unet.state_dict().items() if not torch.equal(t, trained[name]))
    assert fitted.model.trainable_parameters == changed == sum(p.numel() for p in reference.unet.parameters())
    for frozen, original in ((fitted.model.components.vae, reference.vae),
                             (fitted.model.components.text_encoder, reference.text_encoder)):
        for (name, tensor), (_, before) in zip(frozen.state_dict().items(), original.state_dict().items()):
            assert torch.equal(tensor, before), name


def test_class_images_are_built_once_and_shared_with_custom_diffusion(tmp_path, monkeypatch):
    calls = []
    real_generate = class_images.generate_images
    monkeypatch.setattr(class_images, "generate_images",
                        lambda *args, **kwargs: calls.append(len(args[1])) or real_generate(*args, **kwargs))
    ctx = make_context(tmp_path)
    components = tiny_components()
    config = make_method(num_class_images=3, class_batch_size=2).config
    first = class_images.class_image_paths(components, config, "dog", ctx)
    assert calls == [2, 1] and len(first) == 3
    again = class_images.class_image_paths(components, config, "dog", ctx)
    assert again == first and calls == [2, 1]  # reused, not regenerated
    custom = from_dict(CustomDiffusionConfig, {**SMOKE_CONFIGS["custom_diffusion"], "num_class_images": 3,
                                               "sample_steps": 3}, "test")
    assert class_images.class_image_paths(components, custom, "dog", ctx) == first and calls == [2, 1]
    other_class = class_images.class_image_paths(components, config, "cat", ctx)
    assert other_class[0].parent != first[0].parent and calls == [2, 1, 2, 1]


def test_class_image_key_ignores_batch_size_and_follows_sampler_settings():
    components = tiny_components()
    config = make_method().config
    key = class_images.class_image_key(components, config, "a photo of dog", torch.float32)
    assert key == class_images.class_image_key(components, make_method(class_batch_size=1).config,
                                               "a photo of dog", torch.float32)
    assert key != class_images.class_image_key(components, make_method(sample_steps=4).config,
                                               "a photo of dog", torch.float32)
    assert key["base_model"] == "tiny-v1-seed0" and key["count"] == 2


def test_identifier_random_init_flag_and_release_defaults():
    assert make_method().subject_phrase("stuffed animal") == "sks stuffed animal"
    assert make_method().uses_random_init() is True
    default = DreamBooth()
    assert default.uses_random_init() is False
    expected = dict(base_model=SD15_ID, revision=SD15_REVISION, resolution=512, learning_rate=5e-6, steps=800,
                    batch_size=1, max_grad_norm=1.0, prior_preservation=True, prior_loss_weight=1.0,
                    num_class_images=200, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=1e-2,
                    adam_epsilon=1e-8, sampler="ddim", sample_steps=50, guidance_scale=7.5,
                    mixed_precision="bf16")
    assert {name: getattr(default.config, name) for name in expected} == expected


def test_without_prior_preservation_only_the_instance_loss_is_logged(tmp_path):
    method = make_method(prior_preservation=False, steps=2)
    ctx = make_context(tmp_path)
    method.fit(method.load_base(ctx), synthetic_subject(tmp_path / "subject", count=2), ctx)
    ctx.flush_losses()
    assert [sorted(row) for row in ctx.losses] == [["loss", "step"]] * 2
    assert not (tmp_path / "cache" / "class_images").exists()


def test_a_broken_artifact_is_a_user_error(fitted, tmp_path):
    method = make_method()
    with pytest.raises(UserError, match="no UNet config.json"):
        method.load_artifact(method.load_base(fitted.ctx), tmp_path, fitted.ctx)
    (tmp_path / "config.json").write_text((fitted.artifact / "config.json").read_text())
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot load the DreamBooth UNet"):
        method.load_artifact(method.load_base(fitted.ctx), tmp_path, fitted.ctx)


@pytest.mark.parametrize("method_class", [DreamBooth, CustomDiffusion, TextualInversion])
@pytest.mark.parametrize("field, value, message", [("resolution", 100, "multiple of 8"), ("steps", 0, "at least 1"),
                                                    ("sample_steps", 0, "at least 1"),
                                                    ("learning_rate", -1.0, "must not be negative")])
def test_bad_config_values_are_user_errors(method_class, field, value, message):
    config = from_dict(method_class.Config, {**SMOKE_CONFIGS[method_class.name], field: value}, "protocol.yaml")
    with pytest.raises(UserError, match=message):
        method_class(config)
