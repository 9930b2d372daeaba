"""The backgrounds: DreamBench's contexts, and plain "reference photo" rooms.

Each context is named by the phrase a DreamBench prompt uses ("in the jungle") and drawn
in pixel coordinates (`Canvas.frame`: u, v = 0..64) from colour regions plus a texture
that tells it apart at 64 px: leaves for the jungle, planks for a wooden floor, a stone
grid for cobblestones, a triangle for a mountain, a skyline for a city... A Generator
seeded by the scene varies the horizon, the positions and the shades, never what the
context is. The subject stands around the middle, so landmarks (a house, a tower, a
tree) sit to one side, where they stay visible.

`NEUTRALS` are the plain indoor backgrounds of the reference photos (scenes without a
context): low-texture, pale, unlike every context.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from varbench.toyworld.canvas import (
    SIZE, Canvas, Colour, Shape, above, below, box, checks, circle, darker, ellipse, hstripes, lighter, polygon,
    segment, vstripes,
)

Draw = Callable[[Canvas, np.random.Generator], None]


# ------------------------------------------------------------------ helpers

def _gradient(c: Canvas, top: Colour, bottom: Colour, y0: int = 0, y1: int = SIZE) -> None:
    """A vertical blend from `top` at row y0 to `bottom` at row y1 - 1."""
    t = (np.arange(y1 - y0, dtype=np.float64) / max(y1 - y0 - 1, 1))[:, None, None]
    a, b = np.asarray(top, dtype=np.float64), np.asarray(bottom, dtype=np.float64)
    c.pixels[y0:y1] = a + (b - a) * t


def _noise(c: Canvas, rng: np.random.Generator, amount: int, y0: int = 0, block: int = 2) -> None:
    """Grey speckle of +-amount per block x block cell, from row y0 down (a texture)."""
    cells = rng.integers(-amount, amount + 1, size=(SIZE // block, SIZE // block)).astype(np.float64)
    speckle = np.repeat(np.repeat(cells, block, axis=0), block, axis=1)
    c.pixels[y0:] += speckle[y0:, :, None]


def _horizon(rng: np.random.Generator, middle: int, spread: int = 3) -> int:
    return middle + int(rng.integers(-spread, spread + 1))


def _shade(colour: Colour, rng: np.random.Generator, amount: int = 10) -> Colour:
    k = int(rng.integers(-amount, amount + 1))
    return tuple(int(min(max(x + k, 0), 255)) for x in colour)  # type: ignore[return-value]


def _side(rng: np.random.Generator, near: int = 13, far: int = 51) -> float:
    """An x position to one side of the subject (left or right, jittered)."""
    return float((near if rng.integers(2) == 0 else far) + int(rng.integers(-3, 4)))


def _tiles(c: Canvas, rng: np.random.Generator, y0: int, height: int, width: int, stagger: int,
           mortar: Colour, stone: Colour, gap: float, radius: float, spread: int) -> None:
    """Rows of rounded tiles (cobblestones, planks) from row y0 down, each row shifted
    by `stagger`, every tile its own shade: the texture of pavements and floors."""
    c.pixels[y0:] = mortar
    u, v = c.u[y0:], c.v[y0:] - y0
    row = np.floor(v / height)
    shifted = u + (row % 2) * stagger
    col = np.floor(shifted / width)
    lu = np.mod(shifted, width) - width / 2
    lv = np.mod(v, height) - height / 2
    qx, qy = np.abs(lu) - (width / 2 - gap - radius), np.abs(lv) - (height / 2 - gap - radius)
    dist = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2) + np.minimum(np.maximum(qx, qy), 0.0) - radius
    cover = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
    shades = rng.integers(-spread, spread + 1, size=(16, 16)).astype(np.float64)
    tone = shades[(row % 16).astype(np.intp), (col % 16).astype(np.intp)][..., None]
    region = c.pixels[y0:]
    region += (np.asarray(stone, dtype=np.float64) + tone - region) * cover


# ------------------------------------------------------------------ the contexts

def jungle(c: Canvas, rng: np.random.Generator) -> None:
    _gradient(c, (34, 86, 40), (22, 58, 26))
    for _ in range(4):  # hanging vines
        x = float(rng.integers(2, 62))
        c.paint(segment(x, 0.0, x + float(rng.integers(-4, 5)), float(rng.integers(20, 50)), 1.4), (70, 72, 30))
    greens = ((64, 150, 52), (42, 118, 44), (100, 170, 62), (30, 100, 50))
    for _ in range(18):  # big leaves: diamonds pointing every way
        x, y = float(rng.integers(0, 64)), float(rng.integers(0, 64))
        ax, ay = float(rng.integers(-9, 10)), float(rng.integers(-9, 10))
        if abs(ax) + abs(ay) < 6:
            ax += 6.0
        leaf = polygon([(x - ax, y - ay), (x - ay * 0.4, y + ax * 0.4), (x + ax, y + ay), (x + ay * 0.4, y - ax * 0.4)])
        c.paint(leaf, greens[int(rng.integers(len(greens)))])
    _noise(c, rng, 6)


def snow(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 24)
    _gradient(c, (168, 186, 208), (212, 222, 234), 0, h)
    _gradient(c, (236, 240, 246), (250, 251, 253), h, SIZE)
    c.paint(ellipse(float(rng.integers(0, 64)), float(h + 1), 26.0, 6.0) & above(float(h + 1)), (240, 244, 250))
    for _ in range(3):  # blue shadows in the drifts
        c.paint(ellipse(float(rng.integers(0, 64)), float(rng.integers(h + 8, 62)), 14.0, 2.5), (214, 224, 240))
    for _ in range(40):  # falling flakes
        c.paint(circle(float(rng.integers(0, 64)), float(rng.integers(0, 64)), 0.9), (255, 255, 255))


def beach(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 20)
    sea = h + 9
    _gradient(c, (110, 174, 234), (178, 214, 244), 0, h)
    _gradient(c, (36, 110, 180), (60, 150, 200), h, sea)
    _gradient(c, (238, 216, 158), (222, 196, 134), sea, SIZE)
    _noise(c, rng, 8, y0=sea)
    c.paint(box(32.0, float(sea), 40.0, 1.2), (246, 246, 240))  # surf line
    for _ in range(3):
        c.paint(ellipse(float(rng.integers(0, 64)), float(rng.integers(sea + 6, 62)), 1.6, 1.1), (246, 232, 222))


def cobblestone_street(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 18)
    _gradient(c, (176, 156, 136), (150, 132, 116), 0, h)  # a house wall
    c.paint(box(_side(rng), h / 2, 6.0, h / 2 - 3.0), (70, 80, 96))  # a window
    _tiles(c, rng, h, height=6, width=8, stagger=4, mortar=(74, 72, 72), stone=(142, 140, 138),
           gap=0.6, radius=1.8, spread=18)


def pink_fabric(c: Canvas, rng: np.random.Generator) -> None:
    c.pixels[:] = _shade((236, 150, 186), rng, 8)
    slope = (0.5, 0.8, -0.6)[int(rng.integers(3))]
    period = float(rng.integers(14, 22))
    t = np.mod(c.u * slope + c.v + float(rng.integers(0, 20)), period) / period
    fold = (np.abs(2.0 * t - 1.0) - 0.5) * 46.0  # a triangle wave: soft folds
    c.pixels += fold[..., None] * np.asarray((0.7, 1.0, 0.85))


def wooden_floor(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 20)
    c.pixels[:h] = _shade((234, 224, 204), rng, 6)  # wall
    _tiles(c, rng, h, height=5, width=int(rng.integers(22, 30)), stagger=11, mortar=(96, 58, 30),
           stone=(176, 116, 64), gap=0.45, radius=0.5, spread=16)
    c.paint(box(32.0, h - 1.5, 33.0, 1.5), (246, 244, 238))  # skirting board


def city(c: Canvas, rng: np.random.Generator) -> None:
    street = _horizon(rng, 46)
    _gradient(c, (142, 184, 226), (206, 222, 238), 0, street)
    greys = ((110, 116, 130), (140, 140, 150), (90, 96, 112), (150, 130, 116), (120, 128, 146))
    x = -2.0
    while x < SIZE:
        width = float(rng.integers(6, 12))
        top = float(rng.integers(6, street - 12))
        building = box(x + width / 2, (top + street) / 2, width / 2 - 0.5, (street - top) / 2)
        c.paint(building, greys[int(rng.integers(len(greys)))])
        windows = building & box(x + width / 2, (top + street) / 2, width / 2 - 2.0, (street - top) / 2 - 2.0)
        c.paint(windows & vstripes(3.0, 1.4, x) & hstripes(4.0, 1.6, top), (236, 214, 120))
        x += width
    _gradient(c, (96, 96, 100), (70, 70, 74), street, SIZE)
    c.paint(box(32.0, street + 1.0, 33.0, 1.0), (170, 170, 166))  # kerb


def mountain(c: Canvas, rng: np.random.Generator) -> None:
    meadow = _horizon(rng, 46)
    _gradient(c, (104, 164, 228), (190, 218, 244), 0, meadow)
    back_x = float(rng.integers(8, 20))
    c.paint(polygon([(back_x - 34.0, meadow), (back_x, 16.0), (back_x + 34.0, meadow)]), (152, 152, 178))
    peak_x, peak_y = float(rng.integers(30, 44)), float(rng.integers(5, 11))
    mountain_shape = polygon([(peak_x - 44.0, meadow + 2.0), (peak_x, peak_y), (peak_x + 44.0, meadow + 2.0)])
    c.paint(mountain_shape, (104, 98, 124))
    c.paint(mountain_shape & above(peak_y + 10.0), (246, 248, 252))  # snow cap
    _gradient(c, (96, 164, 74), (70, 136, 54), meadow, SIZE)
    _noise(c, rng, 6, y0=meadow)


def blue_house(c: Canvas, rng: np.random.Generator) -> None:
    lawn = _horizon(rng, 42)
    _gradient(c, (140, 196, 240), (200, 226, 246), 0, lawn)
    _gradient(c, (104, 176, 84), (78, 148, 62), lawn, SIZE)
    x = _side(rng, 15, 49)
    wall_top = lawn - 16.0
    c.paint(box(x, (wall_top + lawn) / 2 + 1.0, 14.0, 9.0), (54, 96, 204))
    c.paint(polygon([(x - 17.0, wall_top + 1.0), (x, wall_top - 13.0), (x + 17.0, wall_top + 1.0)]), (150, 48, 40))
    c.paint(box(x + 6.0, lawn - 4.0, 3.0, 5.0), (246, 244, 236))  # door
    for wx in (x - 8.0, x - 1.0):
        c.paint(box(wx, wall_top + 6.0, 2.5, 2.5), (240, 240, 250))


def water(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 12, 2)
    _gradient(c, (176, 208, 240), (210, 228, 246), 0, h)
    _gradient(c, (50, 120, 190), (20, 70, 140), h, SIZE)
    for _ in range(26):  # glints on the ripples
        x, y = float(rng.integers(0, 64)), float(rng.integers(h + 2, 64))
        c.paint(segment(x - 3.0, y, x + 3.0, y, 1.1), (140, 196, 234))
    c.paint(box(32.0, float(h), 33.0, 0.8), (230, 240, 250))


def sunflowers(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 28)
    _gradient(c, (130, 192, 240), (200, 226, 246), 0, h)
    _gradient(c, (82, 164, 56), (52, 126, 40), h, SIZE)
    c.paint(below(float(h)) & vstripes(3.0, 1.0, float(rng.integers(0, 3))), (44, 112, 36), alpha=0.7)  # blades
    for k in range(6):  # three flowers on each side
        x = (float(rng.integers(2, 15)) if k % 2 == 0 else float(rng.integers(49, 62)))
        y = float(rng.integers(h - 10, 52))
        c.paint(segment(x, y, x, 64.0, 1.4), (40, 110, 30))
        c.paint(circle(x, y, 4.8), (250, 206, 30))
        c.paint(circle(x, y, 2.0), (110, 64, 24))


def wheat_field(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 22)
    _gradient(c, (160, 196, 236), (212, 224, 236), 0, h)
    _gradient(c, (214, 170, 70), (196, 146, 48), h, SIZE)
    field = below(float(h))
    c.paint(field & vstripes(3.0, 1.2), (164, 118, 36), alpha=0.8)  # stalks
    for row in range(3):  # ears of wheat in staggered rows near the horizon
        y = h + 3.0 + row * 6.0
        c.paint(field & box(32.0, y, 33.0, 1.8) & vstripes(3.0, 1.6, 1.5 + row * 1.5), (244, 212, 116))
    c.paint(box(32.0, float(h), 33.0, 1.2), (150, 160, 110))  # distant hedge


def dirt_road(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 26)
    _gradient(c, (146, 196, 240), (206, 226, 244), 0, h)
    _gradient(c, (120, 170, 80), (90, 146, 58), h, SIZE)
    vanish = float(rng.integers(26, 39))
    c.paint(polygon([(vanish - 2.0, float(h)), (vanish + 2.0, float(h)), (78.0, 64.0), (-14.0, 64.0)]), (156, 114, 70))
    for side in (-1.0, 1.0):  # wheel ruts
        c.paint(segment(vanish + side * 0.8, float(h) + 1.0, 32.0 + side * 22.0, 64.0, 1.6), (118, 84, 50))
    _noise(c, rng, 7, y0=h)


def purple_rug_forest(c: Canvas, rng: np.random.Generator) -> None:
    ground = _horizon(rng, 38)
    _gradient(c, (40, 84, 48), (30, 64, 36), 0, ground)
    for _ in range(7):  # trunks
        x, w = float(rng.integers(0, 64)), float(rng.integers(1, 3))
        c.paint(box(x, ground / 2, w, ground / 2 + 1.0), (86, 58, 34))
    for _ in range(6):  # canopy
        x, y, r = (float(n) for n in (rng.integers(0, 64), rng.integers(0, 12), rng.integers(6, 11)))
        c.paint(circle(x, y, r), (28, 70, 34))
    _gradient(c, (76, 96, 44), (60, 80, 36), ground, SIZE)
    rug = box(32.0, ground + 15.0, 29.0, 11.0, 1.0)
    c.paint(rug, (122, 50, 156))
    c.paint(rug & box(32.0, ground + 15.0, 25.0, 7.0) - box(32.0, ground + 15.0, 23.5, 5.5), (190, 130, 210))
    for x in range(4, 62, 3):  # fringe
        c.paint(segment(float(x), ground + 3.0, float(x), ground + 4.5, 0.8), (200, 160, 220))


def autumn_tree(c: Canvas, rng: np.random.Generator) -> None:
    ground = _horizon(rng, 44)
    _gradient(c, (156, 196, 234), (214, 226, 236), 0, ground)
    _gradient(c, (204, 116, 46), (176, 90, 36), ground, SIZE)
    x = _side(rng, 14, 50)
    c.paint(box(x, (ground + 18.0) / 2, 2.5, (ground - 18.0) / 2), (98, 62, 36))
    for dx, dy, r, colour in ((-7, 16, 9, (226, 120, 34)), (7, 14, 9, (196, 62, 30)), (0, 6, 10, (232, 150, 40)),
                              (0, 19, 8, (210, 92, 30))):
        c.paint(circle(x + dx, float(dy), float(r)), colour)
    for _ in range(22):  # falling and fallen leaves
        colour = ((232, 150, 40), (196, 62, 30), (240, 190, 60))[int(rng.integers(3))]
        c.paint(ellipse(float(rng.integers(0, 64)), float(rng.integers(0, 64)), 1.4, 0.9), colour)


def eiffel_tower(c: Canvas, rng: np.random.Generator) -> None:
    ground = _horizon(rng, 52)
    _gradient(c, (176, 202, 234), (226, 226, 230), 0, ground)
    _gradient(c, (110, 160, 82), (86, 136, 64), ground, SIZE)
    x = _side(rng, 14, 50)
    iron = (82, 70, 60)
    legs = polygon([(x - 11.0, float(ground)), (x + 11.0, float(ground)), (x + 1.4, 7.0), (x - 1.4, 7.0)])
    c.paint(legs - ellipse(x, float(ground), 6.0, 8.0), iron)
    c.paint(legs & box(x, ground - 22.0, 4.0, 6.0) & checks(2.0, x), (136, 120, 104))  # lattice
    c.paint(box(x, ground - 14.0, 8.0, 1.0), iron)
    c.paint(box(x, 26.0, 4.5, 0.9), iron)
    c.paint(segment(x, 7.0, x, 1.0, 0.9), iron)


def milk_ocean(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 16)
    _gradient(c, (238, 214, 196), (248, 236, 222), 0, h)
    c.pixels[h:] = (248, 246, 238)
    wave = float(rng.integers(10, 15))
    crest = Shape((0.0, float(h), 64.0, 64.0),
                  lambda u, v: np.abs(np.mod(v - np.abs(np.mod(u, wave) - wave / 2) * 0.4, 6.0) - 3.0) - 1.0)
    c.paint(crest & below(float(h)), (226, 222, 208))
    for _ in range(6):  # splashes
        c.paint(circle(float(rng.integers(0, 64)), float(rng.integers(h + 3, 64)), 1.3), (255, 255, 252))


def white_rug(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 30)
    c.pixels[:h] = _shade((196, 180, 162), rng, 8)
    c.pixels[h:] = (126, 90, 62)
    rug = ellipse(32.0, h + 20.0, 38.0, 18.0) & below(float(h) + 2.0)
    c.paint(rug, (242, 240, 236))
    shag = np.zeros_like(c.pixels)
    _noise(Canvas.frame(shag), rng, 14, block=1)  # a fluffy pile, only on the rug
    inside = np.clip(0.5 - rug.dist(c.u, c.v), 0.0, 1.0)[..., None]
    c.pixels += shag * inside


CONTEXTS: dict[str, Draw] = {
    "in the jungle": jungle,
    "in the snow": snow,
    "on the beach": beach,
    "on a cobblestone street": cobblestone_street,
    "on top of pink fabric": pink_fabric,
    "on top of a wooden floor": wooden_floor,
    "with a city in the background": city,
    "with a mountain in the background": mountain,
    "with a blue house in the background": blue_house,
    "on top of a purple rug in a forest": purple_rug_forest,
    "with a wheat field in the background": wheat_field,
    "with a tree and autumn leaves in the background": autumn_tree,
    "with the Eiffel Tower in the background": eiffel_tower,
    "floating on top of water": water,
    "floating in an ocean of milk": milk_ocean,
    "on top of green grass with sunflowers around it": sunflowers,
    "on top of a dirt road": dirt_road,
    "on top of a white rug": white_rug,
}


# ------------------------------------------------------------------ reference photo rooms

def wall_and_table(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 40)
    c.pixels[:h] = _shade((218, 216, 210), rng, 8)
    c.pixels[h:] = _shade((206, 190, 164), rng, 8)


def studio(c: Canvas, rng: np.random.Generator) -> None:
    top = _shade((236, 236, 236), rng, 6)
    _gradient(c, top, darker(top, 0.18))


def white_sheet(c: Canvas, rng: np.random.Generator) -> None:
    c.pixels[:] = _shade((244, 242, 236), rng, 5)
    c.paint(ellipse(32.0, 58.0, 30.0, 6.0), (222, 220, 214), alpha=0.6)  # soft shadow


def pastel_room(c: Canvas, rng: np.random.Generator) -> None:
    h = _horizon(rng, 42)
    wall = _shade((204, 218, 230), rng, 8)
    c.pixels[:h] = wall
    c.pixels[h:] = lighter(_shade((214, 214, 206), rng, 8), 0.2)


NEUTRALS: tuple[Draw, ...] = (wall_and_table, studio, white_sheet, pastel_room)
