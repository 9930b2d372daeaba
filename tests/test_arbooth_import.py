"""`varbench import arbooth`: a fine-tuned checkpoint in the ARBooth release's layout (here
of infinity-tiny) becomes a varbench artifact that reloads on a fresh base and generates
exactly what the released model generates; wrong files are refused in one line each."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from varbench.cli import app
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.methods.arbooth import ARBooth
from varbench.methods.arbooth.artifact import ARTIFACT_FILE
from varbench.methods.arbooth.base import load_base
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.model import tuned_tensor_names
from varbench.methods.arbooth.release import import_release, load_imported
from varbench.schema import from_dict

PROMPTS = ["a <placeholder> dog in the snow", "a photo of dog", "a <placeholder> dog on the beach"]
SEEDS = [21, 22, 23]
TINY = ARBoothConfig(model="infinity-tiny", resolution=64)
# The release's flags (infinity/utils/arg_util.py) as its training saves them under "args".
ARGS = OrderedDict(enable_sa_layer=0, enable_ca_layer=1, enable_ffn_layer=1, enable_all_layer=0, enable_lora=0,
                   text_prefix_length=4, instance_prompt="a photo of <placeholder> dog", class_prompt="dog",
                   train_iter=500, model_type="infinity_2b", bf16=1, scale_schedule=(1, 2, 4), ckpt_trials=[])


def context(tmp_path) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=0, workdir=tmp_path / "w", cache_dir=tmp_path / "c")


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in images]


def save_release(path, model_state: dict, args=ARGS, **extra) -> None:
    """What the release's TXTSaver.sav writes (infinity/utils/save_and_load.py)."""
    torch.save({"args": args, "gpt_training": True, "arch": "infinity_2bc8", "epoch": 250, "iter": 0,
                "model": model_state, "acc_str": "[no acc str]", **extra}, path)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A 'released' subject model: the tiny base with its cross-attention and FFN moved and a
    learned identifier, saved in the release's layout, and the images it generates."""
    tmp = tmp_path_factory.mktemp("release")
    base = load_base(TINY, torch.device("cpu"))
    model, generator = base.pipeline.model, torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in tuned_tensor_names(model, TINY):
            tensor = model.get_parameter(name)
            tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
    special = torch.randn(4, 32, generator=generator) * 0.5
    images = pixels(base.pipeline.generate(PROMPTS, SEEDS, batch_size=3, placeholder="<placeholder>",
                                           placeholder_vectors=special))
    state = {**{k: v.clone() for k, v in model.state_dict().items()}, "special_token": special}
    save_release(tmp / "txt_emb-giter000K-ep250-iter0-last.pth", state)
    return tmp / "txt_emb-giter000K-ep250-iter0-last.pth", state, images, tmp


def test_import_keeps_the_tuned_layers_and_generates_as_the_released_model(released, tmp_path):
    checkpoint, state, images, _ = released
    folder = import_release(checkpoint, "dog", "rex", tmp_path / "imports", model="infinity-tiny")
    assert folder == tmp_path / "imports" / "rex"
    with safe_open(str(folder / "artifact" / ARTIFACT_FILE), framework="pt") as handle:
        names = set(handle.keys())
        for name in names:
            assert torch.equal(handle.get_tensor(name), state[name]), name
    # the blocks' cross-attention and FFN parameters (not the text pooler's .ca., not buffers)
    tuned = {k for k in state if (".ca." in k or ".ffn." in k) and k.startswith("block_chunks")
             and not k.endswith("zero_k_bias")}
    assert names == tuned | {"special_token"} and len(tuned) == 2 * 10  # 2 blocks x (ca 6 + ffn 4)
    record = json.loads((folder / "import.json").read_text())
    assert record["config"] == {"layers": ["ca", "ffn", "identifier"], "identifier_vectors": 4,
                                "model": "infinity-tiny", "resolution": 64}
    assert record["subject_phrase"] == "<placeholder> dog" and record["source"]["class_prompt"] == "dog"
    # load_artifact on a fresh base, with the config the import recorded
    method = ARBooth(from_dict(ARBoothConfig, record["config"], "import.json"))
    fresh = method.load_base(context(tmp_path))
    reloaded = method.load_artifact(fresh, folder / "artifact", context(tmp_path))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(reloaded.generate(PROMPTS, SEEDS)), images))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(load_imported(folder).generate(PROMPTS, SEEDS)), images))


