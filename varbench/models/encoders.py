"""Metric encoders: DINO v1 ViT-S/16 and ViT-S/8, DINOv2 ViT-S/14 and ViT-L/14 (timm),
OpenAI CLIP ViT-B/32 and ViT-L/14 (open_clip).

Three ways to build each encoder, one code path:
  size "real", pretrained=True   the published weights (DESIGN.md section 4),
  size "real", pretrained=False  the real architecture with random weights (throughput
                                 benchmarks, where only the arithmetic matters),
  size "tiny"                    the same architecture family, a few layers wide and deep,
                                 random-initialised from a fixed seed (tests, `smoke`).

Published weights are single safetensors files on the Hugging Face hub, found through
`varbench.weights.resolve_file`: an environment variable naming the file or its folder,
else the hub cache (downloaded into it unless HF_HUB_OFFLINE / VARBENCH_OFFLINE is
set). Nothing is unpickled.
  DINO ViT-S/16: timm/vit_small_patch16_224.dino, model.safetensors ($VARBENCH_DINO_WEIGHTS)
  DINO ViT-S/8:  timm/vit_small_patch8_224.dino, model.safetensors ($VARBENCH_DINO8_WEIGHTS)
  CLIP ViT-B/32: timm/vit_base_patch32_clip_224.openai, open_clip_model.safetensors
                 ($VARBENCH_CLIP_WEIGHTS); open_clip's own hub location for its
                 ('ViT-B-32', 'openai') weights, which use QuickGELU.
Extras (metrics.extra; revisions in varbench.metrics.encoder_weights):
  DINOv2 ViT-S/14: timm/vit_small_patch14_dinov2.lvd142m, model.safetensors ($VARBENCH_DINOV2_S_WEIGHTS)
  DINOv2 ViT-L/14: timm/vit_large_patch14_dinov2.lvd142m, model.safetensors ($VARBENCH_DINOV2_L_WEIGHTS)
  CLIP ViT-L/14:   timm/vit_large_patch14_clip_224.openai, open_clip_model.safetensors
                   ($VARBENCH_CLIP_L_WEIGHTS); ('ViT-L-14', 'openai'), QuickGELU.

Every encoder returns L2-normalised float32 embeddings. The DINO (and DINOv2) embedding is
the CLS token after the final LayerNorm: timm's `forward_features` ends with that norm, and
with `num_classes=0` and token pooling its `forward` returns the same vector (a test checks).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import open_clip
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from varbench.errors import UserError
from varbench.metrics.encoder_weights import CLIP_FILES, DINO_FILES, DINOV2_FILES
from varbench.weights import WeightFile, resolve_file

Size = Literal["real", "tiny", "toyworld"]  # toyworld: trained by varbench (varbench.toyworld.backbones)

TINY_SEED = 0
TINY_DINO = {"embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    # the real vocabulary and context length, so the real BPE tokenizer still applies
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# the same tiny towers with each architecture's patch size
TINY_CLIPS = {"ViT-B-32": TINY_CLIP,
              "ViT-L-14": {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "patch_size": 14}}}
DINOV2_MODELS = {"s": "vit_small_patch14_dinov2", "l": "vit_large_patch14_dinov2"}
# The two tiny stand-ins differ in width, so that dinov2_s and dinov2_l differ in tests too.
# DINOv2's LayerScale starts at 1e-5, which would leave a random-init CLS token blind to the
# image; the stand-ins start it at 1 (same modules, so the real loading path is unchanged).
TINY_DINOV2 = {"s": {**TINY_DINO, "init_values": 1.0},
               "l": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": 1.0}}


@contextmanager
def seeded(seed: int = TINY_SEED) -> Iterator[None]:
    """Draw random-init weights from a fixed seed, leaving the global generator as it was:
    a random-init encoder (tiny, or real-size for `backbones: random`) is then the same in
    every process and in every order of building, so its scores repeat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def resolve_weights(spec: WeightFile) -> str:
    """Path of a published weight file, or a one-line `UserError` saying how to get it."""
    try:
        return str(resolve_file(spec))
    except UserError as err:
        fix = (f"Download it with '{spec.download_command()}' "
               f"(fills the hub cache), or set {spec.env_var} to the file or its folder; "
               "or use 'backbones: tiny' to check the pipeline with random-init encoders.")
        raise UserError(err.what, err.where, fix) from None


