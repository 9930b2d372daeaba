"""The toy SD's pretraining captions: `world.caption`, with two things web captions have
and the world's captions lacked, each missed by a method that leans on the text side:

- **colour words**: half of the captions name the pictured instance's body colour, and
  its pattern's colour where it has one ("a yellow and navy can in the snow"). Textual
  Inversion trains one new word against the frozen text encoder and UNet, so it reaches
  only what the captions let the text side express; when they named a colour only through
  the "red" and "purple" modifiers, its word for a yellow can drew red and blue cans
  (benchmarks/NOTES-toyworld.md, the colour probe);
- **rare words** (RARE_SHARE; 0 in the shipped SD, so far): a few captions can hold a
  word with no look of its own before the class noun ("a photo of a sks dog").
  DreamBooth's identifier "sks" is such a word in SD 1.5's data; one that no caption
  holds keeps its initial embedding, so "a photo of sks dog" and "a photo of a dog" read
  nearly alike and the prior's class images pull the subject back to the class.

Which scenes get which is seeded, so a run's captions are the same every time.
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
# DreamBooth's identifier and made-up words like it. The shipped SD was trained with
# RARE_SHARE 0 (colour words only): the rare words wait for a GPU retrain to be measured
# (benchmarks/NOTES-toyworld.md, session 14). Their draws follow the colour draws, so the
# share changes no colour choice.
RARE_WORDS = ("sks", "zwx", "qrv", "bnk", "vhl")
RARE_SHARE = 0.0


def recipe() -> dict:
    """What training.json and the SD checkpoint's identity record of the captions."""
    return {"described": DESCRIBED_SHARE, "rare": RARE_SHARE, "rare_words": list(RARE_WORDS),
            "recolouring": list(RECOLOURING), "colour_names": sorted(set(COLOUR_NAMES.values()))}


def colour_name(colour: Colour, palette: tuple[Colour, ...]) -> str:
    """The name of `palette`'s entry nearest to `colour`: the colour as drawn. Instances
    jitter their entry, so about 1% of fur colours sit nearer a neighbouring entry (tan
    and golden, dark brown and black) and take its name, as a viewer would."""
    nearest = min(palette, key=lambda entry: sum((a - b) ** 2 for a, b in zip(entry, colour)))
    return COLOUR_NAMES[nearest]


def described_caption(scene: Scene, fits: Callable[[str], bool], describe: bool = True,
                      rare: str | None = None) -> str:
    """The scene's caption with the instance's colours (`describe`) and a `rare` word named
    just before the class noun. The colours are body and pattern, or the body's alone
    where `fits(text)` refuses both; none where a modifier recolours the body or neither
    fits. A rare word that does not fit is left out."""
    words = caption(scene).split(" ")
    lead = 4 if words[:4] == ["a", "photo", "of", "a"] else 1  # "a photo of a" or "a"
    noun = words.index(scene.class_name)
    colour_options: list[list[str]] = []
    if describe and scene.modifier not in RECOLOURING:
        spec = class_spec(scene.class_name)
        instance = draw_instance(spec, scene.instance_id)
        body, pattern = colour_name(instance.body, spec.palette), colour_name(instance.secondary, spec.palette)
        colour_options = ([[body, "and", pattern]] if instance.pattern != "plain" else []) + [[body]]
    # the richest caption that fits: rare word and colours, then fewer words
    for with_rare in ([[rare]] if rare else []) + [[]]:
        for colours in colour_options + [[]]:
            # colours after the article, before a modifier ("a yellow shiny can"); the rare
            # word right before the noun ("a photo of a sks dog")
            text = " ".join(words[:lead] + colours + words[lead:noun] + with_rare + words[noun:])
            if fits(text):
                return text
    return " ".join(words)


def described_captions(scenes: list[Scene], seed: int, fits: Callable[[str], bool]) -> list[str]:
    """Captions of `scenes`: a seeded DESCRIBED_SHARE of them name the colours and a
    RARE_SHARE hold a rare word (above); `fits(text)` says whether a caption fits the text
    encoder's length."""
    rng = np.random.default_rng([0xC0, seed])
    describe = rng.random(len(scenes)) < DESCRIBED_SHARE
    rare = np.where(rng.random(len(scenes)) < RARE_SHARE, rng.integers(len(RARE_WORDS), size=len(scenes)), -1)
    return [described_caption(scene, fits, bool(d), RARE_WORDS[r] if r >= 0 else None)
            for scene, d, r in zip(scenes, describe, rare)]
