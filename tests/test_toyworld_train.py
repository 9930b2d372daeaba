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
