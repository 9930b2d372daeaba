"""Reading checkpoint files safely and loading them strictly.

Safe: `.pth` files go through `torch.load(weights_only=True)` (no arbitrary pickled code
runs), `.safetensors` through safetensors; a folder means sharded safetensors.
Strict: every checkpoint tensor must find a model tensor of the same shape and every
model tensor must be filled, otherwise one `UserError` lists the offending keys.

Release-compatible: a transformer file also loads where the official loader
(`Infinity.load_state_dict`, FoundationVision/Infinity infinity/models/infinity.py) would
load it: that loader drops the buffers of older model code (`LEGACY_BUFFERS`) and fits
`cfg_uncond` to the model's text length, cutting extra rows or padding with the rows of
its own freshly initialised null text (`released_null_text`). Everything else stays
strict. What was dropped or resized is returned as notes for the caller to record (ARBooth:
the base identity).

The released files (hub repo FoundationVision/Infinity):
  infinity_2b_reg.pth       plain fp32 state dict of the 2B transformer (694 tensors)
  infinity_vae_d32reg.pth   the tokenizer under key "vae"
"""
from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from varbench.errors import UserError
from varbench.weights import WeightFile

HUB_REPO = "FoundationVision/Infinity"
ENV_VAR = "VARBENCH_INFINITY_DIR"
INFINITY_2B_FILE = WeightFile(HUB_REPO, "infinity_2b_reg.pth", size=8_819_295_332, env_var=ENV_VAR)
VAE_D32REG_FILE = WeightFile(HUB_REPO, "infinity_vae_d32reg.pth", size=1_557_324_701, env_var=ENV_VAR)
VAE_KEY = "vae"
_SHOWN = 8  # keys listed per category in a mismatch error
# Buffers that older Infinity code registered and saved; the official loader pops them
# (and varbench's model has none), so a file that still carries them loads.
LEGACY_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen")
NULL_TEXT = "cfg_uncond"


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or safetensors folder; `key` selects a nested dict."""
    path = Path(path)
    if path.is_dir():
        data = _read_safetensors_folder(path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = _guarded(lambda: load_file(str(path)), path)
    else:
        data = read_checkpoint(path)
    if key is not None:
        if not isinstance(data, Mapping) or key not in data:
            found = sorted(data)[:_SHOWN] if isinstance(data, Mapping) else type(data).__name__
            raise UserError(f"checkpoint has no entry {key!r} (found {found})", str(path),
                            "Use the released tokenizer file (its weights sit under 'vae').")
        data = data[key]
    if not isinstance(data, Mapping) or not all(torch.is_tensor(v) for v in data.values()):
        raise UserError("checkpoint is not a plain state dict of tensors", str(path),
                        "Use the released weights file (or a file saved with state_dict()).")
    return dict(data)


def read_checkpoint(path: str | Path):
    """Whatever a `.pth` file holds (tensors, dicts, lists, numbers, strings), read without
    running pickled code; anything else is one `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", str(path), "Check the path.")
    return _guarded(lambda: _torch_load(path), path)


def _torch_load(path: Path):
    try:  # memory-map: only the tensors we copy are read
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format


def _guarded(read, path: Path):
    try:
        return read()
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        if "Unsupported global" in reason or "GLOBAL" in reason:
            raise UserError(f"refusing to load {path.name}: it holds objects other than tensors ({reason})",
                            str(path), "Only plain tensor checkpoints load (weights_only); re-save it with "
                            "state_dict().") from None
        raise UserError(f"cannot read checkpoint: {reason}", str(path),
                        "The file is incomplete or corrupt; download it again.") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise UserError(f"cannot read checkpoint: {_first_sentence(str(err)) or type(err).__name__}", str(path),
                        "The file is incomplete or corrupt; download it again.") from None


def _unpickler_reason(message: str) -> str:
    """The informative part of torch's long, multi-line weights_only error."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return f"Unsupported global {found.group(1)}"
    for line in message.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()[:120] or "not a torch checkpoint"
    return _first_sentence(message) or "not a torch checkpoint"


def _first_sentence(message: str) -> str:
    line = message.splitlines()[0] if message else ""
    return line.split(". ")[0][:160]


def _read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise UserError("folder holds no .safetensors shards", str(folder),
                        "Pass the checkpoint file, or the folder of its safetensors shards.")
    data: dict[str, torch.Tensor] = {}
    for shard in shards:
        data.update(_guarded(lambda shard=shard: load_file(str(shard)), shard))
    return data


def key_mismatch(model_shapes: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Missing, unexpected and wrongly shaped keys (empty lists when all match)."""
    missing = sorted(k for k in model_shapes if k not in state)
    unexpected = sorted(k for k in state if k not in model_shapes)
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(model_shapes[k])}"
                   for k in model_shapes if k in state and tuple(state[k].shape) != tuple(model_shapes[k]))
    return {"missing": missing, "unexpected": unexpected, "wrong shape": wrong}


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str,
                defaults: Mapping[str, torch.Tensor] | None = None, assign: bool = False) -> None:
    """Load `state` into `model` only if keys and shapes match exactly.

    `defaults` fills known constant buffers the file may omit (a value the file does
    carry must equal the default). `assign=True` adopts the checkpoint tensors (for models
    built on the meta device: no second copy of the weights).
    """
    state = dict(state)
    for key, value in (defaults or {}).items():
        if key not in state:
            state[key] = value
        elif not torch.equal(state[key].cpu(), value.cpu()):
            raise UserError(f"checkpoint constant {key} has unexpected values", where,
                            "Use the released file for this model.")
    check_keys({k: v.shape for k, v in model.state_dict().items()}, state, where,
               "Use the checkpoint made for this model size (and the tokenizer file for the VAE).")
    model.load_state_dict(state, strict=True, assign=assign)


def check_keys(model_shapes: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], where: str,
               fix: str) -> None:
    """One `UserError` listing missing, unexpected and wrongly shaped keys, if any."""
    problems = key_mismatch(model_shapes, state)
    if any(problems.values()):
        raise UserError(_mismatch_line(problems), where, fix)


def release_compatible(state: Mapping[str, torch.Tensor], null_text_shape: tuple[int, int]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """`state` as the official Infinity loader sees it, and notes of what that changed.

    Legacy buffers are dropped; `cfg_uncond` (the learned null text) is cut to the model's
    rows or padded with the rows that follow in the release's initial null text. Notes:
    {"dropped": [names]} and {"resized": {"cfg_uncond": [file rows, model rows]}}, only
    for what happened (a file the model matches exactly gets no notes).
    """
    state, notes = dict(state), {}
    dropped = sorted(name for name in LEGACY_BUFFERS if state.pop(name, None) is not None)
    if dropped:
        notes["dropped"] = dropped
    null = state.get(NULL_TEXT)
    rows, channels = null_text_shape
    if null is not None and null.dim() == 2 and null.shape[1] == channels and null.shape[0] != rows:
        notes["resized"] = {NULL_TEXT: [int(null.shape[0]), rows]}
        if null.shape[0] > rows:
            state[NULL_TEXT] = null[:rows]
        else:
            pad = released_null_text(rows, channels)[null.shape[0]:]
            state[NULL_TEXT] = torch.cat([null.to(pad.dtype), pad])  # fp32, as the model's null text
    return state, notes


def released_null_text(rows: int, channels: int) -> torch.Tensor:
    """The release's initial `cfg_uncond`: a (rows, channels) normal of std 1.2 truncated to
    [-2, 2], drawn on the CPU from a generator seeded 0, divided by sqrt(channels). The
    official loader pads a short file's null text with these rows."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    values = torch.nn.init.trunc_normal_(torch.empty(rows, channels), std=1.2, generator=generator)
    return values / channels ** 0.5


def _mismatch_line(problems: dict[str, list[str]]) -> str:
    parts = []
    for kind, keys in problems.items():
        if keys:
            shown = ", ".join(keys[:_SHOWN]) + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")
            parts.append(f"{len(keys)} {kind}: {shown}")
    return "checkpoint does not match the model: " + "; ".join(parts)


def canonical_vae_keys(state: Mapping[str, torch.Tensor], model_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Accept the tokenizer's keys with or without the release's wrapper level.

    The release wraps each Conv2d at `.conv` and each GroupNorm at `.norm`, and its loader
    also accepts files saved without that level (`encoder.conv_in.weight`). Such keys are
    renamed to the wrapped form; anything else is left for the strict check to report.
    """
    model_keys = set(model_keys)
    out = {}
    for key, value in state.items():
        if key not in model_keys and "." in key:
            stem, leaf = key.rsplit(".", 1)
            for wrapper in ("conv", "norm"):
                candidate = f"{stem}.{wrapper}.{leaf}"
                if candidate in model_keys:
                    key = candidate
                    break
        out[key] = value
    return out
