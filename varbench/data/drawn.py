"""Datasets whose image files varbench draws itself (`smoke`, `toyworld`).

Where their files are read from:
- by default, varbench's own cache (`<cache>/data/<name>/<key hash>`, see
  `varbench.cache`). They are drawn there when a subject's `image_paths` are first read
  (`DrawnSubject`), not when the dataset is opened, so planning (`varbench run
  --dry-run`) writes nothing. A damaged cache copy is drawn again: it is varbench's own.
- a given root (the protocol's `data.root`, `--data-root`) is only ever read: every file
  is hashed against the shipped manifest (`manifests/<name>.sha256`), and a copy that
  differs is a `UserError`. varbench never writes into a folder a user names, nor
  through a symlink there.

The files are the same bytes on every machine: the drawings avoid platform-dependent
maths, and `encode_png` writes PNGs with uncompressed deflate blocks, because compressed
output differs between zlib builds (Pillow's wheels bundle zlib-ng).
"""
from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varbench.cache import get_or_build
from varbench.data.manifest import load_manifest, quick_check, verify_folder
from varbench.data.subject import DrawnSubject, Subject
from varbench.errors import UserError
from varbench.hashing import content_hash
from varbench.weights import cache_root

NEVER_WRITTEN = ("varbench never writes into a given data root: remove data.root (or --data-root) to use "
                 "varbench's own drawn copy, or point it at a correct copy.")


@dataclass(frozen=True)
class DrawnFiles:
    """Where a drawn dataset's files live and how they are made. `write(folder)` draws
    every file (a module-level function, so subjects stay picklable); `generator_version`
    is bumped with every drawing change (the cache key holds it)."""

    name: str
    generator_version: int
    views: int
    write: Callable[[Path], None]

    @property
    def cache_key(self) -> dict[str, object]:
        return {"dataset": self.name, "generator_version": self.generator_version}

    def image_paths(self, folder: Path, subject: str) -> tuple[Path, ...]:
        return tuple(Path(folder) / subject / f"{view:02d}.png" for view in range(self.views))

    def subjects(self, entries: list[tuple[str, str, bool]], root: str | None) -> tuple[Subject, ...]:
        """(name, class noun, live) entries as subjects read from `root` (checked, never
        written) or from the cache copy (drawn on first read)."""
        if root is not None:
            folder = self.checked_root(Path(root).expanduser())
            return tuple(Subject(name, noun, live, self.image_paths(folder, name)) for name, noun, live in entries)
        cache_dir = cache_root() / "data"
        folder = self.cache_copy_folder(cache_dir)
        draw = functools.partial(self.ensure_cache_copy, cache_dir)
        return tuple(DrawnSubject(name, noun, live, self.image_paths(folder, name), draw)
                     for name, noun, live in entries)

    def checked_root(self, folder: Path) -> Path:
        """A user-given root, if every file has the manifest's bytes (a size check alone
        would pass a wrong drawing: every view has the same size)."""
        if not folder.is_dir():
            raise UserError(f"{self.name} data root not found", str(folder), NEVER_WRITTEN)
        verify_folder(load_manifest(self.name), folder).raise_for_problems(NEVER_WRITTEN)
        return folder

    def cache_copy_folder(self, cache_dir: Path) -> Path:
        """Where `get_or_build` keeps the drawn copy, known before it exists (its layout:
        <cache_dir>/<kind>/<content hash of the key, 16 characters>)."""
        return Path(cache_dir) / self.name / content_hash(self.cache_key, length=16)

    def ensure_cache_copy(self, cache_dir: Path) -> Path:
        """Draw the cache copy unless it is there (under the cache's lock, once), and draw
        it again over a damaged one: the cache is varbench's own to write."""
        folder = get_or_build(cache_dir, self.name, self.cache_key, self.write)
        if folder != self.cache_copy_folder(cache_dir):  # the subjects were given paths there
            raise RuntimeError(f"{self.name} cache copy built at {folder}, expected "
                               f"{self.cache_copy_folder(cache_dir)}: varbench.cache changed its layout")
        if not quick_check(load_manifest(self.name), folder).ok:
            self.write(folder)
        return folder


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
