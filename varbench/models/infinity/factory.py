"""Building and loading Infinity models by size name.

    model = build_infinity("infinity-tiny")                # deterministic random weights
    model = build_infinity("infinity-2b", device="meta")   # structure only, no memory
    model = load_transformer("infinity-2b", weights=None)  # hub cache / $VARBENCH_INFINITY_DIR
    vae   = load_vae("infinity-2b", weights="/data/infinity_vae_d32reg.pth")

Loaded checkpoints are fp32; `dtype` (e.g. torch.bfloat16 for inference) applies to the
transformer blocks only, the small top-level modules stay fp32 (as the release does).
A transformer file loads if the official loader would load it (legacy buffers dropped,
`cfg_uncond` fitted: checkpoint.release_compatible); `load_transformer_noting` also
returns what that changed, for the caller to record.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from varbench.errors import UserError
from varbench.models.infinity.bsq import BSQTokenizer
from varbench.models.infinity.checkpoint import (INFINITY_2B_FILE, VAE_D32REG_FILE, VAE_KEY, canonical_vae_keys,
                                                 load_strict, read_state_dict, release_compatible)
from varbench.models.infinity.architecture import ModelSize, get_size
from varbench.models.infinity.transformer import Infinity
from varbench.weights import WeightFile, resolve_file

# Published weight files per size (sizes without an entry have no released weights here).
TRANSFORMER_FILES: dict[str, WeightFile] = {"infinity-2b": INFINITY_2B_FILE}
VAE_FILES: dict[str, WeightFile] = {"infinity-2b": VAE_D32REG_FILE}


def build_infinity(name: str = "infinity-tiny", device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> Infinity:
    """A transformer of size `name` with deterministic random weights (`seed`).

    On the meta device nothing is allocated or initialised (layout checks, loading with
    assign). `overrides` replace config fields, e.g. lvl_embed_every_chunk=True.
    """
    config = replace(get_size(name).transformer, **overrides)
    device = torch.device(device)
    with torch.device(device):
        model = Infinity(config)
    if device.type != "meta":
        model.init_random(seed)
    return model.cast_blocks(dtype) if dtype != torch.float32 else model


def build_vae(name: str = "infinity-tiny", device: torch.device | str = "cpu", seed: int = 0) -> BSQTokenizer:
    """The BSQ tokenizer of size `name` with deterministic random weights."""
    device = torch.device(device)
    with torch.device(device):
        vae = BSQTokenizer(get_size(name).tokenizer)
    if device.type != "meta":
        vae.init_random(seed)
    return vae.eval().requires_grad_(False)


def _weights_path(size: ModelSize, files: dict[str, WeightFile], weights: str | Path | None, what: str) -> Path:
    spec = files.get(size.name)
    if spec is None:
        if weights is None:
            raise UserError(f"no download entry for the {what} weights of {size.name}", "model size",
                            "Pass a weights path (a file, or a folder of safetensors shards), "
                            "or use build_* for random weights.")
        path = Path(weights).expanduser()
        if not path.exists():
            raise UserError(f"{what} weights not found", str(path), "Check the path.")
        return path
    return resolve_file(spec, weights)


def load_transformer(name: str = "infinity-2b", weights: str | Path | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     **overrides) -> Infinity:
    """The transformer with its released weights (or `weights`: a file or safetensors folder)."""
    return load_transformer_noting(name, weights, device, dtype, **overrides)[0]


def load_transformer_noting(name: str = "infinity-2b", weights: str | Path | None = None,
                            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                            **overrides) -> tuple[Infinity, dict]:
    """`load_transformer`, and the notes of what the release-compatible load dropped or
    resized (empty for a file that matches the model exactly)."""
    size = get_size(name)
    path = _weights_path(size, TRANSFORMER_FILES, weights, "transformer")
    model = build_infinity(name, device="meta", **overrides)
    state, notes = release_compatible(read_state_dict(path), tuple(model.cfg_uncond.shape))
    load_strict(model, state, str(path), assign=True)
    model.to(device)
    return (model.cast_blocks(dtype) if dtype != torch.float32 else model), notes


def load_vae(name: str = "infinity-2b", weights: str | Path | None = None,
             device: torch.device | str = "cpu") -> BSQTokenizer:
    """The BSQ tokenizer with its released weights (the file's "vae" entry)."""
    size = get_size(name)
    path = _weights_path(size, VAE_FILES, weights, "tokenizer")
    vae = BSQTokenizer(size.tokenizer)  # 110M parameters: built for real, the file is copied in
    raw = read_state_dict(path, key=VAE_KEY if path.suffix != ".safetensors" else None)
    state = canonical_vae_keys(raw, vae.state_dict().keys())
    # The bit-weight buffer is a known constant (saved under two names by the release).
    constants = {k: v.clone() for k, v in vae.state_dict().items() if k.endswith("lfq.mask")}
    load_strict(vae, state, str(path), defaults=constants)
    return vae.to(device).eval().requires_grad_(False)
