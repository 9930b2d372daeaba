"""The `smoke` dataset: three procedurally drawn subjects, offline, for CPU pipeline checks.

- red_robot (class "toy robot", a two-word class noun like DreamBench's "stuffed animal"),
- striped_mug (class "mug"),
- spotted_dog (class "dog", live, so the live prompt list is exercised too),
each in five 128x128 views (see `smoke_images`), plus three object and three live
prompt templates in DreamBench's wording.

The images are written on first use into a cache folder (or the given root) and are
the same bytes on every machine: the drawing avoids platform-dependent maths, and the
PNGs are written by `encode_png` below with uncompressed deflate blocks, because
compressed output differs between zlib builds (Pillow's wheels bundle zlib-ng).
`manifests/smoke.sha256` holds the expected digests; a test regenerates and compares.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from varbench.cache import get_or_build
from varbench.data import Dataset
from varbench.data.manifest import load_manifest, quick_check
from varbench.data.smoke_images import Canvas, draw_dog, draw_mug, draw_robot, render_view
from varbench.data.subject import Subject
from varbench.fileio import write_bytes
from varbench.weights import cache_root

# Bump when a drawing changes (and rewrite manifests/smoke.sha256): the cache key holds it.
GENERATOR_VERSION = 1
VIEWS = 5

# (name, class noun, live, drawing function)
SMOKE_SUBJECTS: tuple[tuple[str, str, bool, Callable[[Canvas], None]], ...] = (
    ("red_robot", "toy robot", False, draw_robot),
    ("striped_mug", "mug", False, draw_mug),
    ("spotted_dog", "dog", True, draw_dog),
)
SMOKE_OBJECT_PROMPTS = ("a {} in the jungle", "a {} on the beach", "a {} in the snow")
SMOKE_LIVE_PROMPTS = ("a {} in the jungle", "a {} in the snow", "a {} wearing a red hat")


def smoke_dataset(root: str | None = None) -> Dataset:
    """The smoke subjects, drawn into `root` (or a shared cache folder) on first use."""
    folder = Path(root).expanduser() if root is not None else _cache_copy()
    if not quick_check(load_manifest("smoke"), folder).ok:  # first use, or a damaged copy
        write_smoke_images(folder)
    subjects = tuple(
        Subject(name=name, class_noun=noun, live=live, image_paths=image_paths(folder, name))
        for name, noun, live, _ in SMOKE_SUBJECTS
    )
    return Dataset("smoke", subjects, SMOKE_OBJECT_PROMPTS, SMOKE_LIVE_PROMPTS)


def _cache_copy() -> Path:
    key = {"dataset": "smoke", "generator_version": GENERATOR_VERSION}
    return get_or_build(cache_root() / "data", "smoke", key, write_smoke_images)


def image_paths(folder: Path, subject: str) -> tuple[Path, ...]:
    return tuple(folder / subject / f"{view:02d}.png" for view in range(VIEWS))


def write_smoke_images(folder: Path) -> None:
    """Draw every view of every subject and write it as a PNG (atomically)."""
    for index, (name, _, _, draw) in enumerate(SMOKE_SUBJECTS):
        for view, path in enumerate(image_paths(Path(folder), name)):
            write_bytes(path, encode_png(render_view(draw, index, view)))


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of `pixels` (H, W, 3), stored without compression.

    Uncompressed deflate ("stored" blocks, at most 65,535 bytes each) has exactly one
    encoding, so the file depends on the pixels alone.
    """
    height, width, channels = pixels.shape
    if channels != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    # Each row starts with filter type 0 (none).
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", _zlib_stored(raw)) + _chunk(b"IEND", b"")


def _zlib_stored(data: bytes) -> bytes:
    out = bytearray(b"\x78\x01")  # zlib header: deflate, 32K window, no dictionary
    block_size = 65535
    for start in range(0, len(data), block_size):
        block = data[start:start + block_size]
        final = 1 if start + block_size >= len(data) else 0
        out += bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack(">I", zlib.adler32(data))
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
