"""Which published weights each metric encoder loads (hub file and pinned revision).

Kept apart from the encoders (and free of torch) because these pins are part of what a
score *is*: they enter every score id (varbench.metrics.settings.score_identity); the
extras' pins enter it only when a protocol asks for those extras.
"""
from __future__ import annotations

from varbench.weights import WeightFile

DINO_FILES = {
    # Revisions pinned to the hub commits current when varbench was written.
    16: WeightFile("timm/vit_small_patch16_224.dino", "model.safetensors",
                   revision="733b42a211ebe03aa7327050699cfcee7cd96123", env_var="VARBENCH_DINO_WEIGHTS"),
    8: WeightFile("timm/vit_small_patch8_224.dino", "model.safetensors", env_var="VARBENCH_DINO8_WEIGHTS"),
}
CLIP_FILE = WeightFile("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors",
                       revision="ab5b8ef490e86faa07d3523926b842c765de1de5", env_var="VARBENCH_CLIP_WEIGHTS")
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet (LPIPS), named by its sha256

# Extras (metrics.extra). DINOv2 files are timm's conversions of Meta's release: model.safetensors
# came with the "Add model" commits of May 2023; the pins are later commits of the same repos
# (README edits only) as listed on the hub.
DINOV2_FILES = {
    "s": WeightFile("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors",
                    revision="0686a689726076609b20e80d263cb5aa7be945f5", env_var="VARBENCH_DINOV2_S_WEIGHTS"),
    "l": WeightFile("timm/vit_large_patch14_dinov2.lvd142m", "model.safetensors",
                    revision="7eb792a1b3aabe5d55f3da6ff9e2e084744e25f9", env_var="VARBENCH_DINOV2_L_WEIGHTS"),
}
# open_clip's own hub location for ('ViT-L-14', 'openai') (QuickGELU). UNPINNED: no revision
# of this repo holding open_clip_model.safetensors could be looked up when this was written;
# the score id records "@None" until one is pinned here.
CLIP_L_FILE = WeightFile("timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
                         env_var="VARBENCH_CLIP_L_WEIGHTS")
CLIP_FILES = {"ViT-B-32": CLIP_FILE, "ViT-L-14": CLIP_L_FILE}


def pin(spec: WeightFile) -> str:
    """A weight file as "repo/file@revision" (the form score ids record)."""
    return f"{spec.repo_id}/{spec.filename}@{spec.revision}"


def pinned_weights() -> dict[str, str]:
    """Every standard encoder's weights as "repo/file@revision" (or the file name)."""
    pins = {f"dino{patch}": pin(spec) for patch, spec in DINO_FILES.items()}
    pins["clip"] = pin(CLIP_FILE)
    pins["lpips_alexnet"] = ALEXNET_FILE
    return pins
