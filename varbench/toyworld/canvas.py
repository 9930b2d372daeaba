"""Shapes as signed distances, painted on a 64x64 RGB canvas: all of the toyworld's pixel maths.

A `Shape` is a distance function of design coordinates (u, v) (negative inside, about
the true distance near the edge, which is all anti-aliasing needs) plus a bounding box.
`Canvas.paint` evaluates it only on the pixels of that box, so a small part (an eye,
a lace) costs a few microseconds: a whole scene renders in about a millisecond.

Determinism: the maths uses only +, -, *, /, sqrt, floor, mod and comparisons, which
IEEE 754 rounds exactly, so every machine computes the same floats (no sin, exp or pow
in pixel decisions: rotations take exact rational (cos, sin) pairs, see `rotation`).
Bounding boxes are conservative (padded by a pixel): they only decide where to compute.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

SIZE = 64  # pixels, square
Colour = tuple[int, int, int]
Box = tuple[float, float, float, float]  # (u0, v0, u1, v1)
Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]

INF = float("inf")
EVERYWHERE: Box = (-INF, -INF, INF, INF)
# Pixel centres, shared by every canvas.
_ROWS, _COLS = (grid.astype(np.float64) + 0.5 for grid in np.mgrid[0:SIZE, 0:SIZE])


class Shape:
    """A region: a signed distance function and a box that holds all of its inside."""

    __slots__ = ("bbox", "dist")

    def __init__(self, bbox: Box, dist: Distance):
        self.bbox = bbox
        self.dist = dist

    def __and__(self, other: Shape) -> Shape:  # intersection
        a, b = self.dist, other.dist
        box = (max(self.bbox[0], other.bbox[0]), max(self.bbox[1], other.bbox[1]),
               min(self.bbox[2], other.bbox[2]), min(self.bbox[3], other.bbox[3]))
        return Shape(box, lambda u, v: np.maximum(a(u, v), b(u, v)))

    def __or__(self, other: Shape) -> Shape:  # union
        a, b = self.dist, other.dist
        box = (min(self.bbox[0], other.bbox[0]), min(self.bbox[1], other.bbox[1]),
               max(self.bbox[2], other.bbox[2]), max(self.bbox[3], other.bbox[3]))
        return Shape(box, lambda u, v: np.minimum(a(u, v), b(u, v)))

    def __sub__(self, other: Shape) -> Shape:  # difference
        a, b = self.dist, other.dist
        return Shape(self.bbox, lambda u, v: np.maximum(a(u, v), -b(u, v)))


# ------------------------------------------------------------------ primitives

def circle(x: float, y: float, r: float) -> Shape:
    return Shape((x - r, y - r, x + r, y + r), lambda u, v: np.sqrt((u - x) ** 2 + (v - y) ** 2) - r)


def ellipse(x: float, y: float, rx: float, ry: float) -> Shape:
    # Not an exact distance, but close near the edge.
    k = min(rx, ry)
    return Shape((x - rx, y - ry, x + rx, y + ry),
                 lambda u, v: (np.sqrt(((u - x) / rx) ** 2 + ((v - y) / ry) ** 2) - 1.0) * k)


def box(x: float, y: float, hw: float, hh: float, r: float = 0.0) -> Shape:
    """A rectangle (centre, half sizes) with corners rounded by `r`."""
    def dist(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        qx = np.abs(u - x) - (hw - r)
        qy = np.abs(v - y) - (hh - r)
        outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0.0) - r
    return Shape((x - hw, y - hh, x + hw, y + hh), dist)


def segment(x0: float, y0: float, x1: float, y1: float, width: float) -> Shape:
    """A capsule: the points within width/2 of the segment."""
    ex, ey = x1 - x0, y1 - y0
    length2 = ex * ex + ey * ey or 1.0
    half = width / 2

    def dist(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        px, py = u - x0, v - y0
        h = np.clip((px * ex + py * ey) / length2, 0.0, 1.0)
        return np.sqrt((px - h * ex) ** 2 + (py - h * ey) ** 2) - half
    return Shape((min(x0, x1) - half, min(y0, y1) - half, max(x0, x1) + half, max(y0, y1) + half), dist)


def polyline(points: Sequence[tuple[float, float]], width: float) -> Shape:
    shape = segment(*points[0], *points[1], width)
    for a, b in zip(points[1:], points[2:]):
        shape = shape | segment(*a, *b, width)
    return shape


def polygon(points: Sequence[tuple[float, float]]) -> Shape:
    """A convex polygon (either winding): the largest signed distance to its edge lines."""
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    edges = []  # (x0, y0, outward unit normal)
    for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]]):
        length = math.sqrt((x1 - x0) ** 2 + (y1 - y0) ** 2)  # sqrt is exactly rounded too
        nx, ny = (y1 - y0) / length, (x0 - x1) / length
        if (cx - x0) * nx + (cy - y0) * ny > 0:  # points inward: flip
            nx, ny = -nx, -ny
        edges.append((x0, y0, nx, ny))

    def dist(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.maximum.reduce([(u - x0) * nx + (v - y0) * ny for x0, y0, nx, ny in edges])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return Shape((min(xs), min(ys), max(xs), max(ys)), dist)


def ring(x: float, y: float, r: float, width: float) -> Shape:
    half = width / 2
    return Shape((x - r - half, y - r - half, x + r + half, y + r + half),
                 lambda u, v: np.abs(np.sqrt((u - x) ** 2 + (v - y) ** 2) - r) - half)


def above(v0: float) -> Shape:
    """The half plane v < v0 (up is smaller v)."""
    return Shape((-INF, -INF, INF, v0), lambda u, v: v - v0)


def below(v0: float) -> Shape:
    return Shape((-INF, v0, INF, INF), lambda u, v: v0 - v)


def left_of(u0: float) -> Shape:
    return Shape((-INF, -INF, u0, INF), lambda u, v: u - u0)


def right_of(u0: float) -> Shape:
    return Shape((u0, -INF, INF, INF), lambda u, v: u0 - u)


# ------------------------------------------------------------------ patterns (unbounded)

def _bands(t: np.ndarray, period: float, width: float, offset: float) -> np.ndarray:
    return np.abs(np.mod(t - offset, period) - period / 2) - width / 2


def hstripes(period: float, width: float, offset: float = 0.0) -> Shape:
    """Horizontal bands `width` thick, one every `period`; intersect with a body to use."""
    return Shape(EVERYWHERE, lambda u, v: _bands(v, period, width, offset))


def vstripes(period: float, width: float, offset: float = 0.0) -> Shape:
    return Shape(EVERYWHERE, lambda u, v: _bands(u, period, width, offset))


def dstripes(period: float, width: float, offset: float = 0.0) -> Shape:
    """Diagonal bands (along u = -v); `period` measured along u + v."""
    return Shape(EVERYWHERE, lambda u, v: _bands(u + v, period, width, offset) * 0.7071)


def checks(size: float, ox: float = 0.0, oy: float = 0.0) -> Shape:
    """Every other square of a grid `size` wide."""
    def dist(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        gu, gv = (u - ox) / size, (v - oy) / size
        edge = np.minimum(np.abs(gu - np.floor(gu + 0.5)), np.abs(gv - np.floor(gv + 0.5))) * size
        odd = (np.floor(gu) + np.floor(gv)) % 2 == 1
        return np.where(odd, -edge, edge)
    return Shape(EVERYWHERE, dist)


# ------------------------------------------------------------------ colours

def mix(a: Colour, b: Colour, t: float) -> Colour:
    """`a` moved a fraction `t` towards `b`, rounded to integers."""
    return tuple(int(math.floor(x + (y - x) * t + 0.5)) for x, y in zip(a, b))  # type: ignore[return-value]


def darker(colour: Colour, t: float = 0.3) -> Colour:
    return mix(colour, (0, 0, 0), t)


def lighter(colour: Colour, t: float = 0.3) -> Colour:
    return mix(colour, (255, 255, 255), t)


# ------------------------------------------------------------------ rotation

def rotation(step: int, steps_per_unit: int = 24) -> tuple[float, float]:
    """An exact (cos, sin) pair: the rational point of the unit circle for t = step /
    steps_per_unit, ((1 - t^2) / (1 + t^2), 2t / (1 + t^2)), about 4.8 degrees a step."""
    t = step / steps_per_unit
    return (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)


# ------------------------------------------------------------------ the canvas

class Canvas:
    """An RGB float image and the map from its pixels to design coordinates (u, v).

    A subject is designed in a box of -32..32 design units each way; `scale` pixels per
    unit, a centre in pixels, a rotation and a mirror place it. `Canvas.frame` is the
    identity map for backgrounds: (u, v) = pixel position, 0..64.
    """

    def __init__(self, pixels: np.ndarray, cx: float, cy: float, scale: float,
                 rot: tuple[float, float] = (1.0, 0.0), flip: bool = False):
        self.pixels = pixels
        self.cx, self.cy, self.scale, self.rot, self.flip = cx, cy, scale, rot, flip
        cos, sin = rot
        dx, dy = _COLS - cx, _ROWS - cy
        u = (cos * dx + sin * dy) / scale
        self.v = (cos * dy - sin * dx) / scale
        self.u = -u if flip else u

    @classmethod
    def frame(cls, pixels: np.ndarray) -> Canvas:
        return cls(pixels, 0.0, 0.0, 1.0)

    def paint(self, shape: Shape, colour: Colour, alpha: float = 1.0) -> None:
        """Blend `colour` over the inside of `shape`, anti-aliased over one pixel."""
        window = self._window(shape.bbox)
        if window is None:
            return
        rows, cols = window
        cover = 0.5 - shape.dist(self.u[rows, cols], self.v[rows, cols]) * self.scale
        np.maximum(cover, 0.0, out=cover)  # (np.clip costs more on small arrays)
        np.minimum(cover, 1.0, out=cover)
        if alpha != 1.0:
            cover *= alpha
        region = self.pixels[rows, cols]
        region += (np.asarray(colour, dtype=np.float64) - region) * cover[..., None]

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.floor(self.pixels + 0.5), 0, 255).astype(np.uint8)

    def _window(self, bbox: Box) -> tuple[slice, slice] | None:
        """The pixel rows and columns a design-space box can touch (None: off the canvas)."""
        u0, v0, u1, v1 = bbox
        if u0 > u1 or v0 > v1:
            return None
        if not all(math.isfinite(b) for b in bbox):
            return slice(0, SIZE), slice(0, SIZE)
        cos, sin = self.rot
        xs, ys = [], []
        for u in (u0, u1):
            for v in (v0, v1):
                uu = -u if self.flip else u
                xs.append(self.cx + self.scale * (cos * uu - sin * v))
                ys.append(self.cy + self.scale * (sin * uu + cos * v))
        c0, c1 = max(int(math.floor(min(xs))) - 1, 0), min(int(math.ceil(max(xs))) + 1, SIZE)
        r0, r1 = max(int(math.floor(min(ys))) - 1, 0), min(int(math.ceil(max(ys))) + 1, SIZE)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)
