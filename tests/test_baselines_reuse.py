"""The diffusion baselines' base restored for a worker's next cell (baselines/reuse.py):
what their fits, their artifacts and, on a GPU, the speed layer leave on the components
is undone in the same module objects. The worker-level check that images stay
bit-identical is tests/test_core_reuse.py; this one adds the changes only a GPU makes."""
from __future__ import annotations

import copy

import torch
from torch import nn

from baselines.common import DiffusionConfig
from baselines.fast import calls, settings
from baselines.fast.sampling import fuse_projections
from baselines.reuse import NETWORKS, restore_components, snapshot_components
from baselines.sampling import generate_images, sampling_pipeline
from baselines.tokens import add_token
from baselines.train_custom_diffusion import make_processors
from baselines.training import cast
from varbench.models.diffusion import tiny_components
from varbench.models.fast.groupnorm import ChannelStatsGroupNorm

CONFIG = DiffusionConfig(base_model="tiny", revision=None, resolution=64, sample_steps=3)


def change_everything(base) -> None:
    """What the baselines' cells leave on their base, all at once (the GPU's part on the CPU)."""
    add_token(base, "<new1>")  # Custom Diffusion, Textual Inversion: a word and a table row
    fuse_projections(base.unet)  # a bf16 sampling pipeline's fused q/k/v (Textual Inversion on CUDA)
    base.unet.set_attn_processor(make_processors(base.unet, kv_weights=None))  # Custom Diffusion's K/V
    cast([base.text_encoder, base.vae, base.unet], torch.bfloat16)  # frozen networks on CUDA
    settings.set_layout([base.unet], True)  # NHWC weights
    for module in base.vae.modules():  # a compiled sampling pipeline's GroupNorms
        if type(module) is nn.GroupNorm:
            module.__class__ = ChannelStatsGroupNorm
    calls.route_unet_calls(base.unet, lambda *args: None)  # a fit's routing, never undone
    base.unet.train().requires_grad_(True)  # DreamBooth's training...
    with torch.no_grad():
        for param in base.unet.parameters():
            param.add_(1.0)
            param.grad = torch.ones_like(param)
    base.unet = copy.deepcopy(base.unet)  # ... and its artifact's own UNet


def image_bytes(base) -> bytes:
    (image,) = generate_images(sampling_pipeline(base, base.unet, CONFIG), ["a photo of sks dog"], [5], CONFIG)
    return image.tobytes()


def test_restore_gives_back_the_loaded_components_in_the_same_objects():
    base, fresh = tiny_components(), tiny_components()
    state = snapshot_components(base)
    networks = {name: getattr(base, name) for name in NETWORKS}
    objects = {name: [id(p) for p in net.parameters()] for name, net in networks.items()}
    for _ in range(2):  # the snapshot itself stays clean
        change_everything(base)
        restore_components(base, state)
        for name, network in networks.items():
            loaded = getattr(fresh, name)
            assert getattr(base, name) is network
            assert [id(p) for p in network.parameters()] == objects[name]
            assert {n: type(m) for n, m in network.named_modules()} == {n: type(m) for n, m in loaded.named_modules()}
            restored, expected = network.state_dict(), loaded.state_dict()
            assert restored.keys() == expected.keys()
            for key, tensor in expected.items():
                got = restored[key]
                assert (got.dtype, got.stride()) == (tensor.dtype, tensor.stride()) and torch.equal(got, tensor), key
            assert not network.training and "forward" not in network.__dict__
            assert all(not p.requires_grad and p.grad is None for p in network.parameters())
        assert {k: type(p) for k, p in base.unet.attn_processors.items()} == \
            {k: type(p) for k, p in fresh.unet.attn_processors.items()}
        assert len(base.tokenizer) == len(fresh.tokenizer) and "<new1>" not in base.tokenizer.get_vocab()
        assert base.text_encoder.config.vocab_size == fresh.text_encoder.config.vocab_size
        assert image_bytes(base) == image_bytes(fresh)
