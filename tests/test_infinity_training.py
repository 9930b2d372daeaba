"""The teacher-forced training forward: block-causality, checkpointing, drop path, text drop."""
from __future__ import annotations

import fnmatch

import pytest
import torch

from varbench.models.infinity.factory import build_infinity, build_vae
from varbench.models.infinity.schedule import get_schedule
from varbench.models.infinity.text import build_tiny_text_encoder
from varbench.models.infinity.transformer import bit_logits

SCHEDULE = get_schedule(5)


@pytest.fixture(scope="module")
def batch():
    encoder = build_tiny_text_encoder()
    vae = build_vae("infinity-tiny")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    maps = vae.tokenize(images, SCHEDULE, flip_max=0.3, generator=torch.Generator().manual_seed(1))
    text = encoder.encode(["a photo of <placeholder> dog", "a photo of dog"], placeholder="<placeholder>")
    return encoder, text, maps


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    per_bit = torch.nn.functional.cross_entropy(bit_logits(logits).permute(0, 3, 1, 2), labels, reduction="none")
    return per_bit.mean()


def test_forward_shapes_and_block_causality(batch):
    _, text, maps = batch
    model = build_infinity("infinity-tiny", seed=2).eval()
    cond = model.condition(text.features, text.mask)
    with torch.no_grad():
        logits = model(cond, maps.inputs, SCHEDULE)
        assert logits.shape == (2, SCHEDULE.num_tokens, 64) and logits.dtype == torch.float32
        assert bit_logits(logits).shape == (2, SCHEDULE.num_tokens, 32, 2)
        start, end = SCHEDULE.bounds()[3]
        changed = maps.inputs.clone()
        changed[:, start - 1:end - 1] += 1.0  # perturb the inputs of scale 4 only
        other = model(cond, changed, SCHEDULE)
    torch.testing.assert_close(other[:, :start], logits[:, :start])  # earlier scales cannot see it
    assert not torch.allclose(other[:, start:end], logits[:, start:end])
    assert not torch.allclose(other[:, end:], logits[:, end:])  # later scales can
    with pytest.raises(ValueError, match="inputs must be"):
        model(cond, maps.inputs[:, :-1], SCHEDULE)


def test_checkpointing_gives_the_same_loss_and_gradients(batch):
    _, text, maps = batch
    results = []
    for checkpointing in (False, True):
        model = build_infinity("infinity-tiny", seed=2, drop_path_rate=0.5).train()
        torch.manual_seed(0)  # drop path and text drop draw from the global generator
        cond = model.condition(text.features, text.mask)
        loss = loss_of(model(cond, maps.inputs, SCHEDULE, checkpointing=checkpointing), maps.labels())
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 20
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-4)


def test_drop_path_is_stochastic_in_training_only(batch):
    _, text, maps = batch
    model = build_infinity("infinity-tiny", seed=2, drop_path_rate=0.5, text_drop_prob=0.0)
    cond = model.condition(text.features, text.mask)
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        a = model(cond, maps.inputs, SCHEDULE)
        b = model(cond, maps.inputs, SCHEDULE)
        model.eval()
        c, d = model(cond, maps.inputs, SCHEDULE), model(cond, maps.inputs, SCHEDULE)
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)
    assert model.blocks[0].drop_path_rate == 0.0 and model.blocks[-1].drop_path_rate == pytest.approx(0.5)


def test_text_drop_replaces_text_with_the_null_text(batch):
    _, text, _ = batch
    model = build_infinity("infinity-tiny", seed=2, text_drop_prob=1.0)
    null = model.condition(text.features, text.mask, drop=torch.ones(2, dtype=torch.bool))
    model.train()
    dropped = model.condition(text.features, text.mask)
    torch.testing.assert_close(dropped.pooled, null.pooled)
    model.eval()
    kept = model.condition(text.features, text.mask)  # no drop outside training
    assert not torch.allclose(kept.pooled, null.pooled)
    mixed = model.condition(text.features, text.mask, drop=torch.tensor([True, False]))
    torch.testing.assert_close(mixed.pooled[0], null.pooled[0])
    torch.testing.assert_close(mixed.pooled[1], kept.pooled[1])


def test_gradients_reach_placeholder_vectors_and_selected_layers(batch):
    encoder, _, maps = batch
    model = build_infinity("infinity-tiny", seed=2).train()
    trainable = ["block_chunks.*.module.*.ca.*", "block_chunks.*.module.*.ffn.*"]
    for name, param in model.named_parameters():
        param.requires_grad_(any(fnmatch.fnmatch(name, p) for p in trainable))
    vectors = torch.zeros(4, encoder.channels, requires_grad=True)
    text = encoder.encode(["a photo of <placeholder> dog", "a photo of dog"], placeholder="<placeholder>",
                          placeholder_vectors=vectors)
    assert text.lengths[0] == text.lengths[1] + 1 + 3  # the extra placeholder token became four vectors
    cond = model.condition(text.features, text.mask, drop=torch.zeros(2, dtype=torch.bool))
    loss_of(model(cond, maps.inputs, SCHEDULE, checkpointing=True), maps.labels()).backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    assert model.blocks[0].sa.mat_qkv.weight.grad is None


def test_bf16_blocks_run_without_autocast(batch):
    _, text, maps = batch
    full = build_infinity("infinity-tiny", seed=2).eval()
    half = build_infinity("infinity-tiny", seed=2, dtype=torch.bfloat16).eval()
    assert half.blocks[0].sa.mat_qkv.weight.dtype == torch.bfloat16 and half.head.weight.dtype == torch.float32
    with torch.no_grad():
        a = full(full.condition(text.features, text.mask), maps.inputs, SCHEDULE)
        b = half(half.condition(text.features, text.mask), maps.inputs, SCHEDULE)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).abs().max() < 0.1 * a.abs().max()