# --- DINO --------------------------------------------------------------------------------
class DinoEncoder(nn.Module):
    """DINO ViT: pixels (N, 3, S, S) -> L2-normalised CLS embeddings (N, D), float32."""

    def __init__(self, vit: nn.Module, input_size: int):
        super().__init__()
        self.vit = vit
        self.input_size = input_size

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(pixels)  # (N, 1 + patches, D), final norm applied
        return F.normalize(tokens[:, 0].float(), dim=-1)


def build_dino(patch: int, size: Size, device: torch.device | str = "cpu", input_size: int = 224,
               pretrained: bool = True) -> DinoEncoder:
    """DINO v1 ViT-S/`patch` (16 or 8) taking `input_size` pixels (224, or 256 for dreammatcher)."""
    name = f"vit_small_patch{patch}_224.dino"
    if size == "tiny":
        with seeded():
            vit = timm.create_model(name, pretrained=False, num_classes=0, **TINY_DINO)
        arch = TINY_DINO
    elif size == "toyworld":
        vit, arch = _toyworld_dino(name, patch)
    else:
        path = resolve_weights(DINO_FILES[patch]) if pretrained else None  # fail before building
        with seeded():
            vit = timm.create_model(name, pretrained=False, num_classes=0)
        arch = {}
        if path is not None:
            _load_strict(vit, checkpoint_filter_fn(load_file(path), vit), path)
    if input_size != 224:
        vit = _at_input_size(vit, name, arch, patch, input_size)
    return DinoEncoder(vit.eval(), input_size).to(device)


def build_dinov2(variant: Literal["s", "l"], size: Size, device: torch.device | str = "cpu",
                 input_size: int = 224, pretrained: bool = True) -> DinoEncoder:
    """DINOv2 ViT-S/14 ("s") or ViT-L/14 ("l") taking `input_size` pixels (the mode's DINO
    input: 224, or 256 for dreammatcher). The weights were trained at 518 px: timm's
    checkpoint filter resamples the position embedding to the model's patch grid (bicubic,
    antialiased), as `timm.create_model(name, pretrained=True, img_size=...)` does."""
    name = DINOV2_MODELS[variant]
    if size == "toyworld":
        raise UserError("the toyworld has no DINOv2", "metrics.backbones: toyworld",
                        "Leave the DINOv2 extras out of toyworld protocols.")
    if size == "tiny":
        with seeded():
            vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=input_size,
                                    **TINY_DINOV2[variant])
    else:
        path = resolve_weights(DINOV2_FILES[variant]) if pretrained else None  # fail before building
        with seeded():
            vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=input_size)
        if path is not None:
            _load_strict(vit, checkpoint_filter_fn(load_file(path), vit), path)
    return DinoEncoder(vit.eval(), input_size).to(device)


