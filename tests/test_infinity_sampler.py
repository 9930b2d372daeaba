"""The KV-cached sampler against the teacher-forced forward, seeds, CFG, top-p and quirks."""
from __future__ import annotations

import pytest
import torch

from varbench.models.infinity.bsq import codes_from_bits, flatten_grid, resize
from varbench.models.infinity.factory import build_infinity, build_vae
from varbench.models.infinity.sampler import SamplingConfig, build_condition, sample, sample_bits
from varbench.models.infinity.schedule import get_schedule
from varbench.models.infinity.text import build_tiny_text_encoder

SCHEDULE = get_schedule(5)
PROMPTS = ["a dog in the jungle", "a red vase", "a shiny wooden robot toy on the beach at sunset"]


@pytest.fixture(scope="module")
def parts():
    model = build_infinity("infinity-tiny", seed=1).eval()
    return model, build_vae("infinity-tiny"), build_tiny_text_encoder()


def test_cached_sampling_matches_teacher_forcing(parts):
    model, vae, encoder = parts
    text = encoder.encode(PROMPTS)
    out = sample(model, vae, text, SCHEDULE, seeds=[1, 2, 3], config=SamplingConfig(cfg=1.0), return_logits=True)
    assert out.logits.shape == (3, SCHEDULE.num_tokens, 64) and out.bits.shape == (3, SCHEDULE.num_tokens, 32)
    with torch.no_grad():
        reference = model(model.condition(text.features, text.mask), out.inputs, SCHEDULE)
    torch.testing.assert_close(out.logits, reference, atol=2e-5, rtol=1e-5)


def test_guided_logits_mix_conditional_and_null_text(parts):
    model, vae, encoder = parts
    text = encoder.encode(PROMPTS[:2])
    config = SamplingConfig(cfg=4.0)
    out = sample(model, vae, text, SCHEDULE, seeds=[5, 6], config=config, return_logits=True)
    with torch.no_grad():
        both = build_condition(model, text, 4.0)
        cond = model(both.select(slice(0, 2)), out.inputs, SCHEDULE)
        null = model(both.select(slice(2, 4)), out.inputs, SCHEDULE)
        null_direct = model(model.condition(text.features, text.mask, drop=torch.ones(2, dtype=torch.bool)),
                            out.inputs, SCHEDULE)
    torch.testing.assert_close(null, null_direct)
    torch.testing.assert_close(out.logits, 4.0 * cond + (1 - 4.0) * null, atol=1e-4, rtol=1e-5)


def test_images_do_not_depend_on_the_batch(parts):
    model, vae, encoder = parts
    seeds = [11, 12, 13]
    batched = sample(model, vae, encoder.encode(PROMPTS), SCHEDULE, seeds)
    assert batched.images.shape == (3, 64, 64, 3) and batched.images.dtype == torch.uint8
    # Tokens are identical; pixels may differ by one level where the decoder's batched
    # convolutions round differently (floating point, not randomness).
    for i in range(3):
        alone = sample(model, vae, encoder.encode([PROMPTS[i]]), SCHEDULE, [seeds[i]])
        assert torch.equal(alone.bits[0], batched.bits[i])
        assert (alone.images[0].int() - batched.images[i].int()).abs().max() <= 1
    pair = sample(model, vae, encoder.encode(PROMPTS[1:]), SCHEDULE, seeds[1:])
    assert torch.equal(pair.bits, batched.bits[1:])


def test_seeds_control_the_draws(parts):
    model, vae, encoder = parts
    text = encoder.encode(PROMPTS[:1] * 2)
    out = sample(model, vae, text, SCHEDULE, [7, 8], config=SamplingConfig(tau=1.0, top_p=0.0))
    again = sample(model, vae, text, SCHEDULE, [7, 8], config=SamplingConfig(tau=1.0, top_p=0.0))
    assert torch.equal(out.bits, again.bits)
    assert not torch.equal(out.bits[0], out.bits[1])  # same prompt, different seeds


