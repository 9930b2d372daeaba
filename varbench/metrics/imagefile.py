"""Reading image files into uint8 RGB arrays, without torch.

Decoding worker processes (`varbench.metrics.decode_pool`) import this module and no
torch (beside the parent's main module, which spawned processes always import: under the
`varbench` CLI all 16 workers of an H100 host started in 0.8 s). Every decoder here gives
the pixels `PIL.Image.open(path).convert("RGB")` gives (PNG is lossless, so any correct
PNG decoder agrees with PIL; the tests compare them).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from varbench.errors import UserError

PNG_HEADER_BYTES = 26  # signature (8), IHDR length and type (8), width, height, depth, colour type


def decode_image(path: Path, exif_and_alpha: bool = False) -> Image.Image:
    """Read an image fully as RGB; a missing or corrupt file is a `UserError`.

    `exif_and_alpha` applies the EXIF orientation and composites transparency on white
    (the DreamBench++ loader); otherwise alpha is dropped by a plain RGB conversion.
    """
    path = existing(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise unreadable(path, err) from None
    if exif_and_alpha:
        image = ImageOps.exif_transpose(image)
        if image.mode == "RGBA":
            background = Image.new("RGBA", image.size, "white")
            image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def decode_array(path: Path, exif_and_alpha: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) pixels equal to `np.asarray(decode_image(path, exif_and_alpha))`.

    8-bit RGB and RGBA PNGs (every image varbench writes) go through libspng, 1.3-1.5x
    faster than libpng or PIL on one core (it holds the GIL, so it pays in worker
    processes, not threads); everything else through `decode_image`.
    """
    path = existing(path)
    if not exif_and_alpha and path.suffix.lower() == ".png":
        data = path.read_bytes()
        if plain_png_size(data[:PNG_HEADER_BYTES]) is not None:
            import pyspng

            try:
                return pyspng.load(data, "RGB")  # RGBA input: alpha dropped, like convert("RGB")
            except RuntimeError as err:
                raise unreadable(path, err) from None
    return np.asarray(decode_image(path, exif_and_alpha))


def decoded_size(path: Path, exif_and_alpha: bool = False) -> tuple[int, int]:
    """(width, height) of the image `decode_array` will return, read from the file's
    header only (PNG: IHDR; other formats: PIL's lazy open). An EXIF rotation may swap
    the two; the pixel count is what callers size buffers with."""
    path = existing(path)
    with path.open("rb") as file:
        size = plain_png_size(file.read(PNG_HEADER_BYTES))
    if size is not None:
        return size
    try:
        with Image.open(path) as opened:
            return opened.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise unreadable(path, err) from None


def plain_png_size(header: bytes) -> tuple[int, int] | None:
    """(width, height) of an 8-bit truecolour PNG, with or without alpha (colour types 2
    and 6); None for any other file."""
    if not (len(header) == PNG_HEADER_BYTES and header[:8] == b"\x89PNG\r\n\x1a\n"
            and header[12:16] == b"IHDR" and header[24] == 8 and header[25] in (2, 6)):
        return None
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def existing(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError("image to score not found", str(path),
                        "Regenerate the cell (delete its status.json and rerun) or fix the dataset folder.")
    return path


def unreadable(path: Path, err: Exception) -> UserError:
    return UserError(f"cannot read image: {err}", str(path),
                     "Replace the file with a valid PNG/JPEG or regenerate the cell.")
