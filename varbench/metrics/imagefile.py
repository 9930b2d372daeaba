"""Reading image files into uint8 RGB, without torch: the one way varbench opens an image.

Decoding worker processes (`varbench.metrics.decode_pool`) import this module and no
torch (beside the parent's main module, which spawned processes always import: under the
`varbench` CLI all 16 workers of an H100 host started in 0.8 s). Reference photos for
fitting (`varbench.data.subject.load_rgb`) and images to score (`decode_image`,
`decode_array`) both go through `open_rgb`, which takes images as people have them:

- 8-bit files of any mode give the pixels `PIL.Image.open(path).convert("RGB")` gives:
  grey, 1-bit, palette (with or without transparency), CMYK (Pillow's plain conversion,
  no ICC profile), LA/RGBA (alpha dropped; see `white_alpha` for compositing).
- 16-bit files keep their high byte (v >> 8). That is what Pillow itself does when it
  opens a 16-bit RGB or RGBA PNG, so the same picture saved as 16-bit grey or 16-bit RGB
  gives the same 8-bit pixels; for 16-bit grey (modes I;16*, and "I" as a 16-bit PPM
  opens) Pillow's own convert("RGB") clips every value above 255 to white instead.
  v >> 8 is within 1 of the exact v / 257. A 32-bit "I" image with values outside
  0..65535, and a float ("F") image, have no agreed 8-bit scale: a `UserError`.
- Animated GIF, WebP and APNG files give their first frame.
- EXIF orientation is applied when asked (`exif=True`): always for reference photos
  (`load_rgb`); for images to score only in the dreambench++ metric mode, whose
  evaluator applies it. The other modes reproduce evaluators that open files with plain
  PIL open + convert, so their pixels stay the file's stored pixels (no published number
  moves either way: no DreamBench or ViCo image carries a non-trivial orientation).
- An image over `MAX_PIXELS` is refused before it is decoded (PNG: from its IHDR, even
  on the libspng fast path; other formats: from the header Pillow reads on open).
- Anything else (a missing file, a folder, an empty, truncated or foreign file, a
  header that promises more than the data holds) is one `UserError` line.

PNG is lossless, so any correct PNG decoder agrees with PIL on 8-bit PNGs (the tests
compare libspng with PIL).
"""
from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from varbench.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEADER_BYTES = 26  # signature (8), IHDR length and type (8), width, height, depth, colour type

# Pillow's default Image.MAX_IMAGE_PIXELS (1 GiB of 4-byte pixels / 3; about 9,459 x 9,459),
# fixed here so that no other library can raise or disable it for varbench. It holds
# every DreamBench photo (at most 2048 x 2048), every generated image and any phone
# photo up to 89 MP, and caps one decoded image at 268 MB of RGB.
MAX_PIXELS = 89_478_485

# The entry `warnings.filterwarnings("error", category=DecompressionBombWarning)` makes.
BOMB_FILTER = ("error", None, Image.DecompressionBombWarning, None, 0)
SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")
# What Pillow raises on a file it cannot decode: not an image (UnidentifiedImageError is
# an OSError), truncated (OSError, EOFError), a broken chunk (SyntaxError), a header or
# mode it rejects (ValueError), a malformed binary field (struct.error).
DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, struct.error)


@dataclass(frozen=True)
class FileRole:
    """How errors about a file name it and say what to do."""

    missing: str
    missing_fix: str
    bad_fix: str


SCORED = FileRole("image to score not found",
                  "Regenerate the cell (delete its status.json and rerun) or fix the dataset folder.",
                  "Replace the file with a valid PNG/JPEG or regenerate the cell.")
REFERENCE = FileRole("image file not found", "Check the dataset folder or run 'varbench data verify'.",
                     "Replace the file with a valid JPEG/PNG or re-fetch the dataset with 'varbench data fetch'.")


def open_rgb(path: Path, exif: bool = False, white_alpha: bool = False, role: FileRole = SCORED) -> Image.Image:
    """Read an image fully (so truncated files fail here, not later) as 8-bit RGB.

    `exif` applies the EXIF orientation; `white_alpha` composites an RGBA image on white
    (the DreamBench++ loader; other alpha is dropped by the plain conversion, as there).
    A missing, unreadable, oversized or unconvertible file is one `UserError`.
    """
    path = existing(path, role)
    with path.open("rb") as file:
        size = png_size(file.read(PNG_HEADER_BYTES))
    if size is not None:
        check_pixels(size, path, role)  # before Pillow allocates anything
    bomb_warning_is_error()
    try:
        with Image.open(path) as opened:
            check_pixels(opened.size, path, role)
            opened.load()
            image = ImageOps.exif_transpose(opened) if exif else opened
            if white_alpha and image.mode == "RGBA":
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
            return eight_bit_rgb(image, path, role)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise too_large(str(err), path, role) from None
    except DECODE_ERRORS as err:
        raise unreadable(path, err, role) from None


