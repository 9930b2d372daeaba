"""Images as people have them: 16-bit files, EXIF orientations, decompression bombs and
other oddities are read correctly or refused with one UserError line, by every reader
(`load_rgb` for reference photos; `decode_image`, `decode_array`, `decoded_size` for
scoring)."""
from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, features

from varbench.data.subject import load_rgb
from varbench.errors import UserError
from varbench.metrics.imagefile import MAX_PIXELS, decode_array, decode_image, decoded_size

READERS = {
    "load_rgb": lambda path: np.asarray(load_rgb(path)),
    "decode_image": lambda path: np.asarray(decode_image(path)),
    "decode_array": decode_array,
}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def png_bytes(width: int, height: int, depth: int, colour_type: int, raw: bytes, compress: bool = True) -> bytes:
    """A PNG with the given IHDR and `raw` (filter bytes included) as its only IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    idat = zlib.compress(raw) if compress else raw
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def sixteen_bit_png(values: np.ndarray) -> bytes:
    """values: uint16 (H, W, C), C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    height, width, channels = values.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    return png_bytes(width, height, 16, colour_type, raw)


def expected_rgb(values: np.ndarray) -> np.ndarray:
    """The documented 16 -> 8 bit rule: the high byte of each colour value, alpha dropped."""
    colour = values[..., :1] if values.shape[2] in (1, 2) else values[..., :3]
    return np.broadcast_to(colour >> 8, values.shape[:2] + (3,)).astype(np.uint8)


def assert_one_line_error(call, path: Path, *fragments: str) -> UserError:
    with pytest.raises(UserError) as caught:
        call(path)
    line = caught.value.line()
    assert "\n" not in line and str(path) in line
    for fragment in fragments:
        assert fragment in line, line
    return caught.value


# ------------------------------------------------------------------ 16-bit files

@FAST
@given(values=st.integers(1, 4).flatmap(lambda channels: arrays(
    np.uint16, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(channels)))))
@example(values=np.full((2, 3, 1), 0x8000, dtype=np.uint16))  # mid-grey: Pillow's convert gives white
def test_sixteen_bit_pngs_keep_their_high_byte(tmp_path, values):
    path = tmp_path / "deep.png"
    path.write_bytes(sixteen_bit_png(values))
    expected = expected_rgb(values)
    exact = (values[..., :1] if values.shape[2] in (1, 2) else values[..., :3]) / 257
    assert np.abs(expected - exact).max() < 1  # v >> 8 is within 1 of the exact scaling
    for name, read in READERS.items():
        pixels = read(path)
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected), name
    assert decoded_size(path) == (values.shape[1], values.shape[0])


def test_sixteen_bit_grey_and_rgb_of_one_picture_agree(tmp_path):
    grey = np.linspace(0, 65535, 48).astype(np.uint16).reshape(6, 8, 1)
    (tmp_path / "grey.png").write_bytes(sixteen_bit_png(grey))
    (tmp_path / "rgb.png").write_bytes(sixteen_bit_png(np.repeat(grey, 3, axis=2)))
    # a 16-bit PPM opens in Pillow as mode "I" (32-bit integers holding 0..65535)
    Image.fromarray(grey[..., 0]).save(tmp_path / "grey.ppm")
    with Image.open(tmp_path / "grey.ppm") as opened:
        assert opened.mode == "I"
    images = {name: np.asarray(load_rgb(tmp_path / name)) for name in ("grey.png", "rgb.png", "grey.ppm")}
    assert np.array_equal(images["grey.png"], images["rgb.png"])
    assert np.array_equal(images["grey.ppm"], images["rgb.png"])
    assert images["grey.png"][..., 0].tolist() == (grey[..., 0] >> 8).tolist()


# ------------------------------------------------------------------ EXIF orientation

# EXIF orientation -> how the stored pixels are turned to display them upright
UPRIGHT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
BLOCK = 16  # JPEG is lossy: flat 16x16 blocks keep each block's colour close to exact


