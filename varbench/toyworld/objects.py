"""The object classes: backpack, teapot, vase, can, sneaker, candle.

Each is a handful of boxes, ellipses, capsules and convex polygons in design units
(-32..32 each way, v down), with two or more discrete part variants so instances of a
class differ in shape as well as colour. A drawing returns its body `Shape`, where the
"shiny" and "wet" modifiers put highlights and drops.
"""
from __future__ import annotations

from typing import Any

from varbench.toyworld.canvas import (
    Canvas, Shape, above, box, circle, darker, ellipse, left_of, lighter, polygon, polyline, right_of, ring,
    segment,
)
from varbench.toyworld.instances import VIVID, ClassSpec, Instance, paint_pattern

METAL = (200, 202, 208)
SHADOW = (60, 60, 66)
FLAME, FLAME_CORE = (250, 206, 60), (240, 120, 30)
GLASS = (215, 235, 245)


def draw_backpack(c: Canvas, inst: Instance, dress: Any = None) -> Shape:
    """A rounded pack with a top loop, a flap (or a zip), a front pocket, side straps."""
    if inst.part("straps") == "side":
        for side in (-1.0, 1.0):
            c.paint(box(side * 19.5, 6.0, 2.4, 17.0, 1.2), inst.accent)
    c.paint(ring(0.0, -21.0, 5.5, 2.4) & above(-20.0), inst.accent)  # carry loop
    body = box(0.0, 4.0, 18.0, 24.0, 8.0)
    c.paint(body, inst.body)
    paint_pattern(c, inst, body)
    flap = inst.part("flap")
    flap_colour = darker(inst.body, 0.25)
    if flap == "round":
        c.paint(body & ellipse(0.0, -14.0, 18.5, 12.0), flap_colour)
    elif flap == "square":
        c.paint(body & above(-5.0), flap_colour)
        c.paint(box(0.0, -5.0, 3.0, 2.5, 0.6), inst.accent)  # buckle
    else:  # a zip arc
        c.paint(ring(0.0, 6.0, 15.0, 1.3) & above(-2.0), inst.accent)
    pocket = inst.part("pocket")
    if pocket != "none":
        hw, hh, y = (9.0, 6.5, 17.0) if pocket == "small" else (14.0, 9.0, 14.0)
        c.paint(box(0.0, y, hw, hh, 3.0), inst.secondary)
        c.paint(segment(-hw + 2.5, y - hh + 2.0, hw - 2.5, y - hh + 2.0, 1.2), inst.accent)
    return body


def draw_teapot(c: Canvas, inst: Instance, dress: Any = None) -> Shape:
    """A squat round pot on a foot, with a spout on the right, a handle and a lid."""
    handle = inst.part("handle")
    if handle == "round":
        c.paint(ring(-19.0, 6.0, 7.5, 3.2) & left_of(-14.0), inst.secondary)
    elif handle == "square":
        c.paint((box(-21.0, 6.0, 7.0, 8.5, 2.5) - box(-21.0, 6.0, 3.8, 5.3)) & left_of(-14.0), inst.secondary)
    else:  # a basket handle arching over the lid
        c.paint(ring(0.0, -2.0, 16.0, 2.6) & above(-6.0), inst.secondary)
    spout = inst.part("spout")
    if spout == "straight":
        c.paint(segment(13.0, 10.0, 28.0, -7.0, 5.0), inst.body)
    elif spout == "curved":
        c.paint(polyline([(13.0, 12.0), (23.0, 7.0), (29.0, -4.0)], 4.6), inst.body)
    else:  # short
        c.paint(segment(14.0, 5.0, 24.0, -1.0, 6.0), inst.body)
    c.paint(box(0.0, 23.0, 10.0, 2.5, 1.0), darker(inst.body, 0.25))  # foot
    body = ellipse(0.0, 8.0, 20.0, 15.0)
    c.paint(body, inst.body)
    paint_pattern(c, inst, body)
    lid = inst.part("lid")
    lid_colour = darker(inst.body, 0.2)
    if lid == "dome":
        c.paint(ellipse(0.0, -6.0, 9.5, 5.5) & above(-6.0), lid_colour)
        c.paint(circle(0.0, -12.5, 2.4), inst.accent)
    elif lid == "flat":
        c.paint(box(0.0, -7.5, 10.5, 2.0, 1.0), lid_colour)
        c.paint(circle(0.0, -11.0, 2.6), inst.accent)
    else:  # tall knob
        c.paint(box(0.0, -8.0, 7.5, 2.0, 1.0), lid_colour)
        c.paint(segment(0.0, -10.0, 0.0, -16.0, 2.4), inst.accent)
        c.paint(circle(0.0, -17.0, 2.7), inst.accent)
    return body