def test_a_bf16_release_with_all_layers_imports_its_tensors_as_stored(released, tmp_path):
    checkpoint, state, _, tmp = released
    stored = {k: v.to(torch.bfloat16) if k.startswith("block_chunks") else v for k, v in state.items()}
    save_release(tmp / "bf16.pth", stored, OrderedDict(ARGS, enable_all_layer=1))
    folder = import_release(tmp / "bf16.pth", "dog", "rex-bf16", tmp_path, model="infinity-tiny")
    with safe_open(str(folder / "artifact" / ARTIFACT_FILE), framework="pt") as handle:
        sa = handle.get_tensor("block_chunks.0.module.0.sa.mat_qkv.weight")
        assert len(handle.keys()) == 2 * 16 + 1  # 2 blocks x (sa 6 + ca 6 + ffn 4) + special_token
    assert sa.dtype == torch.bfloat16 and torch.equal(sa, stored["block_chunks.0.module.0.sa.mat_qkv.weight"])
    assert json.loads((folder / "import.json").read_text())["config"]["layers"] == ["all", "identifier"]


def test_the_cli_writes_the_folder_and_says_how_to_generate_and_score(released, tmp_path):
    checkpoint = released[0]
    runner = CliRunner()
    arguments = ["import", "arbooth", str(checkpoint), "--class-noun", "dog", "--name", "rex",
                 "--out", str(tmp_path), "--model", "infinity-tiny"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rex" / "artifact" / ARTIFACT_FILE).is_file() and (tmp_path / "rex" / "import.json").is_file()
    assert "load_imported(" in result.output and "varbench score IMAGES" in result.output
    assert "a <placeholder> dog in the snow" in result.output
    again = runner.invoke(app, arguments)
    assert isinstance(again.exception, UserError) and "exists" in again.exception.line()


def refused(checkpoint, tmp_path, **fields) -> str:
    with pytest.raises(UserError) as err:
        import_release(checkpoint, "dog", "x", tmp_path / "out", **{"model": "infinity-tiny", **fields})
    line = err.value.line()
    assert "\n" not in line and not (tmp_path / "out" / "x").exists()
    return line


def test_files_that_are_not_a_release_subject_model_are_refused(released, tmp_path):
    checkpoint, state, _, tmp = released
    plain = {k: v for k, v in state.items() if k != "special_token"}
    torch.save(plain, tmp / "plain.pth")  # an Infinity state dict: not the release's layout
    assert "not a checkpoint of the ARBooth release: no 'model' state dict" in refused(tmp / "plain.pth", tmp_path)
    save_release(tmp / "nospecial.pth", plain)
    assert "no 'special_token'" in refused(tmp / "nospecial.pth", tmp_path)
    line = refused(checkpoint, tmp_path, model="infinity-small")  # fine-tuned from another size
    assert "checkpoint does not match the model" in line and "wrong shape" in line and "--model" in line
    line = refused(checkpoint, tmp_path, init_seed=3)  # fine-tuned from another base
    assert "tensors the release does not tune differ from the base" in line and "(seed 3)" in line


def test_legacy_buffers_in_a_release_checkpoint_load_as_the_official_loader_does(released, tmp_path):
    checkpoint, state, images, tmp = released
    save_release(tmp / "legacy.pth", {**state, "lvl_1L": torch.zeros(5), "attn_bias_for_masking": torch.zeros(2, 2)})
    folder = import_release(tmp / "legacy.pth", "dog", "rex-legacy", tmp_path, model="infinity-tiny")
    assert all(np.array_equal(a, b) for a, b in zip(pixels(load_imported(folder).generate(PROMPTS, SEEDS)), images))
