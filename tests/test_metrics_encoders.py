"""Encoders: the embedding is the normed CLS token, tiny builds are deterministic, real
weights load from a local file, and a missing file is one clear UserError."""
from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from varbench.errors import UserError
from varbench.metrics import diversity
from varbench.models import encoders
from varbench.models.encoders import TINY_CLIP, build_clip, build_dino, dino_position_embedding


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for name in ("VARBENCH_DINO_WEIGHTS", "VARBENCH_DINO8_WEIGHTS", "VARBENCH_CLIP_WEIGHTS",
                 "VARBENCH_ALEXNET_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VARBENCH_CACHE", str(tmp_path / "varbench"))
    return tmp_path


def test_dino_embedding_is_the_normed_cls_token():
    encoder = build_dino(16, "tiny")
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    vit = encoder.vit
    tokens = vit.patch_embed(pixels)
    tokens = torch.cat([vit.cls_token.expand(2, -1, -1), tokens], dim=1) + vit.pos_embed
    for block in vit.blocks:
        tokens = block(tokens)
    expected = F.normalize(vit.norm(tokens)[:, 0], dim=-1)
    embedding = encoder(pixels)
    assert torch.allclose(embedding, expected, atol=1e-6)
    assert torch.allclose(embedding, F.normalize(vit(pixels), dim=-1), atol=1e-6)  # timm's forward agrees
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(2))


def test_tiny_encoders_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first, clip = build_dino(16, "tiny"), build_clip("tiny")
    assert torch.rand(1) == before  # building used its own generator
    second = build_dino(16, "tiny")
    pixels = torch.randn(1, 3, 224, 224)
    assert torch.equal(first(pixels), second(pixels))
    texts = ["a dog in the jungle", "a {} in the jungle"]
    assert torch.equal(clip.encode_text(texts), build_clip("tiny").encode_text(texts))


def test_real_size_random_encoders_repeat_whatever_the_global_generator_holds():
    # backbones: random scores must repeat across processes and build orders (they did not:
    # the real-size random weights drew from the global generator)
    torch.manual_seed(1)
    first = build_clip("real", pretrained=False).state_dict()
    torch.manual_seed(2)
    before = torch.rand(1)
    torch.manual_seed(2)
    second = build_clip("real", pretrained=False).state_dict()
    assert torch.rand(1) == before  # the global generator is left as it was
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(3)
    dino_a = build_dino(16, "real", pretrained=False).state_dict()
    dino_b = build_dino(16, "real", pretrained=False).state_dict()
    assert all(torch.equal(dino_a[key], dino_b[key]) for key in dino_a)


def test_clip_uses_the_real_bpe_tokenizer():
    clip = build_clip("tiny")
    tokens = clip.tokenizer(["a dog in the jungle"])[0]
    assert tokens[0] == 49406 and 49407 in tokens.tolist()  # start / end of text
    assert int((tokens > 0).sum()) == 7  # <sot> a dog in the jungle <eot>
    assert clip.encode_image(torch.randn(2, 3, 224, 224)).shape == (2, TINY_CLIP["embed_dim"])