def draw_vase(c: Canvas, inst: Instance, dress: Any = None) -> Shape:
    """An amphora, a tall cylinder or a bulb, with a rim and maybe two handles."""
    shape = inst.part("shape")
    if shape == "amphora":
        body = ellipse(0.0, 11.0, 16.0, 16.0) | box(0.0, -10.0, 6.5, 10.0, 2.0)
        top = -20.0
    elif shape == "tall":
        body = box(0.0, 4.0, 11.0, 24.0, 5.0) | box(0.0, -22.0, 7.0, 3.0, 1.0)
        top = -25.0
    else:  # bulb
        body = circle(0.0, 14.0, 14.0) | box(0.0, -5.0, 4.5, 10.0, 1.5)
        top = -15.0
    if inst.part("handles") == "two":
        for side in (-1.0, 1.0):
            c.paint(ring(side * 9.0, top + 9.0, 5.0, 2.2) & (right_of(9.0) if side > 0 else left_of(-9.0)),
                    darker(inst.body, 0.2))
    c.paint(body, inst.body)
    paint_pattern(c, inst, body)
    rim_half = 10.0 if inst.part("rim") == "flared" else 7.5
    c.paint(box(0.0, top, rim_half, 2.0, 1.0), darker(inst.body, 0.25))
    return body


def draw_can(c: Canvas, inst: Instance, dress: Any = None) -> Shape:
    """A drinks can: a cylinder with metal lid and base, a label, maybe a ring pull."""
    hw, hh, y = (12.0, 25.0, 2.0) if inst.part("size") == "tall" else (15.0, 18.0, 9.0)
    top, bottom = y - hh, y + hh
    c.paint(ellipse(0.0, bottom, hw, 3.0), SHADOW)
    body = box(0.0, y, hw, hh, 1.0)
    c.paint(body, inst.body)
    paint_pattern(c, inst, body)
    label = inst.part("label")
    if label == "band":
        c.paint(box(0.0, y, hw, hh * 0.3), inst.secondary)
    elif label == "logo":
        c.paint(circle(0.0, y, hw * 0.62), inst.secondary)
        c.paint(circle(0.0, y, hw * 0.3), inst.accent)
    else:  # a diagonal stripe
        c.paint(body & segment(-hw, y + hh * 0.5, hw, y - hh * 0.5, 5.0), inst.secondary)
    c.paint(body & box(-hw * 0.55, y, 1.6, hh), lighter(inst.body, 0.35), alpha=0.6)  # cylinder shine
    c.paint(ellipse(0.0, top, hw, 3.0), METAL)
    c.paint(ellipse(0.0, top, hw - 2.0, 1.8), darker(METAL, 0.15))
    if inst.part("top") == "pull":
        c.paint(ring(2.5, top - 0.5, 2.2, 1.2), darker(METAL, 0.4))
    return body


def draw_sneaker(c: Canvas, inst: Instance, dress: Any = None) -> Shape:
    """A sneaker in profile, toe at +u: sole, upper (low or high top), laces, toe cap, stripes."""
    sole_colour = {"white": (240, 240, 236), "gum": (196, 140, 80), "black": (36, 36, 40)}[inst.part("sole")]
    upper = box(-7.0, 11.0, 21.0, 7.5, 4.0) | ellipse(13.0, 13.0, 16.0, 6.0)
    if inst.part("height") == "high":
        upper = upper | box(-15.0, 1.0, 11.0, 13.0, 4.0)
    c.paint(upper, inst.body)
    paint_pattern(c, inst, upper)
    if inst.part("toe") == "cap":
        c.paint(upper & right_of(19.0), inst.secondary)
    stripe = inst.part("stripe")
    if stripe == "swoosh":
        c.paint(polyline([(-16.0, 15.0), (2.0, 14.0), (12.0, 9.0)], 3.0), inst.secondary)
    elif stripe == "bars":
        for x in (-10.0, -5.0, 0.0):
            c.paint(segment(x, 16.0, x + 5.0, 6.0, 2.2), inst.secondary)
    lace_top = -9.0 if inst.part("height") == "high" else 5.0
    for k in range(4):  # laces along the tongue
        x = -6.0 + k * 4.5
        y = lace_top + k * (9.0 - lace_top) / 4.0
        c.paint(segment(x - 1.5, y - 1.5, x + 2.0, y + 1.5, 1.6), inst.accent)
    c.paint(box(1.0, 21.0, 29.0, 3.5, 2.0), sole_colour)
    c.paint(box(-27.0, 9.0, 2.0, 5.0, 1.0), inst.accent)  # heel tab
    return upper


