"""DIV: mean pairwise LPIPS (AlexNet) among the images of one prompt.

The network is torchmetrics' LPIPS module (the one `LearnedPerceptualImagePatchSimilarity
(net_type="alex")` wraps), built without letting it fetch anything: its AlexNet trunk is
created empty and filled here, so a missing file is one clear error instead of a
download attempt deep inside torchvision.
  real: torchvision's ImageNet AlexNet weights, `alexnet-owt-7be5be79.pth`, from
        $VARBENCH_ALEXNET_WEIGHTS (the file or its folder), else the torch hub cache
        where torchvision's own download puts it ($TORCH_HOME/hub/checkpoints/, by
        default ~/.cache/torch/hub/checkpoints/), else downloaded there (unless
        HF_HUB_OFFLINE / VARBENCH_OFFLINE is set), checking the file's sha256 prefix.
        The LPIPS linear heads ship inside torchmetrics (`lpips_models/alex.pth`).
  tiny: a random-init AlexNet trunk from a fixed seed and the same linear heads (they
        are non-negative, so DIV stays >= 0 and is 0 only for identical inputs).
Both files are loaded with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.functional.image import lpips as tm_lpips
from torchmetrics.utilities import dim_zero_cat

from varbench.errors import UserError
from varbench.metrics.encoder_weights import ALEXNET_FILE
from varbench.models.encoders import seeded
from varbench.weights import offline

ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
ALEXNET_SHA256_PREFIX = "7be5be79"  # torchvision names its files after their sha256


def alexnet_weights_path() -> Path:
    """Where torchvision's AlexNet weights are (or would be downloaded to)."""
    override = os.environ.get("VARBENCH_ALEXNET_WEIGHTS")
    if override:
        path = Path(override).expanduser()
        return path / ALEXNET_FILE if path.is_dir() else path
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def resolve_alexnet_weights() -> Path:
    path = alexnet_weights_path()
    if path.is_file():
        return path
    hint = (f"Download {ALEXNET_URL} into {path.parent} (torchvision's cache; TORCH_HOME moves it), "
            "or set VARBENCH_ALEXNET_WEIGHTS to the file or its folder; or set 'div: false'.")
    if os.environ.get("VARBENCH_ALEXNET_WEIGHTS") or offline():
        raise UserError("LPIPS AlexNet weights not found", str(path), hint)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(ALEXNET_URL, str(path), hash_prefix=ALEXNET_SHA256_PREFIX)
    except Exception as err:  # noqa: BLE001 - network or checksum failures end the same way
        raise UserError(f"cannot download the LPIPS AlexNet weights: {type(err).__name__}",
                        ALEXNET_URL, hint) from None
    return path


def build_lpips(pretrained: bool, device: torch.device | str = "cpu") -> nn.Module:
    """torchmetrics' LPIPS-AlexNet network: (x, y) in [-1, 1] -> (N, 1, 1, 1) distances.

    `pretrained`: torchvision's ImageNet AlexNet trunk (real backbones); otherwise the
    same AlexNet random-initialised from a fixed seed (tiny backbones, benchmarks).
    """
    with seeded():
        # pretrained=False: no linear heads loaded yet; pnet_rand=True: no AlexNet download
        net = tm_lpips._NoTrainLpips(net="alex", pretrained=False, pnet_rand=True)
    if pretrained:
        _load_alexnet_trunk(net, resolve_alexnet_weights())
    heads = Path(inspect.getfile(tm_lpips)).parent / "lpips_models" / "alex.pth"
    head_state = torch.load(heads, map_location="cpu", weights_only=True)
    result = net.load_state_dict(head_state, strict=False)  # the trunk is not in this file
    if result.unexpected_keys or len(head_state) != len(net.lins):
        raise RuntimeError(f"torchmetrics' LPIPS heads do not fit its network: {sorted(head_state)}")
    return net.eval().to(device)


def _load_alexnet_trunk(net: nn.Module, path: Path) -> None:
    """Copy torchvision's `features.{i}.*` tensors into LPIPS's `slice{k}.{i}.*` layers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise UserError(f"cannot read the AlexNet weights: {type(err).__name__}", str(path),
                        f"Delete it and download {ALEXNET_URL} again.") from None
    trunk = {}
    for key in net.net.state_dict():  # e.g. "slice2.3.weight"
        _, layer, tensor = key.split(".")
        source = f"features.{layer}.{tensor}"
        if source not in state:
            raise UserError(f"AlexNet weights lack {source}", str(path),
                            f"The file is not torchvision's {ALEXNET_FILE}; download it again.")
        trunk[key] = state[source]
    net.net.load_state_dict(trunk, strict=True)


@torch.no_grad()
def pairwise_lpips(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """LPIPS of every unordered pair (i < j) of `images` (N, 3, H, W) in [-1, 1]: (N(N-1)/2,).

    Equal to calling the network on each pair (a test checks), but AlexNet runs once per
    image instead of twice per pair: the LPIPS formula, per layer, is the spatial mean of
    a non-negative 1x1 convolution of the squared difference of channel-normalised
    features, summed over the five layers.
    """
    first, second = torch.triu_indices(len(images), len(images), offset=1, device=images.device)
    if first.numel() == 0:
        return images.new_zeros(0)
    features = net.net(net.scaling_layer(images))
    distance = images.new_zeros(len(first), 1, 1, 1)
    for layer, head in zip(features, net.lins):
        unit = layer / torch.sqrt(1e-8 + (layer ** 2).sum(dim=1, keepdim=True))
        distance = distance + head((unit[first] - unit[second]) ** 2).mean(dim=(2, 3), keepdim=True)
    return distance.flatten().float()


class Diversity(Metric):
    """DIV per prompt: `update` takes one prompt's images; `compute` returns one mean
    pairwise LPIPS per prompt, in update order. Prompts with fewer than two images have
    no pair and are skipped (the caller writes no DIV row for them)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, net: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor) -> None:
        distances = pairwise_lpips(self.net, images)
        if distances.numel():
            self.values.append(distances.mean().reshape(1))

    def compute(self) -> torch.Tensor:
        return dim_zero_cat(self.values) if self.values else torch.zeros(0)
