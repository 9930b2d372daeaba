"""The toyworld's Stable Diffusion parts: SD 1.x classes at toy size that the diffusion
baselines load from a folder exactly as they load a real SD 1.5 folder."""
from __future__ import annotations

import torch

from varbench.models.diffusion import load_folder, save_folder
from varbench.toyworld.dataset import LIVE_PROMPTS, OBJECT_PROMPTS
from varbench.toyworld.diffusion import random_sd, toyworld_tokenizer, world_words


def test_every_world_word_is_one_token_and_every_prompt_tokenizes_short():
    tokenizer = toyworld_tokenizer()
    assert all(len(tokenizer.tokenize(word)) == 1 for word in world_words())
    for template in OBJECT_PROMPTS + LIVE_PROMPTS:
        prompt = template.format("sks dog")
        assert len(tokenizer.tokenize(prompt)) == len(prompt.split())


def test_toy_sd_round_trips_through_the_real_folder_loader(tmp_path):
    components = random_sd(seed=3)
    save_folder(components, tmp_path / "sd")
    loaded = load_folder(tmp_path / "sd", "toyworld")
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = loaded.vae.encode(pixels).latent_dist.mean
        assert latents.shape == (2, 4, 16, 16)  # stride 4: the subject's details keep 16x16 latents
        torch.testing.assert_close(latents, components.vae.encode(pixels).latent_dist.mean)


def test_every_caption_and_prompt_fits_the_padded_length_untruncated():
    """The pipelines pad and truncate prompts to the tokenizer's length: no caption the SD
    was trained on and no method prompt may lose its end (it did at 20 tokens)."""
    from varbench.toyworld.world import caption, pretraining_scenes

    tokenizer = toyworld_tokenizer()
    texts = [caption(scene) for scene in pretraining_scenes(3000, seed=11)]
    texts += [template.format("sks backpack") for template in OBJECT_PROMPTS + LIVE_PROMPTS]
    longest = max(len(tokenizer(text).input_ids) for text in texts)
    assert longest <= tokenizer.model_max_length, longest


def test_half_precision_files_load_as_fp32(tmp_path):
    """The toyworld stores its SD in fp16; the methods expect fp32 parts from the loader
    (transformers 5 would keep the file's dtype), with the same values."""
    components = random_sd(seed=4)
    for module in (components.text_encoder, components.vae, components.unet):
        module.half()
    save_folder(components, tmp_path / "sd")
    loaded = load_folder(tmp_path / "sd", "toyworld")
    for name in ("text_encoder", "vae", "unet"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(components, name).state_dict()
        assert all(t.dtype == torch.float32 for t in ours.values() if t.is_floating_point()), name
        assert all(torch.equal(ours[key], theirs[key].float()) for key in theirs), name
