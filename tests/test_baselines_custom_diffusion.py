"""Custom Diffusion on tiny random-init SD components (CPU, fp32): training, the artifact in
diffusers' formats, diffusers' own loaders, exact reloads, per-image seeding, parameter
counts and the release's rescale augmentation."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0
from safetensors.torch import load_file

from baselines.custom_diffusion import CustomDiffusion, CustomDiffusionConfig
from baselines.fast.training import EncodedSteps
from baselines.sampling import generate_images, sampling_pipeline
from baselines.synthetic import SMOKE_CONFIGS, synthetic_subject
from baselines.tokens import EMBEDS_FILE
from baselines.train_custom_diffusion import (
    FAR_PREFIXES,
    NEAR_PREFIXES,
    WEIGHTS_FILE,
    StepDraws,
    kv_weights_of,
    rescale_augment,
)
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.diffusion import tiny_components
from varbench.schema import from_dict

PROMPTS = ["a <new1> dog in the jungle", "a photo of dog"]
SEEDS = [21, 22]
STEPS = 3


def make_method(**overrides) -> CustomDiffusion:
    # A large learning rate so three steps visibly change the toy model's images.
    settings = {**SMOKE_CONFIGS["custom_diffusion"], "steps": STEPS, "num_class_images": 2, "sample_steps": 3,
                "learning_rate": 1e-3, **overrides}
    return CustomDiffusion(from_dict(CustomDiffusionConfig, settings, "test"))


def make_context(tmp_path, seed: int = 5) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=seed, workdir=tmp_path / "work",
                       cache_dir=tmp_path / "cache")


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("custom_diffusion")
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


def test_weights_file_holds_what_save_attn_procs_writes(fitted, tmp_path):
    assert sorted(p.name for p in fitted.artifact.iterdir()) == sorted([EMBEDS_FILE, WEIGHTS_FILE])
    fitted.model.pipeline.unet.save_attn_procs(str(tmp_path))  # diffusers' own writer
    by_diffusers = load_file(str(tmp_path / WEIGHTS_FILE))
    ours = load_file(str(fitted.artifact / WEIGHTS_FILE))
    assert len(by_diffusers) == 14  # to_k and to_v of the 7 cross-attention layers
    assert all(torch.equal(ours[key], tensor) for key, tensor in by_diffusers.items())
    placeholders = {key for key in ours if key not in by_diffusers}
    assert len(placeholders) == 7 and all(key.endswith("attn1.processor") for key in placeholders)
    assert all(ours[key].numel() == 0 for key in placeholders)
    assert list(load_file(str(fitted.artifact / EMBEDS_FILE))) == ["<new1>"]


def test_diffusers_loaders_reproduce_the_model_and_change_the_images(fitted):
    config = fitted.method.config
    fresh = tiny_components()
    pipeline = sampling_pipeline(fresh, fresh.unet, config)
    untrained = generate_images(pipeline, PROMPTS, SEEDS, config)
    # diffusers installs loaded processors only when `_pipeline` is passed (what its
    # pipeline-level loaders do); without it `load_attn_procs` silently keeps the old
    # ones: huggingface/diffusers issue #9320.
    pipeline.unet.load_attn_procs(str(fitted.artifact), weight_name=WEIGHTS_FILE, _pipeline=pipeline)
    pipeline.load_textual_inversion(str(fitted.artifact), weight_name=EMBEDS_FILE)
    reloaded = generate_images(pipeline, PROMPTS, SEEDS, config)
    for trained, loaded, base in zip(fitted.images, reloaded, untrained):
        assert max_difference(trained, loaded) <= 1
        assert max_difference(loaded, base) > 10  # also the plain "a photo of dog": K/V changed


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


def test_trainable_parameters_are_exactly_what_the_fit_changed(fitted):
    # By hand from the tiny UNet: cross-attention widths 32 (down 0), 64 (down 1), 64 (mid),
    # 64 x 2 (up 0) and 32 x 2 (up 1); to_k and to_v map 32 text channels to that width;
    # plus one 32-wide token embedding.
    widths = [32, 64, 64, 64, 64, 32, 32]
    assert fitted.model.trainable_parameters == 2 * 32 * sum(widths) + 32 == 22560
    reference = tiny_components()
    model = fitted.model
    changed = 0
    for name, processor in model.pipeline.unet.attn_processors.items():
        if name.endswith("attn2.processor"):
            layer = reference.unet.get_submodule(name[: -len(".processor")])
            for projection in ("to_k", "to_v"):
                trained = getattr(processor, f"{projection}_custom_diffusion").weight
                before = getattr(layer, projection).weight
                changed += int((trained != before).sum())
    token_id = model.components.tokenizer.convert_tokens_to_ids("<new1>")
    table = model.components.text_encoder.get_input_embeddings().weight
    reference_table = reference.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[:token_id], reference_table)  # old rows untouched, one row added
    assert table.shape[0] == token_id + 1
    initial = reference_table[reference.tokenizer("ktn", add_special_tokens=False).input_ids].mean(0)
    changed += int((table[token_id] != initial).sum())
    assert changed == model.trainable_parameters
    # The UNet's own weights never change: training went into the processors' copies.
    trained_state = model.pipeline.unet.state_dict()
    for name, before in reference.unet.state_dict().items():
        assert torch.equal(trained_state[name], before), name


def test_processors_are_diffusers_custom_diffusion_ones(fitted):
    processors = fitted.model.pipeline.unet.attn_processors
    assert all(isinstance(p, CustomDiffusionAttnProcessor2_0) for p in processors.values())
    assert sorted(name for name, p in processors.items() if p.train_kv) == sorted(
        name for name in processors if name.endswith("attn2.processor"))


def test_rescale_augmentation_matches_the_release_rules():
    size, factor = 512, 8
    image = torch.ones(3, 600, 600)
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        pixels, mask, prefix = rescale_augment(image, size, factor, rng, enabled=True)
        assert pixels.shape == (3, size, size) and mask.shape == (size // factor, size // factor)
        rows = torch.nonzero(pixels[0].abs().sum(dim=1) > 0).flatten()
        top, scale = int(rows[0]), len(rows)
        if scale == size and bool((mask == 1).all()):
            seen.add("crop")
            assert prefix in NEAR_PREFIXES + ("",)
            continue
        cols = torch.nonzero(pixels[0].abs().sum(dim=0) > 0).flatten()
        left = int(cols[0])
        expected = torch.zeros_like(mask)
        expected[top // factor + 1:(top + scale) // factor - 1, left // factor + 1:(left + scale) // factor - 1] = 1
        assert torch.equal(mask, expected)
        assert size // 3 <= scale <= size
        assert (prefix in FAR_PREFIXES) == (scale < 0.6 * size)
        seen.add("far" if prefix else "placed")
    assert seen == {"crop", "far", "placed"}
    pixels, mask, prefix = rescale_augment(image, size, factor, rng, enabled=False)
    assert prefix == "" and mask.sum() == (size // factor - 2) ** 2
    assert torch.allclose(pixels, torch.ones_like(pixels), atol=1e-5)  # the whole image, resized


def test_learning_rate_scaling_and_release_defaults():
    default = CustomDiffusion().config
    assert default.effective_learning_rate() == pytest.approx(2e-5)  # 1e-5 x batch 2 (DESIGN.md section 8)
    diffusers_script = make_method(double_lr_with_prior=True, learning_rate=1e-5).config
    assert diffusers_script.effective_learning_rate() == pytest.approx(4e-5)  # x2 with prior preservation
    without_prior = make_method(prior_preservation=False, double_lr_with_prior=True, learning_rate=1e-5).config
    assert without_prior.effective_learning_rate() == pytest.approx(2e-5)
    assert make_method(scale_lr=False, learning_rate=1e-5).config.effective_learning_rate() == pytest.approx(1e-5)
    expected = dict(modifier_token="<new1>", initializer_token="{class}", learning_rate=1e-5, steps=500, batch_size=2,
                    max_grad_norm=1.0, prior_preservation=True, prior_loss_weight=1.0, num_class_images=200,
                    hflip=True, scale_augmentation=True, resolution=512, sample_steps=50, guidance_scale=7.5)
    assert {name: getattr(default, name) for name in expected} == expected
    assert CustomDiffusion().subject_phrase("cat") == "<new1> cat"
    assert CustomDiffusion().uses_random_init() is False and make_method().uses_random_init() is True


def test_initializer_can_be_the_class_noun(tmp_path):
    method = make_method(initializer_token="{class}", steps=1, prior_preservation=False, learning_rate=0.0,
                         adam_weight_decay=0.0)
    ctx = make_context(tmp_path)
    model = method.fit(method.load_base(ctx), synthetic_subject(tmp_path / "subject", count=2), ctx)
    reference = tiny_components()
    dog = reference.text_encoder.get_input_embeddings().weight[
        reference.tokenizer("dog", add_special_tokens=False).input_ids].mean(0)
    assert torch.equal(model.vectors[0], dog)  # lr 0: the vector is still its initial value


def test_a_broken_artifact_is_a_user_error(fitted, tmp_path):
    method = make_method()
    with pytest.raises(UserError, match="weights file missing"):
        method.load_artifact(method.load_base(fitted.ctx), tmp_path, fitted.ctx)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read Custom Diffusion weights"):
        method.load_artifact(method.load_base(fitted.ctx), tmp_path, fitted.ctx)


def test_encoding_ahead_draws_and_encodes_as_one_step_at_a_time():
    def planner(ahead: int, calls: list[int]) -> EncodedSteps:
        rng = random.Random(3)

        def draw() -> StepDraws:
            picks = [rng.randrange(5) for _ in range(2)]
            pixels = [torch.full((3, 4, 4), float(rng.random())) for _ in picks]
            return StepDraws(picks, pixels, [torch.ones(2, 2)] * 2, [torch.zeros(1)] * 2, [rng.random() < 0.5] * 2)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            calls.append(pixels.shape[0])
            return pixels[:, :2] * 2  # stands in for the VAE: per image, shape (N, 2, 4, 4)

        return EncodedSteps(draw, encode, ahead)

    one_calls, ahead_calls = [], []
    one, ahead = planner(1, one_calls), planner(3, ahead_calls)
    for _ in range(7):
        (step_one, moments_one), (step_ahead, moments_ahead) = next(one), next(ahead)
        assert step_one.picks == step_ahead.picks and step_one.flips == step_ahead.flips
        assert torch.equal(moments_one, moments_ahead) and moments_one.shape == (2, 2, 4, 4)
    assert one_calls == [2] * 7
    assert ahead_calls == [6, 6, 6]  # 9 steps drawn for 7 used: one batch shape throughout


def test_encode_ahead_changes_only_the_encoder_batch(tmp_path):
    trained = []
    for ahead in (1, 2):
        method = make_method(encode_ahead=ahead)
        ctx = make_context(tmp_path / str(ahead))
        model = method.fit(method.load_base(ctx), synthetic_subject(tmp_path / "subject"), ctx)
        trained.append((kv_weights_of(model.pipeline.unet), model.vectors))
    (kv_one, vectors_one), (kv_two, vectors_two) = trained
    assert kv_one.keys() == kv_two.keys()
    for name in kv_one:  # fp32 on the CPU: equal up to the convolutions' batch-size rounding
        torch.testing.assert_close(kv_one[name], kv_two[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vectors_one, vectors_two, rtol=1e-5, atol=1e-6)


def test_encode_ahead_must_be_positive():
    with pytest.raises(UserError, match="encode_ahead is 0"):
        make_method(encode_ahead=0)
