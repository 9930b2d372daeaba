"""Strict, safe checkpoint loading and the errors users see."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from varbench.errors import UserError
from varbench.models.infinity.checkpoint import INFINITY_2B_FILE, read_state_dict
from varbench.models.infinity.factory import build_infinity, build_vae, load_transformer, load_vae
from varbench.models.infinity.pipeline import load_infinity


class Payload:
    """An arbitrary class: unpickling it would run code from this module."""


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_transformer_round_trip_pth_safetensors_and_shards(tmp_path):
    model = build_infinity("infinity-tiny", seed=5)
    state = model.state_dict()
    torch.save(state, tmp_path / "model.pth")
    assert same_tensors(load_transformer("infinity-tiny", weights=tmp_path / "model.pth"), model)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    assert same_tensors(load_transformer("infinity-tiny", weights=tmp_path / "model.safetensors"), model)
    shards = tmp_path / "shards"
    shards.mkdir()
    keys = sorted(state)
    save_file({k: state[k].contiguous() for k in keys[:20]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({k: state[k].contiguous() for k in keys[20:]}, str(shards / "model-00002-of-00002.safetensors"))
    loaded = load_transformer("infinity-tiny", weights=shards, dtype=torch.bfloat16)
    assert loaded.blocks[0].ffn.fc1.weight.dtype == torch.bfloat16 and loaded.head.weight.dtype == torch.float32
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_tampered_keys_are_listed(tmp_path):
    state = build_infinity("infinity-tiny").state_dict()
    state["block_chunks.0.module.0.ca.mat_q.weight_renamed"] = state.pop("block_chunks.0.module.0.ca.mat_q.weight")
    state["head.weight"] = state["head.weight"][:32]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError) as err:
        load_transformer("infinity-tiny", weights=tmp_path / "bad.pth")
    line = str(err.value)
    assert "1 missing: block_chunks.0.module.0.ca.mat_q.weight" in line
    assert "1 unexpected: block_chunks.0.module.0.ca.mat_q.weight_renamed" in line
    assert "1 wrong shape: head.weight (32, 64) vs model (64, 64)" in line
    assert "\n" not in err.value.what


def test_pickled_objects_are_refused(tmp_path):
    state = build_infinity("infinity-tiny").state_dict()
    payload = {"state": state, "extra": Payload()}
    torch.save(payload, tmp_path / "pickled.pth")
    with pytest.raises(UserError, match="refusing to load pickled.pth"):
        read_state_dict(tmp_path / "pickled.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "corrupt.pth")
    torch.save({"a": 1}, tmp_path / "numbers.pth")
    with pytest.raises(UserError, match="not a plain state dict"):
        read_state_dict(tmp_path / "numbers.pth")


def test_missing_or_incomplete_release_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VARBENCH_INFINITY_DIR", str(tmp_path))
    with pytest.raises(UserError) as err:
        load_transformer("infinity-2b")
    line = str(err.value)
    assert "infinity_2b_reg.pth not found" in line
    assert "hf download FoundationVision/Infinity infinity_2b_reg.pth" in line
    assert "VARBENCH_INFINITY_DIR" in line
    (tmp_path / INFINITY_2B_FILE.filename).write_bytes(b"\0" * 1000)
    with pytest.raises(UserError, match="1,000 bytes, expected 8,819,295,332"):
        load_transformer("infinity-2b")
    with pytest.raises(UserError, match="no download entry for the transformer weights of infinity-tiny"):
        load_transformer("infinity-tiny")


def test_vae_loads_under_the_vae_key_with_or_without_wrapper_names(tmp_path):
    vae = build_vae("infinity-tiny", seed=9)
    state = vae.state_dict()
    torch.save({"vae": state, "step": torch.tensor(7)}, tmp_path / "vae.pth")
    assert same_tensors(load_vae("infinity-tiny", weights=tmp_path / "vae.pth"), vae)
    # Files saved without the .conv/.norm wrapper level and without the constant buffer load too.
    plain = {k.replace(".conv.", ".").replace(".norm.", "."): v for k, v in state.items() if "lfq" not in k}
    assert "encoder.conv_in.weight" in plain and "encoder.down.0.block.0.norm1.weight" in plain
    torch.save({"vae": plain}, tmp_path / "plain.pth")
    assert same_tensors(load_vae("infinity-tiny", weights=tmp_path / "plain.pth"), vae)
    torch.save(state, tmp_path / "nokey.pth")
    with pytest.raises(UserError, match="no entry 'vae'"):
        load_vae("infinity-tiny", weights=tmp_path / "nokey.pth")
    broken = dict(state)
    broken["quantizer.lfq.mask"] = torch.zeros_like(broken["quantizer.lfq.mask"])
    torch.save({"vae": broken}, tmp_path / "badmask.pth")
    with pytest.raises(UserError, match="unexpected values"):
        load_vae("infinity-tiny", weights=tmp_path / "badmask.pth")


def test_pipeline_with_saved_weights_matches_random_init(tmp_path):
    pipe = load_infinity("infinity-tiny", seed=3)
    assert pipe.random_init
    torch.save(pipe.model.state_dict(), tmp_path / "m.pth")
    torch.save({"vae": pipe.vae.state_dict()}, tmp_path / "v.pth")
    again = load_infinity("infinity-tiny", weights=tmp_path / "m.pth", vae_weights=tmp_path / "v.pth")
    images_a = pipe.generate(["a dog"], [1])
    images_b = again.generate(["a dog"], [1])
    assert images_a[0].size == (64, 64) and np.array_equal(np.asarray(images_a[0]), np.asarray(images_b[0]))
