"""Drawing the `smoke` subjects: three toy things, each in five views, from plain arithmetic.

Every pixel comes from signed distances to simple shapes (circles, ellipses, rounded
boxes), computed with numpy using only +, -, *, /, sqrt, floor and comparisons: all
exactly rounded by IEEE 754, so every machine computes the same floats and the PNGs are
identical byte for byte. For the same reason the rotations use exact (cos, sin) pairs
from Pythagorean triples (3-4-5, 5-12-13, 7-24-25) instead of calling a sine function,
and the speckle texture comes from an integer hash instead of a random generator.

A view varies the pose (rotation, mirror), the scale, the position and the background
(gradients and textures in light, unsaturated colours, so the saturated colours of the
subject itself are what tells subjects apart).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SIZE = 128  # pixels, square
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Pose:
    cos: float  # rotation as an exact (cos, sin) pair, see the module docstring
    sin: float
    scale: float
    centre_x: float
    centre_y: float
    mirror: bool = False


POSES = (
    Pose(1.0, 0.0, 1.0, 64, 66),
    Pose(24 / 25, 7 / 25, 0.8, 52, 72),  # about +16 degrees, smaller, lower left
    Pose(12 / 13, -5 / 13, 1.15, 70, 62, mirror=True),  # about -23 degrees, larger, mirrored
    Pose(4 / 5, 3 / 5, 0.7, 76, 76),  # about +37 degrees, small, lower right
    Pose(24 / 25, -7 / 25, 0.9, 58, 54, mirror=True),
)


class Canvas:
    """An RGB float image plus the subject's own coordinates (u, v) at every pixel."""

    def __init__(self, background: np.ndarray, pose: Pose):
        self.pixels = background
        rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5  # pixel centres
        dx, dy = cols - pose.centre_x, rows - pose.centre_y
        u = (pose.cos * dx + pose.sin * dy) / pose.scale
        self.v = (pose.cos * dy - pose.sin * dx) / pose.scale
        self.u = -u if pose.mirror else u
        self.scale = pose.scale

    def paint(self, distance: np.ndarray, colour: Colour) -> None:
        """Paint where `distance` (in subject units, negative inside) is below zero.

        The edge is anti-aliased over one pixel, so shapes look smooth at 128 px.
        """
        coverage = np.clip(0.5 - distance * self.scale, 0.0, 1.0)[..., None]
        self.pixels = self.pixels * (1.0 - coverage) + np.asarray(colour, dtype=np.float64) * coverage

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.floor(self.pixels + 0.5), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ shapes (distances)

def circle(c: Canvas, x: float, y: float, radius: float) -> np.ndarray:
    return np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2) - radius


def ellipse(c: Canvas, x: float, y: float, half_w: float, half_h: float) -> np.ndarray:
    # Not an exact distance, but close near the edge, which is all anti-aliasing needs.
    return (np.sqrt(((c.u - x) / half_w) ** 2 + ((c.v - y) / half_h) ** 2) - 1.0) * min(half_w, half_h)


def box(c: Canvas, x: float, y: float, half_w: float, half_h: float, radius: float = 0.0) -> np.ndarray:
    """A rectangle with rounded corners (radius 0: sharp)."""
    qx = np.abs(c.u - x) - half_w + radius
    qy = np.abs(c.v - y) - half_h + radius
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside - radius


def stripes(c: Canvas, period: float, width: float, offset: float) -> np.ndarray:
    """Horizontal bands (in subject coordinates) `width` wide, one every `period`."""
    phase = np.mod(c.v - offset, period)
    return np.abs(phase - period / 2) - width / 2


def both(*distances: np.ndarray) -> np.ndarray:
    """The intersection of shapes."""
    return np.maximum.reduce(distances)


# ------------------------------------------------------------------ the three subjects

RED, DARK_RED, YELLOW = (205, 35, 35), (165, 28, 28), (240, 200, 40)
WHITE, INK, STEEL = (245, 245, 245), (30, 30, 40), (80, 80, 92)
BLUE, RIM = (35, 70, 200), (205, 208, 222)
TAN, BROWN = (205, 130, 55), (95, 55, 25)


def draw_robot(c: Canvas) -> None:
    """A red toy robot built from boxes: head, body, arms, legs, antenna."""
    for side in (-1, 1):
        c.paint(box(c, side * 10, 36, 5, 8, 1.5), STEEL)  # legs
        c.paint(box(c, side * 27, 8, 4, 14, 2), DARK_RED)  # arms
    c.paint(box(c, 0, -38, 1.5, 6), STEEL)  # antenna
    c.paint(circle(c, 0, -44, 3.5), YELLOW)
    c.paint(box(c, 0, 10, 22, 20, 4), RED)  # body
    c.paint(box(c, 0, 8, 10, 6, 1.5), YELLOW)  # chest panel
    c.paint(box(c, 0, -22, 15, 12, 3), DARK_RED)  # head
    for side in (-1, 1):
        c.paint(circle(c, side * 6, -24, 4.5), WHITE)  # eyes
        c.paint(circle(c, side * 6, -24, 2), INK)


