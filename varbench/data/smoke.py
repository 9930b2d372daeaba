"""The `smoke` dataset: three procedurally drawn subjects, offline, for CPU pipeline checks.

- red_robot (class "toy robot", a two-word class noun like DreamBench's "stuffed animal"),
- striped_mug (class "mug"),
- spotted_dog (class "dog", live, so the live prompt list is exercised too),
each in five 128x128 views (see `smoke_images`), plus three object and three live
prompt templates in DreamBench's wording.

The images are the same bytes on every machine: the drawing avoids platform-dependent
maths, and the PNGs are written by `encode_png` below with uncompressed deflate blocks,
because compressed output differs between zlib builds (Pillow's wheels bundle zlib-ng).
`manifests/smoke.sha256` holds the expected digests; a test regenerates and compares.

Where they are read from:
- by default, varbench's own cache (`<cache>/data/smoke/<key hash>`, see
  `varbench.cache`). They are drawn there when a subject's `image_paths` are first read
  (`DrawnSubject`), not when the dataset is opened, so planning (`varbench run
  --dry-run`) writes nothing. A damaged cache copy is drawn again: it is varbench's own.
- a given root (the protocol's `data.root`, `--data-root`) is only ever read: every
  file is hashed against the manifest, and a copy that differs is a `UserError`.
  varbench never writes into a folder a user names, nor through a symlink there.
  `write_smoke_images(folder)` makes such a copy, on purpose.
"""
from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from varbench.cache import get_or_build
from varbench.data import Dataset
from varbench.data.manifest import load_manifest, quick_check, verify_folder
from varbench.data.smoke_images import Canvas, draw_dog, draw_mug, draw_robot, render_view
from varbench.data.subject import DrawnSubject, Subject
from varbench.errors import UserError
from varbench.fileio import write_bytes
from varbench.hashing import content_hash
from varbench.weights import cache_root

# Bump when a drawing changes (and rewrite manifests/smoke.sha256): the cache key holds it.
GENERATOR_VERSION = 1
CACHE_KEY = {"dataset": "smoke", "generator_version": GENERATOR_VERSION}
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
    """The smoke subjects: read from `root` if given (never written: a copy that is not
    exactly the drawn files is a `UserError`), else from varbench's cache, drawn there
    when their images are first needed."""
    if root is not None:
        folder = checked_root(Path(root).expanduser())
        subjects = tuple(Subject(name, noun, live, image_paths(folder, name))
                         for name, noun, live, _ in SMOKE_SUBJECTS)
    else:
        cache_dir = cache_root() / "data"
        folder = cache_copy_folder(cache_dir)
        draw = functools.partial(ensure_cache_copy, cache_dir)
        subjects = tuple(DrawnSubject(name, noun, live, image_paths(folder, name), draw)
                         for name, noun, live, _ in SMOKE_SUBJECTS)
    return Dataset("smoke", subjects, SMOKE_OBJECT_PROMPTS, SMOKE_LIVE_PROMPTS)


def checked_root(folder: Path) -> Path:
    """A user-given smoke root, if every file has the manifest's bytes (15 small files:
    hashing them costs about a millisecond, and a size check alone passes a wrong
    drawing, since every view has the same size)."""
    fix = ("varbench never writes into a given data root: remove data.root (or --data-root) to use "
           "varbench's own drawn copy, or point it at a correct copy.")
    if not folder.is_dir():
        raise UserError("smoke data root not found", str(folder), fix)
    verify_folder(load_manifest("smoke"), folder).raise_for_problems(fix)
    return folder



def cache_copy_folder(cache_dir: Path) -> Path:
    """Where `get_or_build` keeps the drawn copy, known before it exists (its layout:
    <cache_dir>/<kind>/<content hash of the key, 16 characters>)."""
    return Path(cache_dir) / "smoke" / content_hash(CACHE_KEY, length=16)


def ensure_cache_copy(cache_dir: Path) -> Path:
    """Draw the cache copy unless it is there (under the cache's lock, once), and draw
    it again over a damaged one: the cache is varbench's own to write."""
    folder = get_or_build(cache_dir, "smoke", CACHE_KEY, write_smoke_images)
    if folder != cache_copy_folder(cache_dir):  # the subjects were given paths there
        raise RuntimeError(f"smoke cache copy built at {folder}, expected {cache_copy_folder(cache_dir)}: "
                           "varbench.cache changed its layout")
    if not quick_check(load_manifest("smoke"), folder).ok:
        write_smoke_images(folder)
    return folder


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
