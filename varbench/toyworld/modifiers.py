"""Modifiers: DreamBench's property prompts ("a red {}", "a shiny {}") for every class and
its accessory and outfit prompts ("a {} wearing a red hat") for the live ones.

A modifier changes the drawing visibly, in up to three ways: it recolours the instance
before drawing ("red", "purple", "wet" darkens), dresses a live subject through the
`Dress` hooks its drawing calls (clothes over the torso, hats and glasses over the
head, placed by the subject's `Anatomy`), or paints over the finished body ("shiny"
highlights, "wet" drops). Its `name` is the phrase as prompts write it; `before` says
whether it goes before the class noun ("a red dog") or after it ("a dog wearing ...").
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from varbench.toyworld.animals import Anatomy
from varbench.toyworld.canvas import (
    Canvas, Colour, Shape, above, box, circle, darker, ellipse, hstripes, lighter, polygon, ring, segment,
)
from varbench.toyworld.instances import Instance

RED, PURPLE, YELLOW = (204, 32, 38), (128, 52, 178), (238, 204, 40)
WHITE, BLACK, GOLD = (248, 248, 246), (26, 26, 30), (226, 190, 70)
PINK, NAVY = (240, 96, 174), (34, 46, 104)
RAINBOW = ((220, 40, 40), (240, 140, 30), (240, 214, 40), (50, 170, 70), (50, 100, 210), (130, 60, 180))


@dataclass(frozen=True)
class Modifier:
    name: str
    before: bool = False  # the phrase goes before the class noun
    live_only: bool = False
    recolour: Callable[[Instance], Instance] | None = None
    clothes: Callable[[Canvas, Anatomy], None] | None = None
    headwear: Callable[[Canvas, Anatomy], None] | None = None
    overlay: Callable[[Canvas, Shape, np.random.Generator], None] | None = None

    # the `Dress` protocol of `animals`
    def torso(self, c: Canvas, body: Anatomy) -> None:
        if self.clothes is not None:
            self.clothes(c, body)

    def head(self, c: Canvas, body: Anatomy) -> None:
        if self.headwear is not None:
            self.headwear(c, body)


# ------------------------------------------------------------------ properties

def _body_colour(colour: Colour) -> Callable[[Instance], Instance]:
    return lambda inst: dataclasses.replace(inst, body=colour)


def _soaked(inst: Instance) -> Instance:
    return dataclasses.replace(inst, body=darker(inst.body, 0.3), secondary=darker(inst.secondary, 0.3))


def _polished(inst: Instance) -> Instance:
    return dataclasses.replace(inst, body=lighter(inst.body, 0.12))


def _sparkle(c: Canvas, x: float, y: float, size: float) -> None:
    c.paint(segment(x - size, y, x + size, y, 0.9) | segment(x, y - size, x, y + size, 0.9), WHITE)


def _highlights(c: Canvas, body: Shape, rng: np.random.Generator) -> None:
    """Glossy shading low on the body, a specular streak high on it, a glint and two
    sparkles (the shading keeps "shiny" visible on white things too)."""
    u0, v0, u1, v1 = body.bbox
    w, h = u1 - u0, v1 - v0
    c.paint(body - ellipse(u0 + 0.42 * w, v0 + 0.4 * h, 0.5 * w, 0.5 * h), (0, 0, 0), alpha=0.3)
    c.paint(body & ellipse(u0 + 0.3 * w, v0 + 0.3 * h, 0.09 * w + 1.0, 0.22 * h), WHITE, alpha=0.85)
    c.paint(body & circle(u0 + 0.3 * w, v0 + 0.62 * h, 0.05 * w + 0.8), WHITE, alpha=0.85)
    _sparkle(c, u1 - 0.15 * w, v0 + 0.2 * h, 3.0)
    _sparkle(c, u0 + 0.1 * w, v0 + 0.85 * h, 2.2)


def _drops(c: Canvas, body: Shape, rng: np.random.Generator) -> None:
    """Water drops, each with a glint, and drips running down the body."""
    u0, v0, u1, v1 = body.bbox
    for _ in range(9):
        x = u0 + (u1 - u0) * float(rng.integers(10, 91)) / 100
        y = v0 + (v1 - v0) * float(rng.integers(10, 91)) / 100
        r = float(rng.integers(14, 23)) / 10
        c.paint(body & circle(x, y, r), (176, 212, 246))
        c.paint(circle(x - r * 0.35, y - r * 0.35, r * 0.35), WHITE)
    for _ in range(3):
        x = u0 + (u1 - u0) * float(rng.integers(20, 81)) / 100
        y = v0 + (v1 - v0) * float(rng.integers(20, 61)) / 100
        c.paint(body & segment(x, y, x, y + 6.0, 1.2), (176, 212, 246))


# ------------------------------------------------------------------ headwear

def _crown(a: Anatomy) -> tuple[float, float, float]:
    """Where a hat sits (x, y of the top of the head) and a size unit (1 for the dog's head)."""
    x, y, r = a.head
    return x, y - r * 0.8, r / 8.0


def _red_hat(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    c.paint(box(x, top - 3.6 * k, 5.2 * k, 4.2 * k, 1.8 * k), RED)
    c.paint(box(x, top + 0.4 * k, 9.0 * k, 1.5 * k, 1.2 * k), darker(RED, 0.2))


def _santa_hat(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    tip = (x + 4.0 * k, top - 12.0 * k)
    c.paint(polygon([(x - 7.0 * k, top + 0.5 * k), (x + 7.0 * k, top + 0.5 * k), tip]), RED)
    c.paint(box(x, top + 0.8 * k, 8.0 * k, 2.0 * k, 1.6 * k), WHITE)
    c.paint(circle(*tip, 2.4 * k), WHITE)


def _top_hat_and_monocle(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    c.paint(box(x, top - 6.0 * k, 5.0 * k, 6.5 * k, 0.6 * k), BLACK)
    c.paint(box(x, top - 1.6 * k, 5.0 * k, 1.1 * k), (150, 30, 40))
    c.paint(box(x, top + 0.6 * k, 9.0 * k, 1.3 * k, 1.0 * k), BLACK)
    ex, ey = a.eyes[-1]
    c.paint(ring(ex, ey, a.eye_r * 1.8, 1.1), GOLD)
    c.paint(segment(ex, ey + a.eye_r * 1.8, ex - 2.0, ey + 9.0, 0.8), GOLD)


def _wizard_hat(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    c.paint(polygon([(x - 7.5 * k, top + 1.0 * k), (x + 7.5 * k, top + 1.0 * k), (x, top - 17.0 * k)]), PURPLE)
    c.paint(ellipse(x, top + 1.0 * k, 10.0 * k, 1.8 * k), darker(PURPLE, 0.2))
    c.paint(circle(x - 1.5 * k, top - 5.0 * k, 1.5 * k), YELLOW)
    c.paint(circle(x + 1.5 * k, top - 10.0 * k, 1.0 * k), YELLOW)


def _chef_hat(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    c.paint(box(x, top - 3.5 * k, 5.0 * k, 4.0 * k, 0.8 * k), WHITE)
    for dx in (-3.5, 0.0, 3.5):
        c.paint(circle(x + dx * k, top - 8.5 * k, 3.6 * k), WHITE)
    c.paint(box(x, top - 0.2 * k, 5.2 * k, 1.0 * k), (214, 214, 214))


def _helmet(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    c.paint(ellipse(x, top + 1.0 * k, 7.0 * k, 6.5 * k) & above(top + 1.0 * k), RED)
    c.paint(ellipse(x, top + 1.0 * k, 10.5 * k, 1.7 * k), darker(RED, 0.25))
    c.paint(circle(x, top - 2.5 * k, 1.6 * k), GOLD)


def _police_cap(c: Canvas, a: Anatomy) -> None:
    x, top, k = _crown(a)
    c.paint(box(x, top - 2.5 * k, 6.5 * k, 3.0 * k, 1.0 * k), NAVY)
    c.paint(ellipse(x + (0.0 if a.frontal else 4.0 * k), top + 0.8 * k, 6.5 * k, 1.4 * k), BLACK)
    c.paint(circle(x, top - 2.5 * k, 1.3 * k), GOLD)


def _pink_glasses(c: Canvas, a: Anatomy) -> None:
    radius = a.eye_r * 1.9
    for ex, ey in a.eyes:
        c.paint(circle(ex, ey, radius), PINK, alpha=0.35)
        c.paint(ring(ex, ey, radius, 1.3), PINK)
    if a.frontal:
        (x0, y0), (x1, y1) = a.eyes
        c.paint(segment(x0 + radius, y0, x1 - radius, y1, 1.1), PINK)
    else:  # a temple arm back towards the ear
        ex, ey = a.eyes[0]
        c.paint(segment(ex - radius, ey, a.head[0] - a.head[2] * 0.8, ey - 0.5, 1.0), PINK)


def _rainbow_scarf(c: Canvas, a: Anatomy) -> None:
    x0, y0, x1, y1 = a.neck
    bands = len(RAINBOW)
    for i, colour in enumerate(RAINBOW):  # around the neck, one colour after another
        t0, t1 = i / bands, (i + 1) / bands
        c.paint(segment(x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0, x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1, 5.5),
                colour)
    hx, hy = x0 + (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.3
    for i, colour in enumerate(RAINBOW):  # the hanging end
        c.paint(segment(hx - 0.4 * i, hy + 2.2 * i, hx - 0.4 * (i + 1), hy + 2.2 * (i + 1), 4.2), colour)


# ------------------------------------------------------------------ clothes

def _shirt(colour: Colour) -> Callable[[Canvas, Anatomy], None]:
    def clothes(c: Canvas, a: Anatomy) -> None:
        c.paint(a.torso, colour)
    return clothes


def _chef_jacket(c: Canvas, a: Anatomy) -> None:
    c.paint(a.torso, WHITE)
    u0, v0, u1, v1 = a.torso.bbox
    x = (u0 + u1) / 2
    for y in (v0 + (v1 - v0) * 0.35, v0 + (v1 - v0) * 0.6):
        c.paint(circle(x, y, 1.2), BLACK)


def _fire_coat(c: Canvas, a: Anatomy) -> None:
    c.paint(a.torso, (78, 70, 50))
    c.paint(a.torso & hstripes(9.0, 2.2, a.torso.bbox[1] + 2.0), (236, 216, 60))


def _police_shirt(c: Canvas, a: Anatomy) -> None:
    c.paint(a.torso, (52, 80, 156))
    u0, v0, u1, v1 = a.torso.bbox
    c.paint(circle(u0 + (u1 - u0) * 0.65, v0 + (v1 - v0) * 0.35, 1.8), GOLD)


def _wizard_robe(c: Canvas, a: Anatomy) -> None:
    c.paint(a.torso, PURPLE)
    c.paint(a.torso & hstripes(12.0, 1.2, a.torso.bbox[1] + 4.0), YELLOW)


PROPERTIES: tuple[Modifier, ...] = (
    Modifier("red", before=True, recolour=_body_colour(RED)),
    Modifier("purple", before=True, recolour=_body_colour(PURPLE)),
    Modifier("shiny", before=True, recolour=_polished, overlay=_highlights),
    Modifier("wet", before=True, recolour=_soaked, overlay=_drops),
)
ACCESSORIES: tuple[Modifier, ...] = (
    Modifier("wearing a red hat", live_only=True, headwear=_red_hat),
    Modifier("wearing a santa hat", live_only=True, headwear=_santa_hat),
    Modifier("wearing a rainbow scarf", live_only=True, headwear=_rainbow_scarf),
    Modifier("wearing a black top hat and a monocle", live_only=True, headwear=_top_hat_and_monocle),
    Modifier("wearing pink glasses", live_only=True, headwear=_pink_glasses),
    Modifier("wearing a yellow shirt", live_only=True, clothes=_shirt(YELLOW)),
    Modifier("in a chef outfit", live_only=True, clothes=_chef_jacket, headwear=_chef_hat),
    Modifier("in a firefighter outfit", live_only=True, clothes=_fire_coat, headwear=_helmet),
    Modifier("in a police outfit", live_only=True, clothes=_police_shirt, headwear=_police_cap),
    Modifier("in a purple wizard outfit", live_only=True, clothes=_wizard_robe, headwear=_wizard_hat),
)
MODIFIERS: dict[str, Modifier] = {m.name: m for m in PROPERTIES + ACCESSORIES}