def test_sample_bits_filtering():
    logit_one = torch.tensor([-4.0, 0.0, 4.0])  # P(1) = 0.018, 0.5, 0.982
    logits = torch.stack([torch.zeros(3), logit_one], dim=-1).view(1, 3, 2)  # 3 tokens, 1 bit each
    uniforms = torch.tensor([[[0.01], [0.49], [0.99]]])
    assert sample_bits(logits, uniforms, top_k=0, top_p=0.0).flatten().tolist() == [True, True, False]
    # top-p 0.97 removes a value whose probability is <= 0.03: 0.018 -> bit 0, 0.982 -> bit 1.
    assert sample_bits(logits, uniforms, top_k=900, top_p=0.97).flatten().tolist() == [False, True, True]
    assert sample_bits(logits, uniforms, top_k=1, top_p=0.97).flatten().tolist() == [False, False, True]
    many = torch.rand(1, 20000, 1, generator=torch.Generator().manual_seed(0))
    rate = sample_bits(torch.tensor([0.0, 1.0]).expand(1, 20000, 2), many, 900, 0.97).float().mean().item()
    assert abs(rate - torch.sigmoid(torch.tensor(1.0)).item()) < 0.02


def test_inputs_are_the_resized_running_sum(parts):
    model, vae, encoder = parts
    text = encoder.encode(PROMPTS[:2])
    for mode in ("trilinear", "area"):
        out = sample(model, vae, text, SCHEDULE, [3, 4], config=SamplingConfig(next_input=mode), decode=False)
        assert out.images is None
        bits = out.per_scale(out.bits)
        assert [tuple(b.shape) for b in bits] == [(2, h, w, 32) for h, w in SCHEDULE.scales]
        assert torch.allclose(out.summed, codes_from_bits(bits, SCHEDULE.final))
        for k in range(1, SCHEDULE.num_scales):
            start, end = SCHEDULE.bounds()[k]
            expected = flatten_grid(resize(codes_from_bits(bits[:k], SCHEDULE.final), SCHEDULE.scales[k], mode))
            torch.testing.assert_close(out.inputs[:, start - 1:end - 1], expected)


def test_released_teacher_attention_quirk(parts):
    model, vae, encoder = parts
    text = encoder.encode(PROMPTS[:2])
    quirk = SamplingConfig(cfg=1.0, attention="released_teacher")
    out = sample(model, vae, text, SCHEDULE, [3, 4], config=quirk, return_logits=True)
    correct = sample(model, vae, text, SCHEDULE, [3, 4], config=SamplingConfig(cfg=1.0), return_logits=True)
    torch.testing.assert_close(out.logits[:, :1], correct.logits[:, :1])  # the SOS sees only itself anyway
    with torch.no_grad():  # reference: each scale alone, RoPE rows 0..n-1, from the same inputs
        cond = model.condition(text.features, text.mask)
        table = model.rope.get(SCHEDULE, model.config.head_dim, torch.device("cpu"))
        expected = []
        for k, (start, end) in enumerate(SCHEDULE.bounds()):
            x = model.sos(cond) if k == 0 else model.embed_inputs(out.inputs[:, start - 1:end - 1])
            n = end - start
            hidden = model.run_blocks(x, cond, model.lvl_embed.weight[k], table[:n], ((0, n, n),))
            expected.append(model.logits(hidden, cond))
        teacher_forced = model(cond, out.inputs, SCHEDULE)
    torch.testing.assert_close(out.logits, torch.cat(expected, 1), atol=2e-5, rtol=1e-5)
    assert not torch.allclose(out.logits[:, 1:], teacher_forced[:, 1:], atol=1e-3)


def test_level_embedding_quirk_changes_the_model_consistently(parts):
    _, vae, encoder = parts
    text = encoder.encode(PROMPTS[:2])
    default = build_infinity("infinity-tiny", seed=1).eval()
    every_chunk = build_infinity("infinity-tiny", seed=1, lvl_embed_every_chunk=True).eval()
    config = SamplingConfig(cfg=1.0)
    out = sample(every_chunk, vae, text, SCHEDULE, [1, 2], config=config, return_logits=True)
    with torch.no_grad():
        cond = every_chunk.condition(text.features, text.mask)
        torch.testing.assert_close(out.logits, every_chunk(cond, out.inputs, SCHEDULE), atol=2e-5, rtol=1e-5)
        assert not torch.allclose(default(cond, out.inputs, SCHEDULE), out.logits, atol=1e-3)


def test_sampling_restores_training_mode(parts):
    model, vae, encoder = parts
    model.train()
    try:
        sample(model, vae, encoder.encode(PROMPTS[:1]), SCHEDULE, [0], decode=False)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="seeds"):
        sample(model, vae, encoder.encode(PROMPTS[:2]), SCHEDULE, [0])

