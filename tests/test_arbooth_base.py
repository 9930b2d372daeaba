"""Loading the ARBooth base: released weights through the real loaders (tested with a
tiny checkpoint file), the base identity, and clear errors when weights are missing."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from varbench.schema import from_dict
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.methods.arbooth import ARBooth
from varbench.models.infinity.factory import build_infinity, build_vae


def context(tmp_path) -> CellContext:
    return CellContext(device=torch.device("cpu"), fit_seed=0, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")


def make(**overrides) -> ARBooth:
    return ARBooth(from_dict(ARBooth.Config, overrides, "test"))


def test_tiny_base_is_random_init_with_the_config_quirks(tmp_path):
    base = make(model="infinity-tiny", resolution=64, init_seed=2, drop_path=0.0).load_base(context(tmp_path))
    pipeline = base.pipeline
    assert pipeline.random_init and base.identity["transformer"] == {"random_init_seed": 2}
    assert pipeline.model.config.lvl_embed_every_chunk and pipeline.model.config.drop_path_rate == 0.0
    assert base.schedule.scales[-1] == (8, 8) and base.schedule.num_tokens == 121
    assert not any(p.requires_grad for p in pipeline.model.parameters())
    assert (pipeline.sampling.cfg, pipeline.sampling.tau, pipeline.sampling.top_p) == (4.0, 0.5, 0.97)
    reference = build_infinity("infinity-tiny", seed=2)
    assert torch.equal(pipeline.model.get_parameter("head.weight"), reference.get_parameter("head.weight"))


def test_weights_from_files_go_through_the_checkpoint_loaders(tmp_path):
    model = build_infinity("infinity-tiny", seed=7)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "tiny.safetensors"))
    vae = build_vae("infinity-tiny", seed=7)
    state = {k: v.clone() for k, v in vae.state_dict().items() if not k.startswith("quantize.")}  # an alias
    save_file(state, str(tmp_path / "vae.safetensors"))
    base = make(model="infinity-tiny", resolution=64, weights=str(tmp_path / "tiny.safetensors"),
                vae_weights=str(tmp_path / "vae.safetensors")).load_base(context(tmp_path))
    assert base.identity["transformer"] == {"file": "tiny.safetensors",
                                            "bytes": (tmp_path / "tiny.safetensors").stat().st_size}
    assert base.identity["tokenizer"]["file"] == "vae.safetensors"
    for name, tensor in model.state_dict().items():
        assert torch.equal(base.pipeline.model.state_dict()[name], tensor), name


def test_a_checkpoint_of_another_size_is_refused(tmp_path):
    other = build_infinity("infinity-small", seed=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "small.safetensors"))
    with pytest.raises(UserError, match="checkpoint does not match the model"):
        make(model="infinity-tiny", resolution=64, weights=str(tmp_path / "small.safetensors")).load_base(
            context(tmp_path))


def test_missing_released_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    monkeypatch.delenv("VARBENCH_INFINITY_DIR", raising=False)
    with pytest.raises(UserError, match="infinity_2b_reg.pth.*hf download FoundationVision/Infinity"):
        make().load_base(context(tmp_path))
    wrong = tmp_path / "infinity_2b_reg.pth"
    wrong.write_bytes(b"not the checkpoint")
    with pytest.raises(UserError, match="has 18 bytes, expected 8,819,295,332"):
        make(weights=str(wrong)).load_base(context(tmp_path))


def test_a_resolution_without_a_schedule_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no scale schedule ends at 72x72"):
        make(model="infinity-tiny", resolution=72).load_base(context(tmp_path))
