"""Selective layer tuning: which tensors of the Infinity transformer the fit trains.

Tensors are picked by their checkpoint names. A block's tensors read
`block_chunks.{c}.module.{i}.{part}.*` with block index b = c * blocks_per_chunk + i and
`part` one of `sa` (self-attention), `ca` (cross-attention), `ffn`, `ca_norm`, `ada_gss`.
The layer options select parts of blocks:

    "sa"  -> block_chunks.*.module.*.sa.*       (16,783,376 parameters per 2B block)
    "ca"  -> block_chunks.*.module.*.ca.*       (16,783,360)
    "ffn" -> block_chunks.*.module.*.ffn.*      (33,564,672)
    "all" -> sa + ca + ffn of every block (the release's enable_all_layer)

"lora" trains low-rank updates of the linear layers of the config's `lora_parts` instead
(lora.py); those parts' tensors themselves stay frozen, so `select_tensors` leaves them out.

`ca_norm`, `ada_gss`, every top-level module and in particular the text pooler
`text_proj_for_sos.ca.*` (whose name also contains ".ca.") are never selected: matching
is on the block path, not on a substring. "identifier" adds the learned identifier
vectors, which live outside the transformer (see `method.py`). An optional block range
[start, stop) restricts the block parts to those blocks.

Released default [ca, ffn, identifier] on Infinity-2B: 32 x (16,783,360 + 33,564,672)
+ 4 x 2048 = 1,611,145,216 parameters.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from varbench.errors import UserError

BLOCK_PARTS = ("sa", "ca", "ffn")
IDENTIFIER = "identifier"
LORA = "lora"
IDENTIFIER_KEY = "special_token"  # the release's name for the identifier vectors
_BLOCK_TENSOR = re.compile(r"^block_chunks\.(\d+)\.module\.(\d+)\.(sa|ca|ffn|ca_norm|ada_gss)(\.|$)")


def block_parts(layers: Sequence[str]) -> set[str]:
    """The block parts named by a `layers` list ("all" expands to sa, ca, ffn)."""
    parts = set()
    for layer in layers:
        if layer == "all":
            parts.update(BLOCK_PARTS)
        elif layer in BLOCK_PARTS:
            parts.add(layer)
        elif layer not in (IDENTIFIER, LORA):
            raise UserError(f"unknown layer option {layer!r}", "arbooth config, layers",
                            "Use sa, ca, ffn, identifier, lora or all.")
    return parts


def trains_identifier(layers: Sequence[str]) -> bool:
    return IDENTIFIER in layers


def lora_parts(layers: Sequence[str], parts: Sequence[str]) -> set[str]:
    """The block parts adapted by LoRA: `parts` (the config's lora_parts) when "lora" is in
    `layers`, else none."""
    return set(parts) if LORA in layers else set()


def lora_modules(linear_names: Iterable[str], parts: set[str], depth: int, blocks_per_chunk: int,
                 block_range: tuple[int, int] | None = None) -> list[str]:
    """Of the model's linear layers (module paths), those LoRA adapts: in `parts`, within
    the block range."""
    start, stop = block_range if block_range is not None else (0, depth)
    chosen = []
    for name in linear_names:
        where = block_of(f"{name}.weight", blocks_per_chunk)
        if where is not None and where[1] in parts and start <= where[0] < stop:
            chosen.append(name)
    return chosen


def block_of(name: str, blocks_per_chunk: int) -> tuple[int, str] | None:
    """(block index, part) of a block tensor name, None for a top-level tensor."""
    found = _BLOCK_TENSOR.match(name)
    if found is None:
        return None
    chunk, inner, part = int(found.group(1)), int(found.group(2)), found.group(3)
    return chunk * blocks_per_chunk + inner, part


def select_tensors(names: Iterable[str], layers: Sequence[str], depth: int, blocks_per_chunk: int,
                   block_range: tuple[int, int] | None = None) -> list[str]:
    """The transformer tensor names to train, in the given (state-dict) order."""
    parts = block_parts(layers)
    start, stop = block_range if block_range is not None else (0, depth)
    if stop > depth:
        raise UserError(f"block_range [{start}, {stop}) exceeds the model's {depth} blocks",
                        "arbooth config, block_range", f"Use a range within [0, {depth}].")
    chosen = []
    for name in names:
        where = block_of(name, blocks_per_chunk)
        if where is not None and where[1] in parts and start <= where[0] < stop:
            chosen.append(name)
    return chosen


def count_trainable(shapes: dict[str, Sequence[int]], layers: Sequence[str], depth: int, blocks_per_chunk: int,
                    identifier_shape: Sequence[int], block_range: tuple[int, int] | None = None) -> int:
    """Parameters trained by `layers` given the model's tensor shapes (works on meta models)."""
    chosen = select_tensors(shapes, layers, depth, blocks_per_chunk, block_range)
    total = sum(_numel(shapes[name]) for name in chosen)
    return total + (_numel(identifier_shape) if trains_identifier(layers) else 0)


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count
