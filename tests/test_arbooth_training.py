"""ARBooth fitting on the tiny random-init backbone (CPU, fp32): the loss goes down, the
teacher and distillation behave, every quirk flag changes what it should, NaN fails."""
from __future__ import annotations

import pytest
import torch

from baselines.synthetic import synthetic_subject
from varbench.schema import from_dict
from varbench.errors import NonFiniteLoss
from varbench.method import CellContext
from varbench.methods.arbooth import ARBooth
from varbench.methods.arbooth import teacher as teacher_module
from varbench.methods.arbooth.data import PromptFeatures, encode_latents, pixel_batch, training_prompt
from varbench.methods.arbooth.losses import weighted_ce
from varbench.methods.arbooth.model import tuned_tensor_names
from varbench.methods.arbooth.scale_weights import loss_normalizer, scale_weights, token_weights
from varbench.methods.arbooth.teacher import frozen_twin
from varbench.models.infinity.bsq import multiscale_quantize
from varbench.models.infinity.factory import build_infinity

TINY = {"model": "infinity-tiny", "resolution": 64}
NAME = "block_chunks.1.module.0.ffn.fc1.weight"  # a tensor the released layers tune


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return synthetic_subject(tmp_path_factory.mktemp("subject"), count=3, size=80, class_noun="dog")


def method(**overrides) -> ARBooth:
    return ARBooth(from_dict(ARBooth.Config, {**TINY, **overrides}, "test"))


def context(tmp_path, seed: int = 5) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=seed, workdir=tmp_path / "work",
                       cache_dir=tmp_path / "cache")


def fit(tmp_path, subject, seed: int = 5, **overrides):
    arbooth = method(**overrides)
    ctx = context(tmp_path, seed)
    base = arbooth.load_base(ctx)
    model = arbooth.fit(base, subject, ctx)
    ctx.flush_losses()
    return model, ctx.losses


def subject_loss(arbooth: ARBooth, base, subject, identifier: torch.Tensor) -> float:
    """Scale-weighted CE on all subject images: no flips, no text drop, eval mode."""
    pipeline, config = base.pipeline, arbooth.config
    latents = encode_latents(pipeline.vae, pixel_batch(subject.load_images(), config.resolution), torch.device("cpu"))
    maps = multiscale_quantize(latents, base.schedule)
    prompt = PromptFeatures.encode(pipeline.text_encoder, training_prompt(arbooth.subject_phrase("dog")),
                                   config.placeholder, torch.device("cpu"))
    text = prompt.rows(latents.shape[0], identifier)
    model = pipeline.model.eval()
    weights = token_weights(scale_weights(config, base.schedule.num_scales), base.schedule)
    with torch.no_grad():
        cond = model.condition(text.features, text.mask, drop=torch.zeros(latents.shape[0], dtype=torch.bool))
        logits = model(cond, maps.inputs, base.schedule)
        return float(weighted_ce(logits, maps.labels(), weights, loss_normalizer(weights, "tokens")))


def test_a_few_steps_lower_the_weighted_loss_on_the_subject(tmp_path, subject):
    # The released pipeline (self-correction, text drop, distillation), a larger step size.
    # Random-init bits sit near the 2-way CE of chance (ln 2 = 0.693): progress is slow.
    arbooth = method(iterations=12, learning_rate=3e-3)
    ctx = context(tmp_path)
    base = arbooth.load_base(ctx)
    before = subject_loss(arbooth, base, subject, torch.zeros(4, 32))
    model = arbooth.fit(base, subject, ctx)
    after = subject_loss(arbooth, base, subject, model.identifier)
    assert after < before - 0.005, (before, after)
    steps = [row["step"] for row in ctx.losses]
    assert steps == list(range(1, 13)) and {"loss", "ce", "distill"} <= set(ctx.losses[0])
    assert model.trainable_parameters == 99_456  # tiny: 2 blocks x (CA 16,576 + FFN 33,088) + 4 x 32


def test_the_same_fit_seed_gives_the_same_model(tmp_path, subject):
    first, _ = fit(tmp_path / "a", subject, seed=3, iterations=2, learning_rate=1e-3)
    second, _ = fit(tmp_path / "b", subject, seed=3, iterations=2, learning_rate=1e-3)
    third, _ = fit(tmp_path / "c", subject, seed=4, iterations=2, learning_rate=1e-3)
    assert all(torch.equal(first.trained[name], second.trained[name]) for name in first.trained)
    assert not torch.equal(first.trained[NAME], third.trained[NAME])


def test_recomputing_and_keeping_activations_train_the_same_weights(tmp_path, subject):
    kept, kept_losses = fit(tmp_path / "kept", subject, iterations=2, learning_rate=1e-3, checkpoint_blocks=0)
    recomputed, losses = fit(tmp_path / "all", subject, iterations=2, learning_rate=1e-3, checkpoint_blocks=-1)
    assert kept_losses == losses
    assert all(torch.equal(kept.trained[name], recomputed.trained[name]) for name in kept.trained)
    untrained = method().load_base(context(tmp_path / "base")).pipeline.model.get_parameter(NAME)
    assert not torch.equal(kept.trained[NAME], untrained.detach().to(kept.trained[NAME].dtype))  # it did train