def eight_bit_rgb(image: Image.Image, path: Path, role: FileRole) -> Image.Image:
    """`image` as 8-bit RGB (see the module docstring for 16-bit and palette images)."""
    if image.mode in SIXTEEN_BIT_GREY or image.mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise UserError(f"cannot read image: 32-bit integer pixels (range {values.min()}..{values.max()}) "
                            "have no 8-bit scale", str(path), role.bad_fix)
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        raise UserError("cannot read image: floating-point pixels have no 8-bit scale", str(path), role.bad_fix)
    if image.mode == "P" and "transparency" in image.info:
        # Same RGB as a direct conversion, without Pillow's warning about palette alpha.
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode_image(path: Path, exif_and_alpha: bool = False) -> Image.Image:
    """An image to score as RGB (see `open_rgb`); a missing or corrupt file is a `UserError`.

    `exif_and_alpha` applies the EXIF orientation and composites transparency on white
    (the DreamBench++ loader); otherwise alpha is dropped by a plain RGB conversion and
    EXIF is ignored, as the other modes' evaluators do.
    """
    return open_rgb(path, exif=exif_and_alpha, white_alpha=exif_and_alpha)


def decode_array(path: Path, exif_and_alpha: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) pixels equal to `np.asarray(decode_image(path, exif_and_alpha))`.

    8-bit RGB and RGBA PNGs (every image varbench writes) go through libspng, 1.3-1.5x
    faster than libpng or PIL on one core (it holds the GIL, so it pays in worker
    processes, not threads); everything else through `decode_image`.
    """
    path = existing(path)
    if not exif_and_alpha and path.suffix.lower() == ".png":
        data = path.read_bytes()
        size = plain_png_size(data[:PNG_HEADER_BYTES])
        if size is not None:
            check_pixels(size, path, SCORED)  # libspng allocates what the IHDR says
            import pyspng

            try:
                return pyspng.load(data, "RGB")  # RGBA input: alpha dropped, like convert("RGB")
            except RuntimeError as err:
                raise unreadable(path, err) from None
    return np.asarray(decode_image(path, exif_and_alpha))


def decoded_size(path: Path, exif_and_alpha: bool = False) -> tuple[int, int]:
    """(width, height) of the image `decode_array` will return, read from the file's
    header only (PNG: IHDR; other formats: PIL's lazy open). An EXIF rotation may swap
    the two; the pixel count is what callers size buffers with, so an image over
    `MAX_PIXELS` is refused here, before any buffer is sized from it."""
    path = existing(path)
    with path.open("rb") as file:
        size = png_size(file.read(PNG_HEADER_BYTES))
    if size is None:
        bomb_warning_is_error()
        try:
            with Image.open(path) as opened:
                size = opened.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise too_large(str(err), path, SCORED) from None
        except DECODE_ERRORS as err:
            raise unreadable(path, err) from None
    check_pixels(size, path, SCORED)
    return size


def png_size(header: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR of any PNG; None for any other file."""
    if not (len(header) == PNG_HEADER_BYTES and header[:8] == PNG_SIGNATURE and header[12:16] == b"IHDR"):
        return None
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def plain_png_size(header: bytes) -> tuple[int, int] | None:
    """(width, height) of an 8-bit truecolour PNG, with or without alpha (colour types 2
    and 6); None for any other file."""
    if png_size(header) is None or header[24] != 8 or header[25] not in (2, 6):
        return None
    return png_size(header)


def check_pixels(size: tuple[int, int], path: Path, role: FileRole) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise too_large(f"{width:,} x {height:,} pixels", path, role)


def bomb_warning_is_error() -> None:
    """Make Pillow's DecompressionBombWarning (an image between its limit and twice it)
    an exception, so `open_rgb` answers it with one `UserError` line, not a warning plus
    an error.

    The filter is process-wide, put first and left there: `warnings.catch_warnings`
    around each open is not thread-safe before Python 3.14 (decoding runs in threads)
    and resets every module's warning registry, so once-only warnings elsewhere would
    repeat on every image. Checking that it is still first costs one comparison; it is
    put back only when other code has put a filter in front since. The refusal itself
    never depends on it: `check_pixels` runs on the header's size whatever Pillow's
    limit is (other libraries may raise or disable it).
    """
    if warnings.filters and warnings.filters[0] == BOMB_FILTER:
        return
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def existing(path: Path, role: FileRole = SCORED) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError("cannot read image: this is a folder, not an image file", str(path), role.bad_fix)
    if not path.is_file():
        raise UserError(role.missing, str(path), role.missing_fix)
    if path.stat().st_size == 0:
        raise UserError("cannot read image: the file is empty (0 bytes)", str(path), role.bad_fix)
    return path


def too_large(what: str, path: Path, role: FileRole) -> UserError:
    return UserError(f"image too large to read safely: {what} (varbench reads at most {MAX_PIXELS:,} pixels, "
                     "about 9,450 x 9,450; a larger header is a decompression bomb or an oversized photo)",
                     str(path), "Downscale the image below that size, or " + role.bad_fix[0].lower() + role.bad_fix[1:])


def unreadable(path: Path, err: Exception, role: FileRole = SCORED) -> UserError:
    return UserError(f"cannot read image: {err}", str(path), role.bad_fix)
