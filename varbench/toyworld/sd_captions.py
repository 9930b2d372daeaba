"""The toy SD's pretraining captions: `world.caption`, half of them (seeded) also naming
the pictured instance's body colour, and its pattern's colour where it has one ("a yellow
and navy can in the snow"), as web captions describe what they show.

Why: Textual Inversion trains one new word against the frozen text encoder and UNet, so
it reaches only what the captions let the text side express. When they named a colour
only through the "red" and "purple" modifiers, its word for a yellow can drew red and blue
cans, and Custom Diffusion fared little better (benchmarks/NOTES-toyworld.md, the colour
probe and session 14).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from varbench.toyworld.instances import FUR, VIVID, Colour, draw_instance
from varbench.toyworld.world import Scene, caption, class_spec

COLOUR_NAMES: dict[Colour, str] = {
    **dict(zip(VIVID, ("red", "orange", "yellow", "green", "teal", "blue", "navy", "purple", "pink", "brown",
                       "black", "white", "grey", "beige", "lime", "maroon"))),
    **dict(zip(FUR, ("tan", "brown", "dark brown", "black", "white", "cream", "grey", "ginger", "golden"))),
}
# modifiers that paint the body in the colour they name, so the caption already names the
# colour shown ("shiny" and "wet" only brighten or darken the instance's own)
RECOLOURING = ("red", "purple")
DESCRIBED_SHARE = 0.5  # captions that name the colours


def recipe() -> dict:
    """What training.json and the SD checkpoint's identity record of the captions."""
    return {"described": DESCRIBED_SHARE, "recolouring": list(RECOLOURING),
            "colour_names": sorted(set(COLOUR_NAMES.values()))}


def colour_name(colour: Colour, palette: tuple[Colour, ...]) -> str:
    """The name of `palette`'s entry nearest to `colour`: the colour as drawn. Instances
    jitter their entry, so about 1% of fur colours sit nearer a neighbouring entry (tan
    and golden, dark brown and black) and take its name, as a viewer would."""
    nearest = min(palette, key=lambda entry: sum((a - b) ** 2 for a, b in zip(entry, colour)))
    return COLOUR_NAMES[nearest]


def described_caption(scene: Scene, fits: Callable[[str], bool]) -> str:
    """The scene's caption with the instance's colours named after the article, before
    any modifier ("a yellow shiny can"): body and pattern colour, or the body's alone
    where `fits(text)` refuses both; the plain caption where a modifier recolours the
    body or neither fits."""
    words = caption(scene).split(" ")
    if scene.modifier in RECOLOURING:
        return " ".join(words)
    lead = 4 if words[:4] == ["a", "photo", "of", "a"] else 1  # "a photo of a" or "a"
    spec = class_spec(scene.class_name)
    instance = draw_instance(spec, scene.instance_id)
    body, pattern = colour_name(instance.body, spec.palette), colour_name(instance.secondary, spec.palette)
    for colours in ([[body, "and", pattern]] if instance.pattern != "plain" else []) + [[body]]:
        text = " ".join(words[:lead] + colours + words[lead:])
        if fits(text):
            return text
    return " ".join(words)


def described_captions(scenes: list[Scene], seed: int, fits: Callable[[str], bool]) -> list[str]:
    """Captions of `scenes`, a seeded DESCRIBED_SHARE of them naming the colours (above);
    `fits(text)` says whether a caption fits the text encoder's length."""
    describe = np.random.default_rng([0xC0, seed]).random(len(scenes)) < DESCRIBED_SHARE
    return [described_caption(scene, fits) if chosen else caption(scene) for scene, chosen in zip(scenes, describe)]
