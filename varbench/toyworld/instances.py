"""What an instance of a toyworld class is, how it is drawn from its seed, and how its
pattern is painted (the one piece of drawing every class shares).

An instance is fixed by (class name, instance id): a Generator seeded by the crc32 of
the class name and the id draws its colours, its pattern with that pattern's exact
marks (where the spots are, how wide the stripes), and one variant of each of the
class's parts (ear shape, spout, laces...). Every render of it therefore shows the
same details, and two instances of a class differ in several of them.

Ids 0 .. HELD_OUT_START - 1 are for pretraining (the sampler draws from 0 .. N - 1,
N < HELD_OUT_START); ids from HELD_OUT_START up are the held-out subjects of the
`toyworld` dataset, which pretraining can never see.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from varbench.toyworld.canvas import Canvas, Colour, Shape, box, checks, circle, hstripes, vstripes

HELD_OUT_START = 1_000_000

# Colours instances are drawn from (each jittered a little per instance).
FUR: tuple[Colour, ...] = (
    (206, 152, 84), (122, 76, 40), (70, 46, 28), (38, 34, 32), (238, 234, 224),
    (232, 212, 168), (140, 140, 146), (214, 120, 52), (222, 176, 86),
)
VIVID: tuple[Colour, ...] = (
    (200, 42, 40), (232, 122, 30), (232, 198, 40), (50, 158, 72), (30, 148, 150),
    (42, 82, 200), (32, 42, 112), (132, 60, 172), (230, 112, 172), (122, 72, 36),
    (40, 40, 46), (236, 236, 230), (132, 132, 138), (226, 206, 160), (150, 200, 52),
    (122, 26, 48),
)
ACCENT: tuple[Colour, ...] = (
    (30, 30, 36), (236, 236, 232), (200, 40, 40), (40, 80, 200), (236, 190, 40),
    (40, 150, 80), (140, 90, 50), (160, 160, 166),
)
JITTER = 14  # per channel, so two instances of the same base colour still differ


@dataclass(frozen=True)
class Instance:
    class_name: str
    instance_id: int
    body: Colour
    secondary: Colour  # the pattern's colour, pockets, labels...
    accent: Colour  # small parts: collars, laces, straps, holders
    pattern: str  # one of the class's `patterns`
    parts: tuple[tuple[str, str], ...]  # (part, variant) for each of the class's parts
    # The pattern's exact marks, in hundredths of the body's half size: spots as
    # (x, y, radius); stripes and checks use the first as (period, offset, _).
    marks: tuple[tuple[int, int, int], ...]

    def part(self, name: str) -> str:
        return dict(self.parts)[name]


@dataclass(frozen=True)
class ClassSpec:
    """A class of the world: its noun, whether it is live, how instances vary and are drawn.

    `draw(canvas, instance, dress)` paints an instance and returns its body `Shape` (where
    "shiny" and "wet" put their highlights and drops). Live classes call `dress.torso`
    and `dress.head` with their `Anatomy` at the right moments, so clothes go over the
    body but under the head, and hats over the head.
    """

    name: str
    live: bool
    draw: Callable[[Canvas, Instance, Any], Shape]
    parts: tuple[tuple[str, tuple[str, ...]], ...]
    patterns: tuple[str, ...]
    palette: tuple[Colour, ...]


def draw_instance(spec: ClassSpec, instance_id: int) -> Instance:
    """The instance `instance_id` of `spec`: every choice from one seeded Generator."""
    if instance_id < 0:
        raise ValueError(f"instance ids are non-negative, got {instance_id}")
    rng = np.random.default_rng([zlib.crc32(spec.name.encode()), instance_id])
    # Two different palette entries, from integers only (their stream is the most stable).
    first = int(rng.integers(len(spec.palette)))
    second = (first + 1 + int(rng.integers(len(spec.palette) - 1))) % len(spec.palette)
    body = _jitter(spec.palette[first], rng)
    secondary = _jitter(spec.palette[second], rng)
    accent = ACCENT[int(rng.integers(len(ACCENT)))]
    pattern = spec.patterns[int(rng.integers(len(spec.patterns)))]
    parts = tuple((name, options[int(rng.integers(len(options)))]) for name, options in spec.parts)
    marks = _marks(pattern, rng)
    return Instance(spec.name, instance_id, body, secondary, accent, pattern, parts, marks)


def _jitter(colour: Colour, rng: np.random.Generator) -> Colour:
    shift = rng.integers(-JITTER, JITTER + 1, size=3)
    return tuple(int(min(max(c + s, 0), 255)) for c, s in zip(colour, shift))  # type: ignore[return-value]


def _marks(pattern: str, rng: np.random.Generator) -> tuple[tuple[int, int, int], ...]:
    if pattern == "spots":
        count = int(rng.integers(3, 7))
        return tuple((int(rng.integers(-75, 76)), int(rng.integers(-70, 71)), int(rng.integers(14, 30)))
                     for _ in range(count))
    # stripes, checks, band: a size and an offset (hundredths of the half size)
    return ((int(rng.integers(22, 40)), int(rng.integers(0, 100)), int(rng.integers(-30, 31))),)


def paint_pattern(c: Canvas, inst: Instance, body: Shape, vertical: bool = False) -> None:
    """The instance's pattern in its secondary colour, inside `body` and scaled to it
    (so the same marks sit in the same places on every render)."""
    u0, v0, u1, v1 = body.bbox
    cx, cy, hw, hh = (u0 + u1) / 2, (v0 + v1) / 2, (u1 - u0) / 2, (v1 - v0) / 2
    size, offset, shift = inst.marks[0]
    if inst.pattern == "spots":
        for x, y, r in inst.marks:
            c.paint(body & circle(cx + x * hw / 100, cy + y * hh / 100, r * min(hw, hh) / 100), inst.secondary)
    elif inst.pattern == "stripes":
        period = size / 4  # 5.5 .. 10 design units
        stripes = vstripes if vertical else hstripes
        c.paint(body & stripes(period, period * 0.45, offset * period / 100), inst.secondary)
    elif inst.pattern == "checks":
        c.paint(body & checks(size / 5, offset / 20, offset / 30), inst.secondary)
    elif inst.pattern == "band":
        c.paint(body & box(cx, cy + shift * hh / 100, hw + 1, max(2.5, hh * 0.22)), inst.secondary)