def asymmetric_blocks() -> np.ndarray:
    """2 x 3 flat blocks of six well-separated colours: every flip and turn differs."""
    colours = np.array([[[230, 30, 30], [30, 200, 30], [30, 30, 230]],
                        [[230, 230, 30], [30, 220, 220], [220, 30, 220]]], dtype=np.uint8)
    return colours.repeat(BLOCK, axis=0).repeat(BLOCK, axis=1)


def same_blocks(pixels: np.ndarray, expected: np.ndarray) -> bool:
    """Same layout of flat blocks, each block's centre within JPEG's error of the colour."""
    centre = slice(BLOCK // 2, None, BLOCK)
    ours, theirs = pixels[centre, centre].astype(int), expected[centre, centre].astype(int)
    return pixels.shape == expected.shape and np.abs(ours - theirs).max() <= 8


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", range(2, 9))  # 1 (upright) is every dataset photo's
def test_exif_orientation_turns_reference_photos_upright(tmp_path, orientation, suffix):
    stored = asymmetric_blocks()
    path = tmp_path / f"photo{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    upright = UPRIGHT[orientation](stored)
    assert same_blocks(np.asarray(load_rgb(path)), upright)
    # scoring: only the dreambench++ mode's loader turns it; the other modes keep the
    # stored pixels, as the evaluators they reproduce (plain PIL open + convert) do
    assert same_blocks(np.asarray(decode_image(path, exif_and_alpha=True)), upright)
    assert same_blocks(decode_array(path), stored)


# ------------------------------------------------------------------ decompression bombs

def bmp_header_only(width: int, height: int) -> bytes:
    """A 24-bit BMP header promising width x height pixels, followed by a few bytes."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40) + info + bytes(16)


def huge_grey_png(width: int, height: int) -> bytes:
    """A real, complete 8-bit grey PNG (all black) of width x height: tiny once compressed."""
    compressor, row = zlib.compressobj(9), bytes(width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return png_bytes(width, height, 8, 0, idat, compress=False)


@pytest.mark.parametrize("name, data", [
    pytest.param("header.png", png_bytes(100_000, 100_000, 8, 2, b"\x00" * 64), id="png-libspng-path"),
    pytest.param("header16.png", png_bytes(100_000, 100_000, 16, 0, b"\x00" * 64), id="png-pillow-path"),
    # over twice Pillow's limit (it raises), and over it but under twice (it only warns)
    pytest.param("header.bmp", bmp_header_only(100_000, 100_000), id="bmp-over-twice-the-limit"),
    pytest.param("warning_zone.bmp", bmp_header_only(9_500, 9_500), id="bmp-pillow-warning-zone"),
])
def test_a_bomb_header_is_refused_before_decoding(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    for read in (*READERS.values(), decoded_size):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert_one_line_error(read, path, "image too large", f"{MAX_PIXELS:,}")
        assert time.perf_counter() - start < 2.0
        assert [str(w.message) for w in caught] == []  # one error line, no warning beside it


def test_a_real_over_limit_image_is_refused_even_with_pillows_limit_off(tmp_path, monkeypatch):
    side = int(MAX_PIXELS ** 0.5) + 1  # 9,460 x 9,460: just over the limit
    path = tmp_path / "big.png"
    path.write_bytes(huge_grey_png(side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as some libraries set it
    with Image.open(path) as opened:
        opened.load()  # a valid, complete image, not just a header
        assert opened.size == (side, side)
    for read in (*READERS.values(), decoded_size):
        assert_one_line_error(read, path, "image too large")
    bmp = tmp_path / "big.bmp"
    bmp.write_bytes(bmp_header_only(side, side))
    for read in (*READERS.values(), decoded_size):
        assert_one_line_error(read, bmp, "image too large")


# ------------------------------------------------------------------ other oddities

def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def oddities(folder: Path) -> dict[str, tuple[Path, np.ndarray | None]]:
    """name -> (file, the RGB pixels every reader must give, or None: a UserError)."""
    cases: dict[str, tuple[Path, np.ndarray | None]] = {}
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    cases["cmyk_jpeg"] = (save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), folder / "cmyk.jpg"), red)
    bits = (np.indices((6, 10)).sum(axis=0) % 2).astype(bool)
    cases["one_bit"] = (save(Image.fromarray(bits), folder / "bits.png"),
                        np.repeat(bits[..., None] * 255, 3, axis=2).astype(np.uint8))
    colours = np.arange(16 * 3, dtype=np.uint8).reshape(16, 3) * 5
    indices = np.arange(16, dtype=np.uint8).reshape(4, 4)
    palette = Image.new("P", (4, 4))
    palette.putpalette(colours.tobytes())
    palette.putdata(indices.ravel().tolist())
    palette_rgb = colours[indices]
    cases["palette_alpha_bytes"] = (save(palette, folder / "palette.png", transparency=bytes(range(0, 160, 10))),
                                    palette_rgb)
    cases["palette_alpha_index"] = (save(palette, folder / "palette1.png", transparency=3), palette_rgb)
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    cases["animated_gif"] = (save(frames[0], folder / "anim.gif", save_all=True, append_images=frames[1:]),
                             np.full((6, 6, 3), (255, 0, 0), np.uint8))
    if features.check("webp"):
        cases["animated_webp"] = (save(frames[0], folder / "anim.webp", save_all=True, append_images=frames[1:],
                                       lossless=True), np.full((6, 6, 3), (255, 0, 0), np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    good_png = save(Image.fromarray(noise), folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good_png[:len(good_png) // 2])  # header intact, pixels cut
    cases["truncated_png"] = (folder / "truncated.png", None)
    good_jpeg = save(Image.fromarray(red.repeat(8, 0).repeat(8, 1)), folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good_jpeg[:len(good_jpeg) // 2])
    cases["truncated_jpeg"] = (folder / "truncated.jpg", None)
    (folder / "folder.png").mkdir()
    cases["folder"] = (folder / "folder.png", None)
    (folder / "empty.jpg").write_bytes(b"")
    cases["empty"] = (folder / "empty.jpg", None)
    (folder / "notes.png").write_text("not an image")
    cases["text"] = (folder / "notes.png", None)
    cases["float_tiff"] = (save(Image.fromarray(np.ones((4, 4), np.float32)), folder / "float.tiff"), None)
    return cases


MESSAGES = {"folder": "a folder, not an image file", "empty": "empty (0 bytes)", "float_tiff": "floating-point"}


def test_odd_images_are_read_correctly_or_refused_in_one_line(tmp_path):
    for name, (path, expected) in oddities(tmp_path).items():
        for reader, read in READERS.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if expected is None:
                    assert_one_line_error(read, path, "cannot read image", MESSAGES.get(name, ""))
                else:
                    pixels = read(path)
            assert [str(w.message) for w in caught] == [], (name, reader)  # no warning beside them
            if expected is None:
                continue
            assert pixels.dtype == np.uint8 and pixels.shape == expected.shape, (name, reader)
            assert np.abs(pixels.astype(int) - expected).max() <= 2, (name, reader)


# ------------------------------------------------------------------ any bytes at all

def valid_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


VALID_PNG = valid_png()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(VALID_PNG)), flips=st.lists(st.tuples(st.integers(0, len(VALID_PNG) - 1),
                                                                       st.integers(1, 255)), max_size=3))
@example(cut=len(VALID_PNG), flips=[(16, 1)])  # IHDR width 10 -> 16,777,226: a bomb header (bad CRC too)
def test_any_bytes_give_pixels_or_one_user_error(tmp_path, cut, flips):
    """Cut and corrupt a valid PNG anywhere: `decoded_size` promises a size under the
    limit (or refuses) and every reader gives that many uint8 RGB pixels (or refuses),
    never another exception: scoring sizes shared buffers from `decoded_size`."""
    data = bytearray(VALID_PNG[:cut])
    for offset, xor in flips:
        if offset < len(data):
            data[offset] ^= xor
    path = tmp_path / "fuzzed.png"
    path.write_bytes(bytes(data))
    try:
        width, height = decoded_size(path)
    except UserError:
        size = None
    else:
        assert width * height <= MAX_PIXELS
        size = (height, width)
    for read in READERS.values():
        try:
            pixels = read(path)
        except UserError as err:
            assert "\n" not in err.line()
            continue
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert size is not None and pixels.shape[:2] == size
