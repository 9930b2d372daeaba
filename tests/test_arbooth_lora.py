"""ARBooth with LoRA: adapters on the released parts only, a fit that starts at the base
model, artifacts of A and B only that reload to the same images, a teacher that never
sees the adapters, a base left as loaded; the 24 GB recipe's optimizer and ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from baselines.synthetic import synthetic_subject
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.methods.arbooth import ARBooth
from varbench.methods.arbooth.artifact import ARTIFACT_FILE
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.lora import add_adapters, merge_adapters, target_layers
from varbench.methods.arbooth.optim import RoundedStateAdamW
from varbench.methods.arbooth.teacher import frozen_twin
from varbench.methods.arbooth.tuned_layers import block_of
from varbench.models.infinity.factory import build_infinity
from varbench.schema import from_dict, identity_dict
from varbench.testing import check_method

TINY = {"model": "infinity-tiny", "resolution": 64, "iterations": 3, "layers": ["lora", "identifier"],
        "lora_learning_rate": 3e-2, "learning_rate": 3e-3}
PROMPTS = ["a <placeholder> dog in the snow", "a <placeholder> dog on the beach"]
SEEDS = [11, 12]


def make(**overrides) -> ARBooth:
    return ARBooth(from_dict(ARBooth.Config, {**TINY, **overrides}, "test"))


def context(tmp_path) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=9, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in images]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arbooth-lora")
    method, ctx = make(), context(tmp)
    base = method.load_base(ctx)
    loaded = {name: tensor.clone() for name, tensor in base.pipeline.model.state_dict().items()}
    model = method.fit(base, synthetic_subject(tmp / "subject", count=3, size=72), ctx)
    folder = tmp / "artifact"
    folder.mkdir()
    model.save(folder)
    return method, ctx, model, folder, loaded


def test_adapters_sit_on_the_linear_layers_of_cross_attention_and_ffn_only():
    model = build_infinity("infinity-tiny", device="meta")
    layers = target_layers(model, ARBoothConfig(layers=["lora", "identifier"]))
    assert layers and all(".ca." in name or ".ffn." in name for name in layers)
    assert {name.rsplit(".", 1)[1] for name in layers} == {"mat_q", "mat_kv", "proj", "fc1", "fc2"}
    assert not any(name.startswith("text_proj") for name in layers)  # the text pooler's .ca. is never adapted
    only_sa = target_layers(model, ARBoothConfig(layers=["lora"], lora_parts=["sa"], block_range=(1, 2)))
    per_chunk = model.config.blocks_per_chunk
    assert only_sa and all(block_of(f"{name}.weight", per_chunk) == (1, "sa") for name in only_sa)


def test_a_fresh_adapter_is_the_base_model_and_the_parametrized_forward_equals_the_merged_one():
    model = build_infinity("infinity-tiny", device="cpu")
    name = "block_chunks.0.module.0.ffn.fc1"
    before = model.get_submodule(name).weight.detach().clone()
    config = ARBoothConfig(layers=["lora"], lora_rank=2, lora_alpha=4.0)
    adapters = add_adapters(model, config, fit_seed=1)
    assert torch.equal(model.get_submodule(name).weight, before)  # B starts at zero
    with torch.no_grad():
        for adapter in adapters.values():
            adapter.lora_B.normal_(0, 0.1)
    x = torch.randn(3, before.shape[1])
    adapted = model.get_submodule(name)(x)
    expected = x @ (before + 2.0 * adapters[name].lora_B @ adapters[name].lora_A).T + model.get_submodule(name).bias
    torch.testing.assert_close(adapted, expected)
    merge_adapters(model, adapters)
    layer = model.get_submodule(name)
    assert not hasattr(layer, "parametrizations") and type(layer) is torch.nn.Linear
    torch.testing.assert_close(layer(x), adapted)


def test_the_teacher_twin_never_sees_the_adapters():
    model = build_infinity("infinity-tiny", device="cpu")
    twin = frozen_twin(model, [])
    name = "block_chunks.0.module.0.ca.mat_q"
    adapters = add_adapters(model, ARBoothConfig(layers=["lora"]), fit_seed=1)
    with torch.no_grad():
        adapters[name].lora_B.fill_(0.5)
    assert not torch.equal(model.get_submodule(name).weight, twin.get_submodule(name).weight)
    assert twin.get_submodule(name).weight is model.get_submodule(name).parametrizations.weight.original


def test_artifact_holds_only_the_low_rank_factors_and_the_identifier(fitted):
    _, _, model, folder, _ = fitted
    with safe_open(str(folder / ARTIFACT_FILE), framework="pt") as handle:
        names = set(handle.keys())
        b = handle.get_tensor("block_chunks.0.module.0.ca.mat_q.lora_B.weight")
    assert "special_token" in names
    factors = names - {"special_token"}
    assert factors and all(n.endswith((".lora_A.weight", ".lora_B.weight")) for n in factors)
    assert b.shape[1] == 4 and b.abs().sum() > 0  # trained away from its zero start
    assert model.trainable_parameters == sum(model.trained[name].numel() for name in names)
    assert model.trainable_parameters < 0.5 * 99_456  # the released layers' count at this size (test_arbooth_artifact)


def test_lora_fit_changes_images_and_the_artifact_reloads_to_the_same_images(fitted, tmp_path):
    method, ctx, model, folder, _ = fitted
    fresh = method.load_base(ctx)
    base_images = pixels(fresh.pipeline.generate(PROMPTS, SEEDS, placeholder="<placeholder>",
                                                 placeholder_vectors=model.identifier))
    tuned_images = pixels(model.generate(PROMPTS, SEEDS))
    assert any(np.any(a != b) for a, b in zip(base_images, tuned_images))
    reloaded = method.load_artifact(method.load_base(ctx), folder, ctx)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(reloaded.generate(PROMPTS, SEEDS)), tuned_images))


def test_restoring_the_base_after_a_lora_fit_gives_back_the_loaded_model(tmp_path):
    method, ctx = make(iterations=2), context(tmp_path)
    base = method.load_base(ctx)
    loaded = {name: tensor.clone() for name, tensor in base.pipeline.model.state_dict().items()}
    snapshot = method.snapshot_base(base)
    method.fit(base, synthetic_subject(tmp_path / "subject", count=3, size=72), ctx)
    model = base.pipeline.model
    assert not any("parametrizations" in name for name, _ in model.named_parameters())  # merged, removed
    assert not torch.equal(model.state_dict()["block_chunks.0.module.0.ca.mat_q.weight"],
                           loaded["block_chunks.0.module.0.ca.mat_q.weight"])
    method.restore_base(base, snapshot)
    state = model.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[name], loaded[name]) for name in loaded)


def test_lora_arms_keep_every_conformance_rule():
    results = check_method(ARBooth, {"layers": ["lora", "identifier"]})
    assert all(r.passed for r in results), [r.line() for r in results if not r.passed]


def test_lora_and_full_tuning_of_the_same_part_is_refused():
    with pytest.raises(UserError, match="both fully tuned"):
        make(layers=["ca", "lora", "identifier"])
    with pytest.raises(UserError, match="lora_parts is empty"):
        make(lora_parts=[])


def test_new_fields_leave_the_ids_of_existing_configs_alone():
    released = identity_dict(ARBoothConfig())
    assert not {"lora_parts", "lora_rank", "lora_alpha", "lora_learning_rate", "optimizer_states"} & set(released)
    assert "offload_vae" not in released  # an execution option
    assert identity_dict(ARBoothConfig(lora_rank=16))["lora_rank"] == 16
    assert identity_dict(ARBoothConfig(optimizer_states="bf16"))["optimizer_states"] == "bf16"


def test_rounded_state_adamw_is_torch_adamw_with_fp32_states_and_keeps_bf16_states():
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(4)]
    options = {"lr": 1e-2, "betas": (0.9, 0.97), "eps": 1e-8, "weight_decay": 0.005}
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    mine = RoundedStateAdamW([{"params": ours}], state_dtype=torch.float32, **options)
    reference = torch.optim.AdamW(theirs, foreach=False, **options)
    for step in grads:
        for param, other, grad in zip(ours, theirs, step):
            param.grad, other.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    for param, other in zip(ours, theirs):
        torch.testing.assert_close(param, other, rtol=1e-6, atol=1e-7)
    low = [torch.nn.Parameter(t.clone()) for t in start]
    rounded = RoundedStateAdamW([{"params": low}], **options)
    for step in grads:
        for param, grad in zip(low, step):
            param.grad = grad.clone()
        rounded.step()
    state = rounded.state[low[0]]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
    torch.testing.assert_close(low[0], ours[0], rtol=2e-2, atol=2e-3)  # close, not equal
    assert not torch.equal(low[0], ours[0])


def test_bf16_optimizer_states_fit_and_differ_from_fp32_states(tmp_path):
    subject = synthetic_subject(tmp_path / "subject", count=3, size=72)
    results = {}
    for states in ("fp32", "bf16"):
        method = make(layers=["ca", "ffn", "identifier"], optimizer_states=states)
        model = method.fit(method.load_base(context(tmp_path)), subject, context(tmp_path))
        results[states] = model.trained["block_chunks.0.module.0.ffn.fc1.weight"]
    assert torch.isfinite(results["bf16"]).all()
    assert not torch.equal(results["fp32"], results["bf16"])
    torch.testing.assert_close(results["bf16"], results["fp32"], rtol=0, atol=1e-3)
