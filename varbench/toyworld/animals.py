"""The live classes: a dog standing in profile and a cat sitting face on.

Two unlike silhouettes on purpose, so the class is visible at 64 px from the outline
alone. Each drawing reports its `Anatomy` (head, eyes, neck, torso) to the scene's
`Dress` (see `modifiers`), which puts clothes over the body and hats and glasses over
the head. Design units: the subject fills -32..32 each way, v grows downwards, the dog
faces +u (a flipped pose mirrors it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from varbench.toyworld.canvas import (
    Canvas, Colour, Shape, above, below, box, circle, darker, ellipse, lighter, mix, polygon, polyline, right_of,
    segment,
)
from varbench.toyworld.instances import FUR, ClassSpec, Instance, paint_pattern

INK = (28, 24, 24)
CREAM = (242, 236, 222)
PINK = (230, 150, 160)
IRIS = {"green": (90, 170, 60), "yellow": (225, 190, 40), "blue": (70, 140, 220)}
GROUND = 27  # where feet and paws rest


@dataclass(frozen=True)
class Anatomy:
    """Where clothes and accessories go, in the subject's design units."""

    head: tuple[float, float, float]  # centre x, y and radius
    eyes: tuple[tuple[float, float], ...]  # the visible eyes' centres
    eye_r: float
    neck: tuple[float, float, float, float]  # a line across the neck (a scarf's path)
    torso: Shape  # what a shirt, coat or robe covers
    frontal: bool  # facing the viewer (else in profile, facing +u)


class Dress(Protocol):
    def torso(self, c: Canvas, body: Anatomy) -> None: ...

    def head(self, c: Canvas, body: Anatomy) -> None: ...


class NoDress:
    def torso(self, c: Canvas, body: Anatomy) -> None:
        pass

    def head(self, c: Canvas, body: Anatomy) -> None:
        pass


NO_DRESS = NoDress()


# ------------------------------------------------------------------ dog

def draw_dog(c: Canvas, inst: Instance, dress: Dress = NO_DRESS) -> Shape:
    """Body, four legs, tail, neck, head with snout, ears and an eye; optional collar."""
    by = 0.0 if inst.part("legs") == "long" else 6.0  # long legs lift the body
    hx, hy = 17.0, by - 15.0
    fur, shade = inst.body, darker(inst.body, 0.22)
    leg_top = by + 4
    for x, colour in ((-16.0, shade), (6.0, shade), (-11.0, fur), (12.0, fur)):  # far legs darker
        c.paint(box(x, (leg_top + GROUND) / 2, 2.7, (GROUND - leg_top) / 2, 1.6), colour)
    _dog_tail(c, inst.part("tail"), by, fur)
    body = ellipse(-4.0, by, 19.0, 10.0)
    c.paint(body, fur)
    paint_pattern(c, inst, body, vertical=True)
    neck = segment(8.0, by - 3.0, hx - 1.0, hy + 3.0, 10.0)
    c.paint(neck, fur)
    if inst.part("collar") == "collar":
        c.paint(segment(hx - 7.0, hy + 7.0, hx + 1.0, hy + 8.0, 3.0), inst.accent)
    anatomy = Anatomy(head=(hx, hy, 8.0), eyes=((hx + 2.5, hy - 2.0),), eye_r=1.8,
                      neck=(hx - 9.0, hy + 7.0, hx + 3.0, hy + 8.5),
                      torso=(body | neck) & right_of(-14.0),
                      frontal=False)
    dress.torso(c, anatomy)
    _dog_head(c, inst, hx, hy, fur)
    dress.head(c, anatomy)
    return body


def _dog_tail(c: Canvas, kind: str, by: float, fur: Colour) -> None:
    if kind == "stub":
        c.paint(segment(-21.0, by - 3.0, -27.0, by - 8.0, 4.5), fur)
    elif kind == "long":
        c.paint(polyline([(-21.0, by - 3.0), (-28.0, by - 10.0), (-30.0, by - 21.0)], 3.4), fur)
    else:  # curled over the back
        c.paint(polyline([(-21.0, by - 4.0), (-27.0, by - 13.0), (-21.0, by - 18.0), (-16.0, by - 13.0)], 3.4), fur)


def _dog_head(c: Canvas, inst: Instance, hx: float, hy: float, fur: Colour) -> None:
    ears = inst.part("ears")
    ear_colour = inst.secondary if inst.pattern == "band" else darker(fur, 0.3)
    if ears == "pointy":  # behind the head
        c.paint(polygon([(hx - 7.0, hy - 3.0), (hx - 4.0, hy - 16.0), (hx + 1.0, hy - 6.0)]), ear_colour)
    elif ears == "round":
        c.paint(circle(hx - 5.0, hy - 7.0, 4.6), ear_colour)
    c.paint(circle(hx, hy, 8.0), fur)
    long_snout = inst.part("snout") == "long"
    sx, rx = (hx + 8.0, 7.5) if long_snout else (hx + 6.0, 5.0)
    c.paint(ellipse(sx, hy + 3.0, rx, 4.3), mix(fur, CREAM, 0.35))
    c.paint(circle(sx + rx - 1.5, hy + 1.2, 2.2), INK)  # nose
    c.paint(circle(hx + 2.5, hy - 2.0, 1.8), INK)  # eye
    if ears == "floppy":  # hangs over the side of the head
        c.paint(ellipse(hx - 4.5, hy + 1.0, 3.6, 7.5), ear_colour)


