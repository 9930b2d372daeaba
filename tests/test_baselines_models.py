"""Stable Diffusion glue (varbench.models.diffusion): tiny and full-size random-init
components, the offline CLIP tokenizer, loading from a folder, and the errors a user sees."""
from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

import varbench.models.diffusion as diffusion
from varbench.errors import UserError
from varbench.models.diffusion import (
    SD14_ID,
    SD15_ID,
    SD15_REVISION,
    load_components,
    save_folder,
    sd15_components,
    tiny_components,
)


def state_equal(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_components_are_a_function_of_the_seed():
    first, again, other = tiny_components(), tiny_components(), tiny_components(seed=1)
    for name in ("unet", "vae", "text_encoder"):
        assert state_equal(getattr(first, name), getattr(again, name))
        assert not state_equal(getattr(first, name), getattr(other, name))
    assert first.random_init and first.source == "tiny-v1-seed0"
    down = first.unet.config.down_block_types
    assert list(down) == ["CrossAttnDownBlock2D"] * 2
    assert 2 ** (len(first.vae.config.block_out_channels) - 1) == 8  # SD's latent stride


def test_full_size_configs_have_the_published_sd15_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        components = sd15_components()
    modules = (components.unet, components.vae, components.text_encoder)
    counts = [sum(p.numel() for p in module.parameters()) for module in modules]
    assert counts == [859_520_964, 83_653_863, 123_060_480]


def test_tiny_tokenizer_is_a_byte_level_clip_bpe():
    tokenizer = tiny_components().tokenizer
    ids = tokenizer("a photo of sks dog").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "sks</w>",
                                                    "dog</w>", "<|endoftext|>"]
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("zebra!", add_special_tokens=False).input_ids)
    assert "".join(pieces).replace("</w>", "") == "zebra!" and len(pieces) > 1  # unseen word: sub-words
    assert tokenizer.model_max_length == 77
    before = len(tokenizer)
    assert tokenizer.add_tokens("<new1>") == 1
    assert tokenizer("a <new1> dog", add_special_tokens=False).input_ids[1] == before


def test_a_local_folder_loads_back_the_same_components(tmp_path):
    tiny = tiny_components()
    save_folder(tiny, tmp_path / "sd")
    loaded = load_components(str(tmp_path / "sd"), None)
    assert loaded.source == str((tmp_path / "sd").resolve()) and not loaded.random_init
    for name in ("unet", "vae", "text_encoder"):
        assert state_equal(getattr(loaded, name), getattr(tiny, name))
    assert loaded.tokenizer("a photo of sks dog").input_ids == tiny.tokenizer("a photo of sks dog").input_ids
    scheduler = loaded.noise_scheduler().config
    assert (scheduler.beta_start, scheduler.beta_end, scheduler.beta_schedule) == (0.00085, 0.012, "scaled_linear")


def test_folder_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="model folder not found"):
        load_components(str(tmp_path / "missing"), None)
    save_folder(tiny_components(), tmp_path / "sd")
    for weights in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        original = (tmp_path / "sd" / weights).read_bytes()
        (tmp_path / "sd" / weights).write_bytes(b"broken")
        with pytest.raises(UserError, match="cannot load Stable Diffusion components"):
            load_components(str(tmp_path / "sd"), None)
        (tmp_path / "sd" / weights).write_bytes(original)
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(UserError, match="lacks tokenizer, text_encoder, vae, scheduler"):
        load_components(str(tmp_path / "partial"), None)


def test_hub_ids_and_revisions_are_checked(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="neither an existing folder nor a hub id"):
        load_components("not a model", None)
    with pytest.raises(UserError, match="pinned commit of stable-diffusion-v1-5"):
        load_components(SD14_ID, SD15_REVISION)
    # An empty hub cache with downloads off (tests set HF_HUB_OFFLINE): one clear line.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the hub cache and downloads are off"):
        load_components(SD15_ID, SD15_REVISION)


def test_sd15_weight_files_are_checked_against_their_published_size(tmp_path, monkeypatch):
    monkeypatch.setattr(diffusion, "resolve_snapshot", lambda *args, **kwargs: tmp_path)
    with pytest.raises(UserError, match="unet/diffusion_pytorch_model.safetensors is missing from the cached"):
        load_components(SD15_ID, SD15_REVISION)
    for spec in diffusion.SD15_WEIGHTS:
        (tmp_path / spec.filename).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / spec.filename).write_bytes(b"truncated download")
    with pytest.raises(UserError, match="expected 3,438,167,540"):
        load_components(SD15_ID, SD15_REVISION)


def test_samplers_share_the_sd_noise_schedule():
    components = tiny_components()
    ddim = components.sampling_scheduler("ddim")
    assert isinstance(ddim, DDIMScheduler) and ddim.config.steps_offset == 1 and not ddim.config.set_alpha_to_one
    assert isinstance(components.sampling_scheduler("dpm"), DPMSolverMultistepScheduler)
    assert torch.allclose(ddim.alphas_cumprod, components.noise_scheduler().alphas_cumprod)
    with pytest.raises(UserError, match="unknown sampler"):
        components.sampling_scheduler("euler")
