"""`varbench toyworld train`: seeded, written with a manifest and a log the loader accepts."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from varbench.errors import UserError
from varbench.toyworld.backbones import ENV_VAR, weight_path
from varbench.toyworld.train import train_backbones


def test_a_short_training_writes_loadable_weights_and_repeats_with_its_seed(tmp_path, monkeypatch):
    records = train_backbones(tmp_path / "a", ["dino"], steps=2, seed=5)
    train_backbones(tmp_path / "b", ["dino"], steps=2, seed=5)
    assert len(records["dino"]["losses"]["dino"]) == 2
    log = json.loads((tmp_path / "a" / "training.json").read_text())
    assert log["dino"]["seed"] == 5 and log["dino"]["schedule"]["dino"]["steps"] == 2
    first, second = load_file(tmp_path / "a" / "dino.safetensors"), load_file(tmp_path / "b" / "dino.safetensors")
    assert all((first[key] == second[key]).all() for key in first)  # the same seed, the same weights
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "a"))
    assert weight_path("dino").parent == tmp_path / "a"  # the manifest written beside them checks out
    with pytest.raises(UserError, match="unknown toyworld backbone"):
        train_backbones(tmp_path / "c", ["dinov3"], steps=1)


def test_the_toy_sd_folder_is_checked_file_by_file_against_the_manifest(tmp_path, monkeypatch):
    """base_model 'toyworld' loads only a folder whose every file the manifest lists with
    its digest: a missing, changed or extra file is one clear error naming it."""
    from varbench.models.diffusion import load_components, save_folder
    from varbench.toyworld.backbones import folder_path, write_manifest
    from varbench.toyworld.diffusion import random_sd

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(UserError, match="toyworld sd weights not found"):
        load_components("toyworld", None)
    save_folder(random_sd(seed=2), tmp_path / "sd")
    write_manifest(tmp_path)
    assert folder_path("sd") == tmp_path / "sd"
    components = load_components("toyworld", None)
    assert components.source.startswith("toyworld-sd@") and not components.random_init
    unet = tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:-1] + b"\0")
    with pytest.raises(UserError, match="does not match") as raised:
        folder_path("sd")
    assert "unet" in raised.value.line()
    write_manifest(tmp_path)
    (tmp_path / "sd" / "stray.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="files do not match"):
        folder_path("sd")