def _at_input_size(vit: nn.Module, name: str, arch: dict, patch: int, input_size: int) -> nn.Module:
    """The same weights in a ViT built for `input_size`, the position embedding resized the
    way the official DINO code does it for non-224 inputs (what DreamMatcher ran)."""
    state = vit.state_dict()
    state["pos_embed"] = dino_position_embedding(state["pos_embed"], input_size // patch)
    resized = timm.create_model(name, pretrained=False, num_classes=0, img_size=input_size, **arch)
    resized.load_state_dict(state, strict=True)
    return resized


def dino_position_embedding(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a (1, 1 + g*g, D) position embedding to a `grid` x `grid` patch grid.

    Follows facebookresearch/dino `interpolate_pos_encoding`: bicubic interpolation by a
    scale factor of (grid + 0.1) / g (the 0.1 guards against floating-point truncation),
    align_corners False, the class token's embedding kept as is.
    """
    class_embed, patch_embed = pos_embed[:, :1], pos_embed[:, 1:]
    old_grid = int(round(patch_embed.shape[1] ** 0.5))
    dim = patch_embed.shape[-1]
    if old_grid == grid:
        return pos_embed
    square = patch_embed.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / old_grid
    resized = F.interpolate(square, scale_factor=(scale, scale), mode="bicubic", align_corners=False)
    if resized.shape[-2:] != (grid, grid):
        raise AssertionError(f"position embedding resized to {tuple(resized.shape[-2:])}, wanted {grid}")
    return torch.cat([class_embed, resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1)


# --- CLIP --------------------------------------------------------------------------------
class ClipEncoder(nn.Module):
    """OpenAI CLIP image and text towers (ViT-B/32 or ViT-L/14) with the BPE tokenizer."""

    def __init__(self, model: nn.Module, arch: str = "ViT-B-32"):
        super().__init__()
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(arch)  # BPE vocab ships with open_clip

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self._device())
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def build_clip(size: Size, device: torch.device | str = "cpu", pretrained: bool = True,
               arch: Literal["ViT-B-32", "ViT-L-14"] = "ViT-B-32") -> ClipEncoder:
    """OpenAI CLIP `arch`: ViT-B/32 (CLIP-I, CLIP-T) or ViT-L/14 (the clip_l extras)."""
    if size == "tiny":
        with seeded():
            model = open_clip.CLIP(**TINY_CLIPS[arch], quick_gelu=True)
    elif size == "toyworld":
        model = _toyworld_clip(arch)
    else:
        path = resolve_weights(CLIP_FILES[arch]) if pretrained else None  # fail before building
        # the OpenAI weights were trained with QuickGELU (open_clip tags them quick_gelu)
        with seeded():
            model = open_clip.CLIP(**open_clip.get_model_config(arch), quick_gelu=True)
        if path is not None:
            # loaded here rather than by open_clip.load_checkpoint, which reads safetensors
            # only in recent open_clip releases; the hub file already uses open_clip's keys
            _load_strict(model, load_file(path), path)
    return ClipEncoder(model.eval(), arch).to(device)


def _toyworld_dino(name: str, patch: int) -> tuple[nn.Module, dict]:
    """The toyworld's DINO ViT-S/16 stand-in with its trained weights."""
    from varbench.toyworld.backbones import TOY_DINO, weight_path

    if patch != 16:
        raise UserError(f"the toyworld has no DINO ViT-S/{patch}", "metrics.backbones: toyworld",
                        "Use a metric mode with DINO ViT-S/16 (canonical, dreammatcher, kosmosg).")
    path = str(weight_path("dino"))
    vit = timm.create_model(name, pretrained=False, num_classes=0, **TOY_DINO)
    _load_strict(vit, load_file(path), path)
    return vit, TOY_DINO


def _toyworld_clip(arch: str) -> nn.Module:
    """The toyworld's CLIP ViT-B/32 stand-in with its trained weights."""
    from varbench.toyworld.backbones import TOY_CLIP, weight_path

    if arch != "ViT-B-32":
        raise UserError(f"the toyworld has no CLIP {arch}", "metrics.backbones: toyworld",
                        "Leave the CLIP-L extras out of toyworld protocols.")
    path = str(weight_path("clip"))
    model = open_clip.CLIP(**TOY_CLIP, quick_gelu=True)
    _load_strict(model, load_file(path), path)
    return model


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"weights do not fit the model: {str(err).splitlines()[0]}", path,
                        "The file is corrupt or a different model; download it again.") from None
