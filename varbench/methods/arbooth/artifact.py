"""The ARBooth artifact: only the trained tensors, tied to the base model they apply to.

`arbooth.safetensors` holds the tuned transformer tensors under their checkpoint names
(`block_chunks.0.module.0.ca.mat_q.weight`, ...) plus the identifier vectors as
`special_token` (the release's name), or with `layers: [lora, ...]` each adapted layer's
LoRA factors (`<layer>.lora_A.weight`, `<layer>.lora_B.weight`, peft's names), in the dtype they were trained in (fp32 master
weights by default). Its metadata records the base model's identity (model size and
checkpoint file names and sizes, or the random-init seed), the method config's hash and
the format version. Loading refuses, with one clear error, a file made for another base
model, and a file whose tensors are not exactly those this config trains.
At Infinity-2B with the released layers the file is 6.4 GB (1.61 G fp32 values); with
LoRA rank 4 on cross-attention + FFN, 18 MB.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from varbench.errors import UserError
from varbench.hashing import canonical_json

ARTIFACT_FILE = "arbooth.safetensors"
FORMAT_VERSION = "1"
REFIT = "Delete the cell's artifact folder so that the cell is fitted again."


def save_artifact(folder: Path, tensors: Mapping[str, torch.Tensor], base_identity: dict[str, Any],
                  config_hash: str) -> Path:
    path = Path(folder) / ARTIFACT_FILE
    metadata = {"format": FORMAT_VERSION, "method": "arbooth", "base": canonical_json(base_identity),
                "config_hash": config_hash}
    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(path), metadata=metadata)
    return path


def load_artifact_tensors(folder: Path, base_identity: dict[str, Any],
                          expected: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """The artifact's tensors (on the CPU), checked against the base and the expected shapes."""
    path = Path(folder) / ARTIFACT_FILE
    if not path.is_file():
        raise UserError(f"ARBooth artifact has no {ARTIFACT_FILE}", str(folder), REFIT)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError) as err:
        raise UserError(f"cannot read the ARBooth artifact: {str(err).splitlines()[0]}", str(path), REFIT) from None
    _check_base(metadata, base_identity, path)
    _check_tensors(tensors, expected, path)
    return tensors


def _check_base(metadata: Mapping[str, str], base_identity: dict[str, Any], path: Path) -> None:
    if metadata.get("format") != FORMAT_VERSION or metadata.get("method") != "arbooth":
        raise UserError(f"not an ARBooth artifact of format {FORMAT_VERSION} (metadata {dict(metadata)})",
                        str(path), REFIT)
    recorded = json.loads(metadata.get("base", "null"))
    if recorded != base_identity:
        raise UserError(f"artifact was trained on another base model ({_short(recorded)}), this config loads "
                        f"{_short(base_identity)}", str(path),
                        "Load it with the base weights it was trained on, or refit. " + REFIT)


def _check_tensors(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]], path: Path) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(name for name in expected if name in tensors and tuple(tensors[name].shape) != tuple(expected[name]))
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)) if keys]
        raise UserError("artifact tensors do not match what this config trains: " + "; ".join(parts), str(path),
                        "Use the config the artifact was trained with (layers, block_range, model). " + REFIT)


def _short(identity: Any) -> str:
    if not isinstance(identity, dict):
        return repr(identity)
    transformer = identity.get("transformer", {})
    weights = transformer.get("file") or f"random init, seed {transformer.get('random_init_seed')}"
    return f"{identity.get('model')}, {weights}"
