"""Selective layer tuning: exact trainable sets on the 2B layout, and gradients on the tiny model."""
from __future__ import annotations

import pytest
import torch

from varbench.errors import UserError
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.tuned_layers import block_of, count_trainable, select_tensors
from varbench.methods.arbooth.model import tuned_tensor_names
from varbench.models.infinity.factory import build_infinity

WIDTH, DEPTH = 2048, 32
PER_BLOCK = {"sa": 16_783_376, "ca": 16_783_360, "ffn": 33_564_672}  # DESIGN.md section 7
IDENTIFIER = 4 * WIDTH


@pytest.fixture(scope="module")
def meta_2b():
    return build_infinity("infinity-2b", device="meta")


def shapes_of(model) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def count(model, layers, block_range=None) -> int:
    return count_trainable(shapes_of(model), layers, DEPTH, 4, (4, WIDTH), block_range)


def test_released_default_trains_exactly_1_611_145_216_parameters(meta_2b):
    assert count(meta_2b, ARBoothConfig().layers) == 1_611_145_216
    names = tuned_tensor_names(meta_2b, ARBoothConfig())
    assert len(names) == 32 * (6 + 4)  # ca: mat_q w/b, mat_kv w, v_bias, proj w/b; ffn: fc1 w/b, fc2 w/b
    parts = {name.split(".")[4] for name in names}
    assert parts == {"ca", "ffn"}
    assert not any(name.startswith("text_proj_for_sos") for name in names)


@pytest.mark.parametrize("layers, expected", [
    (["sa"], DEPTH * PER_BLOCK["sa"]),
    (["ca"], DEPTH * PER_BLOCK["ca"]),
    (["ffn"], DEPTH * PER_BLOCK["ffn"]),
    (["identifier"], IDENTIFIER),
    (["sa", "identifier"], DEPTH * PER_BLOCK["sa"] + IDENTIFIER),
    (["ca", "ffn"], DEPTH * (PER_BLOCK["ca"] + PER_BLOCK["ffn"])),
    (["all"], DEPTH * sum(PER_BLOCK.values())),
    (["all", "identifier"], DEPTH * sum(PER_BLOCK.values()) + IDENTIFIER),
    (["sa", "ca", "ffn", "all"], DEPTH * sum(PER_BLOCK.values())),  # no double counting
])
def test_trainable_count_of_every_layer_option(meta_2b, layers, expected):
    assert count(meta_2b, layers) == expected


def test_block_range_restricts_block_parts_only(meta_2b):
    expected = 16 * (PER_BLOCK["ca"] + PER_BLOCK["ffn"]) + IDENTIFIER
    assert count(meta_2b, ["ca", "ffn", "identifier"], (0, 16)) == expected
    names = select_tensors(shapes_of(meta_2b), ["ffn"], DEPTH, 4, (30, 32))
    assert {block_of(name, 4)[0] for name in names} == {30, 31}
    assert names[0] == "block_chunks.7.module.2.ffn.fc1.weight"
    with pytest.raises(UserError, match="exceeds the model's 32 blocks"):
        select_tensors(shapes_of(meta_2b), ["ffn"], DEPTH, 4, (0, 40))


def test_text_pooler_and_norms_never_match():
    names = ["text_proj_for_sos.ca.mat_q", "text_proj_for_sos.ca.mat_kv.weight",
             "block_chunks.0.module.1.ca_norm.weight", "block_chunks.0.module.1.ada_gss",
             "block_chunks.2.module.3.ca.mat_q.weight", "head.weight"]
    assert select_tensors(names, ["all"], 16, 4) == ["block_chunks.2.module.3.ca.mat_q.weight"]
    assert block_of("block_chunks.2.module.3.ca.mat_q.weight", 4) == (11, "ca")
    assert block_of("text_proj_for_sos.ca.mat_q", 4) is None


@pytest.mark.parametrize("layers", [["sa"], ["ca"], ["ffn"], ["all"], ["ca", "ffn"]])
def test_only_selected_tensors_get_gradients_on_the_tiny_model(layers):
    model = build_infinity("infinity-tiny", seed=3).eval()  # no drop path: it could zero a block's gradient
    config = ARBoothConfig(model="infinity-tiny", resolution=64, layers=layers)
    tuned = set(tuned_tensor_names(model, config))
    for name, param in model.named_parameters():
        param.requires_grad_(name in tuned)
    from varbench.models.infinity.schedule import get_schedule

    schedule = get_schedule(5)
    generator = torch.Generator().manual_seed(0)
    cond = model.condition(torch.randn(2, 5, 32, generator=generator), None, drop=torch.zeros(2, dtype=torch.bool))
    inputs = torch.randn(2, schedule.num_tokens - 1, 32, generator=generator)
    model(cond, inputs, schedule).square().mean().backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == tuned