def test_dino_at_256_pixels_keeps_weights_and_resizes_position_embedding_like_dino():
    base, large = build_dino(16, "tiny"), build_dino(16, "tiny", input_size=256)
    base_state, large_state = base.vit.state_dict(), large.vit.state_dict()
    assert all(torch.equal(base_state[k], large_state[k]) for k in base_state if k != "pos_embed")
    old = base_state["pos_embed"]
    patches = old[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    # facebookresearch/dino interpolate_pos_encoding, written out
    resized = F.interpolate(patches, scale_factor=(16.1 / 14, 16.1 / 14), mode="bicubic")
    expected = torch.cat([old[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 256, -1)], dim=1)
    assert torch.equal(large_state["pos_embed"], expected)
    assert large(torch.randn(1, 3, 256, 256)).shape == (1, 32)
    assert torch.equal(dino_position_embedding(old, 14), old)


def test_dino_s8_is_a_patch8_model():
    encoder = build_dino(8, "tiny")
    assert encoder.vit.patch_embed.proj.kernel_size == (8, 8)
    assert encoder.vit.pos_embed.shape[1] == 1 + 28 * 28


@pytest.mark.parametrize("builder,repo,env", [
    (lambda: build_dino(16, "real"), "timm/vit_small_patch16_224.dino model.safetensors", "VARBENCH_DINO_WEIGHTS"),
    (lambda: build_dino(8, "real"), "timm/vit_small_patch8_224.dino model.safetensors", "VARBENCH_DINO8_WEIGHTS"),
    (lambda: build_clip("real"), "timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors",
     "VARBENCH_CLIP_WEIGHTS"),
])
def test_missing_real_weights_name_the_download_command(empty_hub, builder, repo, env):
    with pytest.raises(UserError) as caught:
        builder()
    line = caught.value.line()
    assert f"hf download {repo}" in line and env in line and "\n" not in line


def test_env_var_pointing_nowhere_is_a_user_error(empty_hub, monkeypatch):
    monkeypatch.setenv("VARBENCH_DINO_WEIGHTS", str(empty_hub / "nowhere.safetensors"))
    with pytest.raises(UserError, match="not found"):
        build_dino(16, "real")


def test_real_dino_loads_a_local_safetensors_file(empty_hub, monkeypatch):
    """The real loading path (timm's checkpoint filter, strict load) on a tiny-sized ViT."""
    create_model = encoders.timm.create_model
    monkeypatch.setattr(encoders.timm, "create_model", lambda *args, **kwargs: create_model(
        *args, **{**kwargs, **encoders.TINY_DINO}))
    source = build_dino(16, "real", pretrained=False)
    path = empty_hub / "dino" / "model.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, str(path))
    monkeypatch.setenv("VARBENCH_DINO_WEIGHTS", str(path.parent))  # a folder works too
    loaded = build_dino(16, "real")
    pixels = torch.randn(1, 3, 224, 224)
    assert torch.equal(loaded(pixels), source(pixels))
    assert torch.equal(build_dino(16, "real", input_size=256).vit.blocks[0].mlp.fc1.weight,
                       source.vit.blocks[0].mlp.fc1.weight)
    save_file({"pos_embed": torch.zeros(1, 197, 32)}, str(path))
    with pytest.raises(UserError, match="do not fit"):
        build_dino(16, "real")


def test_real_clip_loads_a_local_safetensors_file(empty_hub, monkeypatch):
    """The real loading path (open_clip.load_checkpoint) on a tiny-sized CLIP file."""
    monkeypatch.setattr(encoders.open_clip, "get_model_config", lambda name: {**TINY_CLIP})
    source = build_clip("real", pretrained=False)
    path = empty_hub / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    monkeypatch.setenv("VARBENCH_CLIP_WEIGHTS", str(path))
    loaded = build_clip("real")
    assert torch.equal(loaded.encode_text(["a red toy"]), source.encode_text(["a red toy"]))
    save_file({"logit_scale": torch.zeros(())}, str(path))
    with pytest.raises(UserError, match="do not fit"):
        build_clip("real")


def test_missing_alexnet_weights_name_the_url_and_cache(empty_hub, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(empty_hub / "torch"))
    monkeypatch.setenv("VARBENCH_OFFLINE", "1")
    with pytest.raises(UserError) as caught:
        diversity.build_lpips(pretrained=True)
    line = caught.value.line()
    assert diversity.ALEXNET_URL in line and str(empty_hub / "torch" / "hub" / "checkpoints") in line
    assert "VARBENCH_ALEXNET_WEIGHTS" in line


def test_alexnet_trunk_is_copied_from_torchvision_weights(empty_hub, monkeypatch):
    torch.manual_seed(5)
    alexnet = torchvision.models.alexnet(weights=None)
    path = empty_hub / diversity.ALEXNET_FILE
    torch.save(alexnet.state_dict(), path)
    monkeypatch.setenv("VARBENCH_ALEXNET_WEIGHTS", str(empty_hub))
    net = diversity.build_lpips(pretrained=True)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    features = alexnet.features[:12](net.scaling_layer(pixels))  # up to relu5, LPIPS's last layer
    assert torch.equal(net.net(net.scaling_layer(pixels))[-1], features)
    assert float(net(pixels, pixels).flatten()[0]) == 0
