"""Which published weights each metric encoder loads (hub file and pinned revision).

Kept apart from the encoders (and free of torch) because these pins are part of what a
score *is*: they enter every score id (varbench.metrics.settings.score_identity).
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


def pinned_weights() -> dict[str, str]:
    """Every real encoder's weights as "repo/file@revision" (or the file name)."""
    pins = {f"dino{patch}": f"{spec.repo_id}/{spec.filename}@{spec.revision}" for patch, spec in DINO_FILES.items()}
    pins["clip"] = f"{CLIP_FILE.repo_id}/{CLIP_FILE.filename}@{CLIP_FILE.revision}"
    pins["lpips_alexnet"] = ALEXNET_FILE
    return pins
