"""The ARBooth artifact: only trained tensors, tied to its base; reloading generates exactly
what the fitted model generates; per-image seeding; clear errors for wrong artifacts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from baselines.synthetic import synthetic_subject
from varbench.schema import from_dict
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.methods.arbooth import ARBooth
from varbench.methods.arbooth.artifact import ARTIFACT_FILE

TINY = {"model": "infinity-tiny", "resolution": 64, "iterations": 3, "learning_rate": 3e-3}
PROMPTS = ["a <placeholder> dog in the snow", "a photo of dog", "a <placeholder> dog on the beach"]
SEEDS = [11, 12, 13]


def make(**overrides) -> ARBooth:
    return ARBooth(from_dict(ARBooth.Config, {**TINY, **overrides}, "test"))


def context(tmp_path) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=9, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in images]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arbooth")
    method = make()
    ctx = context(tmp)
    untouched = method.load_base(ctx).pipeline
    base_images = pixels(untouched.generate(PROMPTS, SEEDS, placeholder="<placeholder>",
                                            placeholder_vectors=torch.zeros(4, 32)))
    model = method.fit(method.load_base(ctx), synthetic_subject(tmp / "subject", count=3, size=72), ctx)
    folder = tmp / "artifact"
    folder.mkdir()
    model.save(folder)
    return method, model, folder, base_images, tmp


def test_artifact_holds_only_the_trained_tensors_under_checkpoint_names(fitted):
    _, model, folder, _, _ = fitted
    with safe_open(str(folder / ARTIFACT_FILE), framework="pt") as handle:
        names = set(handle.keys())
        metadata = handle.metadata()
        fc1 = handle.get_tensor("block_chunks.1.module.0.ffn.fc1.weight")
    assert names == set(model.trained)
    assert "special_token" in names and "block_chunks.1.module.0.ca.mat_kv.weight" in names
    assert not any(".sa." in name or name.startswith(("text_proj", "head", "lvl_embed")) for name in names)
    assert sum(model.trained[name].numel() for name in names) == model.trainable_parameters == 99_456
    assert fc1.dtype == torch.float32 and torch.equal(fc1, model.trained["block_chunks.1.module.0.ffn.fc1.weight"])
    assert metadata["method"] == "arbooth" and '"model":"infinity-tiny"' in metadata["base"]
    assert len(metadata["config_hash"]) == 12


def test_reloaded_artifact_generates_exactly_like_the_fitted_model(fitted):
    method, model, folder, base_images, tmp = fitted
    fresh = method.load_base(context(tmp))
    reloaded = method.load_artifact(fresh, folder, context(tmp))
    first, second = pixels(model.generate(PROMPTS, SEEDS)), pixels(reloaded.generate(PROMPTS, SEEDS))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert torch.equal(reloaded.identifier, model.identifier) and model.identifier.abs().sum() > 0
    assert reloaded.trainable_parameters == model.trainable_parameters
    # ... and the fit did change the identifier prompts' images (the class prompt may move less).
    assert max(int(np.abs(a - b).max()) for a, b in zip(first, base_images)) > 0


def test_image_i_does_not_depend_on_its_batch(fitted):
    _, model, _, _, _ = fitted
    together = pixels(model.generate(PROMPTS, SEEDS))
    alone = [pixels(model.generate([prompt], [seed]))[0] for prompt, seed in zip(PROMPTS, SEEDS)]
    assert all(int(np.abs(a - b).max()) <= 1 for a, b in zip(together, alone))  # fp32 CPU: tokens equal
    assert model.generate([], []) == []


def test_artifact_for_another_base_is_refused(fitted):
    _, _, folder, _, tmp = fitted
    other = make(init_seed=1)  # a different random-init base
    with pytest.raises(UserError, match="trained on another base model.*seed 0.*seed 1"):
        other.load_artifact(other.load_base(context(tmp)), folder, context(tmp))


def test_artifact_for_other_layers_is_refused(fitted):
    _, _, folder, _, tmp = fitted
    other = make(layers=["sa", "identifier"])
    with pytest.raises(UserError, match="artifact tensors do not match what this config trains"):
        other.load_artifact(other.load_base(context(tmp)), folder, context(tmp))


def test_missing_or_corrupt_artifact_is_a_user_error(fitted, tmp_path):
    method, _, _, _, tmp = fitted
    base = method.load_base(context(tmp))
    with pytest.raises(UserError, match="has no arbooth.safetensors"):
        method.load_artifact(base, tmp_path, context(tmp))
    (tmp_path / ARTIFACT_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(UserError, match="cannot read the ARBooth artifact"):
        method.load_artifact(base, tmp_path, context(tmp))