# ------------------------------------------------------------------ cat

def draw_cat(c: Canvas, inst: Instance, dress: Dress = NO_DRESS) -> Shape:
    """A sitting cat: pear-shaped body, haunches, front legs, tail, round head, ears, eyes."""
    fur = inst.body
    rx = 12.0 if inst.part("build") == "slim" else 15.0
    tail = inst.part("tail")
    if tail != "wrapped":  # behind the body
        width = 6.5 if tail == "bushy" else 4.0
        c.paint(polyline([(rx - 2.0, 24.0), (rx + 9.0, 18.0), (rx + 12.0, 4.0), (rx + 9.0, -4.0)], width),
                darker(fur, 0.12))
    body = ellipse(0.0, 9.0, rx, 18.0)
    haunches = ellipse(-rx * 0.6, 19.0, 8.0, 8.0) | ellipse(rx * 0.6, 19.0, 8.0, 8.0)
    c.paint(body | haunches, fur)
    paint_pattern(c, inst, body)
    if inst.part("bib") == "white":
        c.paint(body & ellipse(0.0, 5.0, 5.5, 10.0), CREAM)
    paw = CREAM if inst.part("bib") == "white" else lighter(fur, 0.15)
    for side in (-1.0, 1.0):
        c.paint(box(side * 3.8, 20.0, 2.9, 7.0, 1.8), fur)
        c.paint(ellipse(side * 3.8, 26.0, 3.3, 1.8), paw)
    if tail == "wrapped":  # curls round the front paws
        c.paint(polyline([(rx - 1.0, 24.0), (rx * 0.3, 28.0), (-rx * 0.7, 27.5)], 4.2), darker(fur, 0.12))
    anatomy = Anatomy(head=(0.0, -13.0, 11.0), eyes=((-4.4, -14.5), (4.4, -14.5)), eye_r=2.5,
                      neck=(-9.0, -3.0, 9.0, -3.0), torso=(body | haunches) & below(-5.0) & above(20.0),
                      frontal=True)
    dress.torso(c, anatomy)
    _cat_head(c, inst, fur)
    dress.head(c, anatomy)
    return body


def _cat_head(c: Canvas, inst: Instance, fur: Colour) -> None:
    ears = inst.part("ears")
    for side in (-1.0, 1.0):
        if ears == "folded":
            c.paint(ellipse(side * 6.5, -21.5, 4.5, 2.6), darker(fur, 0.15))
            continue
        tip = -32.0 if ears == "large" else -27.0
        c.paint(polygon([(side * 10.5, -17.0), (side * 9.0, tip), (side * 2.0, -22.0)]), fur)
        c.paint(polygon([(side * 8.5, -19.0), (side * 8.6, tip + 4.0), (side * 4.0, -21.5)]), PINK)
    head = circle(0.0, -13.0, 11.0)
    c.paint(head, fur)
    if inst.pattern == "stripes":  # tabby forehead
        for x in (-3.0, 0.0, 3.0):
            c.paint(segment(x, -23.0, x * 0.7, -18.0, 1.6), inst.secondary)
    elif inst.pattern == "spots":  # a patch over one eye
        x, y, _ = inst.marks[0]
        c.paint(head & circle(5.0 if x > 0 else -5.0, -17.0, 5.5), inst.secondary)
    muzzle = CREAM if inst.part("bib") == "white" else lighter(fur, 0.25)
    for side in (-1.0, 1.0):
        c.paint(circle(side * 2.3, -8.3, 2.7), muzzle)
    iris = IRIS[inst.part("eyes")]
    for side in (-1.0, 1.0):
        c.paint(ellipse(side * 4.4, -14.5, 2.6, 2.4), iris)
        c.paint(ellipse(side * 4.4, -14.5, 0.8, 2.0), INK)
    c.paint(polygon([(-1.7, -11.0), (1.7, -11.0), (0.0, -9.0)]), PINK)  # nose


DOG = ClassSpec(
    name="dog", live=True, draw=draw_dog,
    parts=(("ears", ("pointy", "floppy", "round")), ("tail", ("stub", "long", "curled")),
           ("legs", ("long", "short")), ("snout", ("long", "short")), ("collar", ("collar", "none"))),
    patterns=("plain", "spots", "stripes", "band"), palette=FUR,
)
CAT = ClassSpec(
    name="cat", live=True, draw=draw_cat,
    parts=(("ears", ("large", "small", "folded")), ("eyes", ("green", "yellow", "blue")),
           ("tail", ("up", "wrapped", "bushy")), ("build", ("slim", "round")), ("bib", ("white", "none"))),
    patterns=("plain", "spots", "stripes"), palette=FUR,
)