def test_distillation_is_zero_for_the_untrained_student_and_grows_with_training(tmp_path, subject):
    # Joint step: the first distillation loss sees the student before any update.
    _, losses = fit(tmp_path, subject, iterations=4, learning_rate=1e-3, quirk_optimizer_steps="fixed")
    assert losses[0]["distill"] < 1e-5  # KV-cached teacher == teacher-forced student
    assert losses[-1]["distill"] > 100 * max(losses[0]["distill"], 1e-7)
    # The released teacher (quirk 3: no KV cache, self-only attention) disagrees from the start
    # (mildly: a random-init model's outputs are close to uniform whatever it attends to).
    _, faithful = fit(tmp_path / "q3", subject, iterations=1, quirk_optimizer_steps="fixed",
                      quirk_teacher_attention="faithful")
    assert faithful[0]["distill"] > 10 * losses[0]["distill"]


def test_distillation_modes_and_softmax_quirk_change_the_distillation_loss(tmp_path, subject):
    settings = {"iterations": 2, "learning_rate": 1e-3, "quirk_optimizer_steps": "fixed"}
    values = {}
    for name, extra in {"logits64": {}, "per_bit": {"quirk_distill_softmax": "fixed"},
                        "hard": {"distill": "hard"}, "off": {"distill": "off"}}.items():
        _, losses = fit(tmp_path / name, subject, **settings, **extra)
        values[name] = losses[-1]["distill"]
    assert values["off"] == 0.0
    assert values["logits64"] > 0 and values["per_bit"] > 0 and values["logits64"] != values["per_bit"]
    assert values["hard"] > 0.1  # a CE against hard targets, not a small KL