def draw_candle(c: Canvas, inst: Instance, dress: Any = None) -> Shape:
    """A pillar, taper or jar candle with a wick, a flame and a holder."""
    shape = inst.part("shape")
    holder = inst.part("holder")
    base = 24.0 if holder != "none" else 27.0
    if shape == "pillar":
        hw, top = 11.0, -6.0
    elif shape == "taper":
        hw, top = 4.5, -14.0
    else:  # jar: a short wide candle in a glass
        hw, top = 12.0, 6.0
    if holder == "plate":
        c.paint(ellipse(0.0, 26.5, 17.0, 3.0), inst.accent)
    elif holder == "stick":
        c.paint(box(0.0, 24.0, 3.5, 4.0), inst.accent)
        c.paint(ellipse(0.0, 28.0, 11.0, 2.5), inst.accent)
        c.paint(ellipse(0.0, 20.5, 8.0, 2.0), inst.accent)
    body = box(0.0, (top + base) / 2, hw, (base - top) / 2, 1.5)
    c.paint(body, inst.body)
    paint_pattern(c, inst, body)
    c.paint(ellipse(0.0, top, hw, 1.8), lighter(inst.body, 0.25))
    for x, length in ((-hw * 0.6, 5.0), (hw * 0.5, 3.0)):  # wax drips
        c.paint(segment(x, top, x, top + length, 1.8), lighter(inst.body, 0.25))
    if shape == "jar":
        glass = box(0.0, (top - 10.0 + base) / 2, hw + 3.0, (base - top + 10.0) / 2, 3.0)
        c.paint(glass - box(0.0, (top - 10.0 + base) / 2, hw + 1.5, (base - top + 10.0) / 2 - 1.5, 2.0), GLASS)
        c.paint(glass, GLASS, alpha=0.25)
    c.paint(segment(0.0, top, 0.0, top - 3.5, 1.2), SHADOW)  # wick
    tall = inst.part("flame") == "tall"
    tip = top - (17.0 if tall else 12.0)
    c.paint(circle(0.0, top - 6.0, 3.6) | polygon([(-3.5, top - 6.0), (3.5, top - 6.0), (0.0, tip)]), FLAME)
    c.paint(ellipse(0.0, top - 5.5, 1.6, 2.8), FLAME_CORE)
    return body


BACKPACK = ClassSpec(
    name="backpack", live=False, draw=draw_backpack,
    parts=(("flap", ("round", "square", "zip")), ("pocket", ("small", "large", "none")),
           ("straps", ("side", "none"))),
    patterns=("plain", "spots", "stripes", "checks", "band"), palette=VIVID,
)
TEAPOT = ClassSpec(
    name="teapot", live=False, draw=draw_teapot,
    parts=(("spout", ("straight", "curved", "short")), ("handle", ("round", "square", "top")),
           ("lid", ("dome", "flat", "tall"))),
    patterns=("plain", "spots", "stripes", "checks", "band"), palette=VIVID,
)
VASE = ClassSpec(
    name="vase", live=False, draw=draw_vase,
    parts=(("shape", ("amphora", "tall", "bulb")), ("handles", ("two", "none")), ("rim", ("flared", "plain"))),
    patterns=("plain", "spots", "stripes", "checks", "band"), palette=VIVID,
)
CAN = ClassSpec(
    name="can", live=False, draw=draw_can,
    parts=(("size", ("tall", "short")), ("label", ("band", "logo", "diagonal")), ("top", ("pull", "plain"))),
    patterns=("plain", "spots", "stripes", "checks"), palette=VIVID,
)
SNEAKER = ClassSpec(
    name="sneaker", live=False, draw=draw_sneaker,
    parts=(("height", ("low", "high")), ("sole", ("white", "gum", "black")), ("toe", ("cap", "plain")),
           ("stripe", ("swoosh", "bars", "none"))),
    patterns=("plain", "spots", "stripes", "checks"), palette=VIVID,
)
CANDLE = ClassSpec(
    name="candle", live=False, draw=draw_candle,
    parts=(("shape", ("pillar", "taper", "jar")), ("holder", ("plate", "stick", "none")),
           ("flame", ("small", "tall"))),
    patterns=("plain", "spots", "stripes", "band"), palette=VIVID,
)
