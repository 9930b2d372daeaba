"""An ARBooth ablation protocol end to end through the runner (tiny backbones, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from varbench.runner import RunOptions, run_protocol

PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "ablation_layers_tiny.yaml"


@pytest.mark.slow
def test_tiny_layer_ablation_runs_and_records_trainable_parameters(tmp_path, isolated_cache):
    arms = ["layers-sa", "layers-ca_ffn", "layers-identifier"]
    options = RunOptions(results=tmp_path, device="cpu", methods=arms, subjects=["spotted_dog"])
    assert run_protocol(str(PROTOCOL), options) == 0
    facts = {path.parts[-4].rsplit("-", 1)[0]: json.loads(path.read_text())
             for path in tmp_path.rglob("cells/spotted_dog/cell.json")}
    assert set(facts) == set(arms)
    # tiny: per block SA 16,578, CA 16,576, FFN 33,088 (2 blocks); identifier 4 x 32
    assert facts["layers-sa"]["trainable_parameters"] == 2 * 16_578 + 128
    assert facts["layers-ca_ffn"]["trainable_parameters"] == 2 * (16_576 + 33_088) + 128
    assert facts["layers-identifier"]["trainable_parameters"] == 128
    for path in tmp_path.rglob("cells/spotted_dog/losses.csv"):
        losses = pd.read_csv(path)
        assert list(losses["step"]) == [1, 2, 3, 4] and {"loss", "ce", "distill"} <= set(losses.columns)
    assert len(list(tmp_path.rglob("images/*.png"))) == 3 * 2 * 2  # 3 arms x 2 prompts x 2 images
    assert not list(tmp_path.rglob("arbooth.safetensors"))  # keep_artifacts: false
