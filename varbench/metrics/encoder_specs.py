"""The encoders the built-in metrics share: what each reads, how it is built, its weights.

    name      pixels  model                                        read by
    dino      dino    the mode's DINO (ViT-S/16; ViT-S/8 in dreambench++)  dino, pres, copy
    clip      clip    OpenAI CLIP ViT-B/32, image and text towers   clip_i, clip_t, copy
    lpips     square  LPIPS (AlexNet); outputs the uint8 256x256 views  div
    dinov2_s  dino    DINOv2 ViT-S/14 (timm)                        dinov2_s
    dinov2_l  dino    DINOv2 ViT-L/14 (timm)                        dinov2_l
    clip_l    clip    OpenAI CLIP ViT-L/14, image and text towers   clip_l_i, clip_l_t

"dino" and "clip" pixels are the mode's own inputs of its DINO and CLIP encoders
(`varbench.metrics.preprocess.dino_input` / `clip_input`), so a newer encoder follows the
mode's convention: DINOv2 reads the DINO pixels (canonical: Resize 256, CenterCrop 224,
ImageNet norm, the standard DINOv2 evaluation transform), CLIP-L the CLIP pixels (224).
Model code lives in `varbench.models.encoders`, imported only when an encoder is built.
"""
from __future__ import annotations

from typing import Any

from varbench.metrics.encoder_weights import ALEXNET_FILE, CLIP_FILE, CLIP_L_FILE, DINO_FILES, DINOV2_FILES, pin
from varbench.metrics.plugin import Encoder, EncoderSetup


def _build_dino(setup: EncoderSetup) -> Any:
    from varbench.models.encoders import build_dino

    return build_dino(setup.mode.dino_patch, setup.size, setup.device,  # type: ignore[arg-type]
                      input_size=setup.mode.dino_input_size, pretrained=setup.pretrained)


def _clip_builder(arch: str) -> Any:
    def build(setup: EncoderSetup) -> Any:
        from varbench.models.encoders import build_clip

        return build_clip(setup.size, setup.device, pretrained=setup.pretrained, arch=arch)  # type: ignore[arg-type]
    return build


def _dinov2_builder(variant: str) -> Any:
    def build(setup: EncoderSetup) -> Any:
        from varbench.models.encoders import build_dinov2

        return build_dinov2(variant, setup.size, setup.device,  # type: ignore[arg-type]
                            input_size=setup.mode.dino_input_size, pretrained=setup.pretrained)
    return build


def _build_lpips(setup: EncoderSetup) -> Any:
    from varbench.metrics.diversity import build_lpips

    return build_lpips(setup.size == "real" and setup.pretrained, setup.device)


def _clip_image(model: Any, pixels: Any) -> Any:
    return model.encode_image(pixels)


def _clip_text(model: Any, texts: list[str]) -> Any:
    return model.encode_text(texts)


def _views(model: Any, square: Any) -> Any:
    """LPIPS compares pairs within a prompt, so per image it keeps the view itself (uint8,
    small); DIV runs the network on each prompt's views."""
    return square


DINO = Encoder("dino", "dino", _build_dino, weights=tuple(pin(spec) for spec in DINO_FILES.values()))
CLIP = Encoder("clip", "clip", _clip_builder("ViT-B-32"), encode=_clip_image, text=_clip_text,
               weights=(pin(CLIP_FILE),))
LPIPS = Encoder("lpips", "square", _build_lpips, encode=_views, weights=(ALEXNET_FILE,))
DINOV2_S = Encoder("dinov2_s", "dino", _dinov2_builder("s"), weights=(pin(DINOV2_FILES["s"]),))
DINOV2_L = Encoder("dinov2_l", "dino", _dinov2_builder("l"), weights=(pin(DINOV2_FILES["l"]),))
CLIP_L = Encoder("clip_l", "clip", _clip_builder("ViT-L-14"), encode=_clip_image, text=_clip_text,
                 weights=(pin(CLIP_L_FILE),))