def draw_mug(c: Canvas) -> None:
    """A white mug with blue horizontal stripes and a handle on its right."""
    ring = np.abs(circle(c, 22, 4, 11)) - 3.5
    c.paint(both(ring, 20 - c.u), BLUE)  # handle: the right half of a ring
    body = box(c, 0, 4, 20, 26, 3)
    c.paint(body, WHITE)
    c.paint(both(body, stripes(c, period=12, width=6, offset=-22)), BLUE)
    c.paint(ellipse(c, 0, -22, 20, 4), RIM)  # rim seen from slightly above
    c.paint(ellipse(c, 0, -22, 16, 2.5), INK)  # the dark inside


def draw_dog(c: Canvas) -> None:
    """A tan, brown-spotted dog-like blob: body, legs, tail, head, ear, eye, nose."""
    for x, top in ((-18, 26), (-6, 28), (8, 28), (20, 26)):
        c.paint(box(c, x, top, 4, 10, 2), TAN)  # legs
    c.paint(ellipse(c, -31, -2, 10, 3.5), TAN)  # tail
    body = ellipse(c, 0, 8, 28, 16)
    c.paint(body, TAN)
    for x, y, radius in ((-10, 4, 5), (8, 12, 6), (15, 0, 4), (-2, 17, 3.5)):
        c.paint(both(body, circle(c, x, y, radius)), BROWN)  # spots stay on the body
    c.paint(circle(c, 30, -10, 12), TAN)  # head
    c.paint(ellipse(c, 25, -19, 5, 9), BROWN)  # ear
    c.paint(circle(c, 34, -13, 2), INK)  # eye
    c.paint(circle(c, 41, -7, 2.5), INK)  # nose


# ------------------------------------------------------------------ backgrounds

def _grid() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    return rows, cols


def _blend(top: Colour, bottom: Colour, t: np.ndarray) -> np.ndarray:
    t = t[..., None]
    return np.asarray(top, dtype=np.float64) * (1.0 - t) + np.asarray(bottom, dtype=np.float64) * t


def vertical_gradient() -> np.ndarray:
    rows, _ = _grid()
    return _blend((185, 205, 230), (215, 235, 205), rows / (SIZE - 1))


def checkerboard() -> np.ndarray:
    rows, cols = _grid()
    dark = ((rows // 16 + cols // 16) % 2).astype(np.float64)
    return _blend((230, 225, 210), (205, 200, 190), dark)


def horizontal_gradient() -> np.ndarray:
    _, cols = _grid()
    return _blend((225, 210, 235), (245, 220, 200), cols / (SIZE - 1))


def diagonal_stripes() -> np.ndarray:
    rows, cols = _grid()
    band = (((rows + cols) // 12) % 2).astype(np.float64)
    return _blend((235, 235, 235), (212, 218, 226), band)


def speckle() -> np.ndarray:
    """A pale sand colour with brightness noise per 2x2 block, from an integer hash."""
    rows, cols = _grid()
    cell = (rows // 2).astype(np.uint32) * np.uint32(374761393) + (cols // 2).astype(np.uint32) * np.uint32(668265263)
    cell = (cell ^ (cell >> np.uint32(13))) * np.uint32(1274126177)  # uint32 arithmetic wraps: a hash
    cell = cell ^ (cell >> np.uint32(16))
    noise = (cell % np.uint32(25)).astype(np.float64) - 12.0  # -12 .. 12
    base = np.asarray((240, 232, 200), dtype=np.float64)
    return base + noise[..., None]


BACKGROUNDS: tuple[Callable[[], np.ndarray], ...] = (
    vertical_gradient, checkerboard, horizontal_gradient, diagonal_stripes, speckle,
)


def render_view(draw: Callable[[Canvas], None], subject_index: int, view: int) -> np.ndarray:
    """View `view` (0-4) of a subject, as a (128, 128, 3) uint8 array.

    Subjects go through the poses and backgrounds in different orders, so no two
    subjects share a (pose, background) pair at the same view index.
    """
    pose = POSES[(view + subject_index) % len(POSES)]
    background = BACKGROUNDS[(view + 2 * subject_index) % len(BACKGROUNDS)]()
    canvas = Canvas(background, pose)
    draw(canvas)
    return canvas.to_uint8()