def test_lvl_embed_quirk_changes_the_model_and_fixed_is_the_pretrained_forward(tmp_path):
    ctx = context(tmp_path)
    faithful = method(quirk_lvl_embed="faithful").load_base(ctx).pipeline
    fixed = method(quirk_lvl_embed="fixed").load_base(ctx).pipeline
    assert faithful.model.config.lvl_embed_every_chunk and not fixed.model.config.lvl_embed_every_chunk
    plain = build_infinity("infinity-tiny")  # the backbone as pretrained: lvl_embed once
    text = fixed.encode(["a photo of dog"])
    inputs = torch.randn(1, fixed.schedule.num_tokens - 1, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = {name: pipe.model(pipe.model.condition(text.features), inputs, pipe.schedule)
                  for name, pipe in (("faithful", faithful), ("fixed", fixed), ("plain", plain_pipe(plain, fixed)))}
    torch.testing.assert_close(logits["fixed"], logits["plain"])
    assert (logits["faithful"] - logits["fixed"]).abs().max() > 1e-3


def plain_pipe(model, like):
    from varbench.models.infinity.pipeline import InfinityPipeline

    return InfinityPipeline(model.eval(), like.vae, like.text_encoder, like.size, True, like.schedule)


def test_next_input_quirk_changes_generated_images(tmp_path):
    ctx = context(tmp_path)
    images = {}
    for setting in ("faithful", "fixed"):
        pipeline = method(quirk_next_input=setting).load_base(ctx).pipeline
        assert pipeline.sampling.next_input == ("area" if setting == "faithful" else "trilinear")
        images[setting] = pipeline.sample(pipeline.encode(["a photo of dog"] * 2), [1, 2], decode=False)
    assert not torch.equal(images["faithful"].inputs, images["fixed"].inputs)


def test_two_optimizer_steps_differ_from_one_step_on_the_sum(tmp_path, subject):
    settings = {"iterations": 2, "learning_rate": 1e-3}
    two_steps, _ = fit(tmp_path / "two", subject, quirk_optimizer_steps="faithful", **settings)
    one_step, _ = fit(tmp_path / "one", subject, quirk_optimizer_steps="fixed", **settings)
    assert not torch.allclose(two_steps.trained[NAME], one_step.trained[NAME])


def test_identifier_listed_twice_gets_two_adamw_updates_per_step(tmp_path, subject):
    # Identifier only, no distillation, one iteration: the same gradient in both runs.
    settings = {"iterations": 1, "layers": ["identifier"], "distill": "off", "learning_rate": 1e-3}
    twice, _ = fit(tmp_path / "twice", subject, quirk_optimizer_steps="faithful", **settings)
    once, _ = fit(tmp_path / "once", subject, quirk_optimizer_steps="fixed", **settings)
    # From zero moments, each AdamW update with the same gradient g moves by lr * g / |g|.
    moved = once.identifier.abs() > 1e-4
    assert moved.float().mean() > 0.9
    torch.testing.assert_close(twice.identifier[moved], 2 * once.identifier[moved], rtol=1e-3, atol=1e-6)
    assert set(twice.trained) == {"special_token"} and twice.trainable_parameters == 4 * 32


def test_bf16_storage_rounds_small_updates_away_where_fp32_keeps_them(tmp_path, subject):
    initial = build_infinity("infinity-tiny").get_parameter(NAME).detach()
    settings = {"iterations": 1, "distill": "off"}  # the released lr: 2.34e-5 per step
    bf16, _ = fit(tmp_path / "bf16", subject, quirk_bf16_weights="faithful", **settings)
    fp32, _ = fit(tmp_path / "fp32", subject, quirk_bf16_weights="fixed", **settings)
    assert bf16.trained[NAME].dtype == torch.bfloat16 and fp32.trained[NAME].dtype == torch.float32
    changed_bf16 = (bf16.trained[NAME] != initial.to(torch.bfloat16)).float().mean()
    changed_fp32 = (fp32.trained[NAME] != initial).float().mean()
    # bf16 keeps 8 significant bits: a 2.3e-5 step moves only weights below ~0.008 in size.
    assert changed_fp32 > 0.95 and changed_bf16 < 0.5, (changed_fp32, changed_bf16)


def test_a_nan_loss_is_reported_through_fit_step(tmp_path, subject):
    with pytest.raises(NonFiniteLoss, match="became (nan|inf)"):
        fit(tmp_path, subject, iterations=3, learning_rate=1e30, distill="off")


def test_teacher_shares_untuned_tensors_and_copies_tuned_ones():
    student = build_infinity("infinity-tiny", seed=1).requires_grad_(False)
    tuned = tuned_tensor_names(student, ARBooth.Config(**TINY))
    twin = frozen_twin(student, tuned)
    for name, param in student.named_parameters():
        other = twin.get_parameter(name)
        assert (other is param) == (name not in tuned)
        assert torch.equal(other, param) and not other.requires_grad
    with torch.no_grad():
        student.get_parameter(NAME).add_(1.0)
    assert not torch.equal(twin.get_parameter(NAME), student.get_parameter(NAME))
    assert twin.get_buffer("block_chunks.0.module.0.sa.zero_k_bias") is student.get_buffer(
        "block_chunks.0.module.0.sa.zero_k_bias")


def test_teacher_pool_is_sampled_once_and_reused(tmp_path, subject, monkeypatch):
    calls = []
    original = teacher_module.Teacher.sample

    def counting(self, text, seeds):
        calls.append(len(seeds))
        return original(self, text, seeds)

    monkeypatch.setattr(teacher_module.Teacher, "sample", counting)
    settings = {"iterations": 3, "teacher_source": "pool", "teacher_pool_size": 5}
    fit(tmp_path, subject, seed=1, **settings)
    assert calls == [2, 2, 1]  # 5 samples in batches of distill_batch_size, before training
    fit(tmp_path, subject, seed=2, **settings)  # another subject fit of the same class
    assert calls == [2, 2, 1]
    assert len(list((tmp_path / "cache" / "teacher_pool").glob("*/pool.safetensors"))) == 1
    calls.clear()
    fit(tmp_path, subject, seed=1, iterations=2)  # on the fly: one call per iteration
    assert calls == [2, 2]


def test_the_speed_layer_follows_the_config_in_each_phase(tmp_path, subject, monkeypatch):
    """Generation: compiled blocks only with compile_generation; the fit's training passes
    and its teacher: compiled blocks with compile_blocks, the generation setting back after
    each iteration. (On the CPU compiled blocks run the plain code: only the swaps show.)"""
    from varbench.methods.arbooth import training
    from varbench.models.infinity.bsq import BSQTokenizer
    from varbench.models.infinity.fast.compiled import CompiledBlock, CompiledDecoding
    from varbench.models.infinity.fast.ops import SubPixelUpsample
    from varbench.models.infinity.transformer import Block

    seen = []
    original_iteration, original_sample = training.Trainer._iteration, teacher_module.Teacher.sample

    def iteration(self, step):
        seen.append(("student", {type(block) for block in self.model.blocks}))
        return original_iteration(self, step)

    def teacher_sample(self, text, seeds):
        seen.append(("teacher", {type(block) for block in self.model.blocks}))
        return original_sample(self, text, seeds)

    monkeypatch.setattr(training.Trainer, "_iteration", iteration)
    monkeypatch.setattr(teacher_module.Teacher, "sample", teacher_sample)
    for compile_blocks, compile_generation in ((True, False), (False, True)):
        arbooth = method(iterations=1, compile_blocks=compile_blocks, compile_generation=compile_generation)
        ctx = context(tmp_path / f"{compile_blocks}")
        base = arbooth.load_base(ctx)
        generating = {CompiledBlock} if compile_generation else {Block}
        assert {type(block) for block in base.pipeline.model.blocks} == generating
        assert type(base.pipeline.vae) is CompiledDecoding and isinstance(base.pipeline.vae, BSQTokenizer)
        assert any(isinstance(m, SubPixelUpsample) for m in base.pipeline.vae.modules())
        assert base.speed is not None and base.speed.changes
        seen.clear()
        arbooth.fit(base, subject, ctx)
        fitting = {CompiledBlock} if compile_blocks else {Block}
        assert seen == [("student", fitting), ("teacher", fitting)]
        assert {type(block) for block in base.pipeline.model.blocks} == generating
