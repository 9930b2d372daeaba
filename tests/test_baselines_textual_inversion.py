"""Textual Inversion on tiny random-init SD components (CPU, fp32): training, the
`learned_embeds.safetensors` artifact through diffusers' `load_textual_inversion`, exact
reloads, seeding, and that only the new embedding row changes."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baselines.sampling import generate_images, sampling_pipeline
from baselines.synthetic import SMOKE_CONFIGS, synthetic_subject
from baselines.textual_inversion import TextualInversion, TextualInversionConfig
from baselines.tokens import EMBEDS_FILE, write_rows
from baselines.train_textual_inversion import OBJECT_TEMPLATES
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.diffusion import tiny_components
from varbench.schema import from_dict

PROMPTS = ["a <placeholder> in the jungle", "a photo of <placeholder>"]
SEEDS = [31, 32]
STEPS = 3


def make_method(**overrides) -> TextualInversion:
    # A large learning rate so three steps visibly move the toy embedding.
    settings = {**SMOKE_CONFIGS["textual_inversion"], "steps": STEPS, "sample_steps": 3, "learning_rate": 2e-2,
                **overrides}
    return TextualInversion(from_dict(TextualInversionConfig, settings, "test"))


def make_context(tmp_path, seed: int = 3) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=seed, workdir=tmp_path / "work",
                       cache_dir=tmp_path / "cache")


def max_difference(first, second) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def fit(tmp_path, seed: int = 3, **overrides):
    method = make_method(**overrides)
    ctx = make_context(tmp_path, seed)
    model = method.fit(method.load_base(ctx), synthetic_subject(tmp_path / "subject"), ctx)
    ctx.flush_losses()
    return method, ctx, model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("textual_inversion")
    method, ctx, model = fit(tmp)
    artifact = tmp / "artifact"
    artifact.mkdir()
    model.save(artifact)
    return SimpleNamespace(method=method, ctx=ctx, model=model, artifact=artifact, tmp=tmp,
                           images=model.generate(PROMPTS, SEEDS))


def class_noun_embedding(components) -> torch.Tensor:
    ids = components.tokenizer("dog", add_special_tokens=False).input_ids
    return components.text_encoder.get_input_embeddings().weight[ids].mean(0)


def test_fit_logs_one_finite_loss_per_optimizer_step(fitted):
    assert [row["step"] for row in fitted.ctx.losses] == [1.0, 2.0, 3.0]
    assert all(math.isfinite(row["loss"]) for row in fitted.ctx.losses)


def test_artifact_loads_with_diffusers_and_the_learnt_vector_changes_the_images(fitted):
    state = load_file(str(fitted.artifact / EMBEDS_FILE))
    assert list(state) == ["<placeholder>"] and state["<placeholder>"].shape == (1, 32)
    config = fitted.method.config
    fresh = tiny_components()
    pipeline = sampling_pipeline(fresh, fresh.unet, config)
    pipeline.load_textual_inversion(str(fitted.artifact))  # diffusers' own loader, default file name
    reloaded = generate_images(pipeline, PROMPTS, SEEDS, config)
    assert [max_difference(a, b) for a, b in zip(reloaded, fitted.images)] == [0, 0]
    # The same word at its initial value (the class noun's embedding) draws other images.
    token_id = fresh.tokenizer.convert_tokens_to_ids("<placeholder>")
    write_rows(fresh.text_encoder.get_input_embeddings(), [token_id], class_noun_embedding(tiny_components())[None])
    at_start = generate_images(pipeline, PROMPTS, SEEDS, config)
    assert all(max_difference(a, b) > 5 for a, b in zip(at_start, reloaded))


def test_load_artifact_reproduces_the_in_memory_images(fitted):
    method = make_method()
    model = method.load_artifact(method.load_base(fitted.ctx), fitted.artifact, fitted.ctx)
    assert [max_difference(a, b) for a, b in zip(model.generate(PROMPTS, SEEDS), fitted.images)] == [0, 0]
    assert model.trainable_parameters == 32


def test_each_image_depends_only_on_its_own_prompt_and_seed(fitted):
    alone = fitted.model.generate(PROMPTS[1:], SEEDS[1:])[0]
    swapped = fitted.model.generate(PROMPTS[::-1], SEEDS[::-1])
    assert max_difference(alone, fitted.images[1]) <= 1
    assert max_difference(swapped[0], fitted.images[1]) <= 1
    assert max_difference(swapped[1], fitted.images[0]) <= 1


def test_only_the_new_embedding_row_changes(fitted):
    reference = tiny_components()
    components = fitted.model.components
    width = reference.text_encoder.config.hidden_size
    assert fitted.model.trainable_parameters == width == 32
    for trained, before in ((components.unet, reference.unet), (components.vae, reference.vae)):
        for name, tensor in before.state_dict().items():
            assert torch.equal(trained.state_dict()[name], tensor), name
    table = components.text_encoder.get_input_embeddings().weight
    reference_table = reference.text_encoder.get_input_embeddings().weight
    token_id = components.tokenizer.convert_tokens_to_ids("<placeholder>")
    assert token_id == reference_table.shape[0] and torch.equal(table[:token_id], reference_table)
    assert int((table[token_id] != class_noun_embedding(reference)).sum()) == width
    other = {k: v for k, v in components.text_encoder.state_dict().items() if "token_embedding" not in k}
    for name, tensor in other.items():
        assert torch.equal(tensor, reference.text_encoder.state_dict()[name]), name


def test_fit_is_a_function_of_the_fit_seed(tmp_path):
    _, _, first = fit(tmp_path / "a", seed=9, steps=2)
    _, _, again = fit(tmp_path / "b", seed=9, steps=2)
    _, _, other = fit(tmp_path / "c", seed=10, steps=2)
    assert torch.equal(first.vectors, again.vectors)
    assert not torch.equal(first.vectors, other.vectors)


def test_subject_phrase_templates_and_release_defaults():
    assert TextualInversion().subject_phrase("dog") == "<placeholder>"
    assert make_method(keep_class_noun=True).subject_phrase("dog") == "<placeholder> dog"
    assert len(OBJECT_TEMPLATES) == 27 and all(t.count("{}") == 1 for t in OBJECT_TEMPLATES)
    default = TextualInversion().config
    assert default.effective_learning_rate() == pytest.approx(2e-3)  # 5e-4 x batch 1 x accumulation 4
    expected = dict(learning_rate=5e-4, steps=3000, batch_size=1, grad_accumulation=4, max_grad_norm=None,
                    flip_probability=0.5,
                    adam_weight_decay=1e-2, resolution=512, sample_steps=50, guidance_scale=7.5)
    assert {name: getattr(default, name) for name in expected} == expected
    assert TextualInversion().uses_random_init() is False and make_method().uses_random_init() is True


def test_a_broken_artifact_is_a_user_error(fitted, tmp_path):
    method = make_method()
    with pytest.raises(UserError, match="embedding file missing"):
        method.load_artifact(method.load_base(fitted.ctx), tmp_path, fitted.ctx)
    (tmp_path / EMBEDS_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="cannot read learned token embedding"):
        method.load_artifact(method.load_base(fitted.ctx), tmp_path, fitted.ctx)


def test_fused_micro_batches_give_the_accumulated_steps(tmp_path):
    # One batch of 4 instead of 4 accumulated micro-batches of 1: the same draws and the
    # same mean gradient, so the same embedding and logged losses up to fp32 rounding.
    runs = [fit(tmp_path / str(fused), fuse_micro_batches=fused) for fused in (False, True)]
    (_, ctx_apart, apart), (_, ctx_fused, fused) = runs
    assert fused.config.fused_micro_batches() == 4 and apart.config.fused_micro_batches() == 1
    assert not torch.equal(apart.vectors, class_noun_embedding(tiny_components()))  # it trained
    torch.testing.assert_close(fused.vectors, apart.vectors, rtol=1e-5, atol=1e-6)
    losses = [[row["loss"] for row in ctx.losses] for ctx in (ctx_apart, ctx_fused)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
