"""The richer captions the toy Stable Diffusion is pretrained on, beside `world.caption`'s.

SD 1.5 learnt from web captions that name particular things ("a photo of Max, my corgi")
and word the same picture many ways ("a cropped photo of the dog"). Plain toyworld
captions do neither: they say only class, context and modifier. A toy SD pretrained on
them alone gives no meaning to any word in front of the class noun, and the diffusion
methods put their new words exactly there ("a photo of sks dog", "<new1> dog",
Textual Inversion's "a cropped photo of the <placeholder>"). Measured (NOTES-toyworld.md):
DreamBooth with its prior, Custom Diffusion and Textual Inversion then stayed at the
no_fit floor, while the methods that tune the UNet without a class prompt cleared it.

So half of the toy SD's pretraining captions are a scene's *variant* caption:
- **instance names**: pretraining instance k of every class is called NAMES[k] ("a kevo
  dog in the snow"), the way proper names pick one thing out of a class. The first name
  is DreamBooth's identifier "sks": as in SD 1.5, the rare word has a weak meaning of its
  own before fine-tuning gives it the subject's. Held-out subjects have no name.
- **photo wordings**: a plain reference-room picture is worded like one of Textual
  Inversion's templates ("a rendering of a kevo dog", "a photo of the small kevo dog"),
  words the world never draws, so they learn to carry nothing.

The CLIP judge and the toy Infinity are pretrained on plain captions only: the judge must
not learn the names (it scores held-out subjects), and ARBooth writes its identifier into
T5's output rather than into a word.
"""
from __future__ import annotations

import numpy as np

from varbench.toyworld.world import PRETRAINING_INSTANCES, Scene, caption

VARIANT_SHARE = 0.5  # of the toy SD's pretraining captions, drawn per step

# Pseudo-words built from syllables, none a word of the world; NAMES[k] names instance k.
ONSETS, NUCLEI, CODAS = "bdfgklmnprtvz", "aeiou", ("", "n", "r", "x")


def _pseudo_words(count: int) -> tuple[str, ...]:
    words, k = [], 0
    while len(words) < count:
        a, b, c = ONSETS[k % 13], NUCLEI[(k // 13) % 5], ONSETS[(k * 7 + 3) % 13]
        d, e = NUCLEI[(k * 3 + 1) % 5], CODAS[(k // 65) % 4]
        word = a + b + c + d + e
        if word not in words:
            words.append(word)
        k += 1
    return tuple(words)


NAMES: tuple[str, ...] = ("sks",) + _pseudo_words(PRETRAINING_INSTANCES - 1)

# Photo wordings of a plain picture: how Textual Inversion's object templates phrase one
# ("{}" is the subject's words), each equally likely in a variant.
HEADS = ("a photo of a", "a rendering of a", "a cropped photo of the", "the photo of a", "a dark photo of the",
         "a photo of my", "a close-up photo of a", "a bright photo of the", "a cropped photo of a",
         "a photo of the", "a good photo of the", "a photo of one", "a close-up photo of the", "a rendition of the",
         "a rendition of a", "a good photo of a")
ADJECTIVES = ("clean", "dirty", "cool", "nice", "small", "weird", "large")  # "a photo of a nice {}"


def words() -> list[str]:
    """Every word a variant caption may hold that plain captions do not need."""
    found = [word for head in HEADS for word in head.replace("-", " ").split()]
    return list(dict.fromkeys(found + list(ADJECTIVES) + list(NAMES)))


def variant_caption(scene: Scene, rng: np.random.Generator) -> str:
    """The scene's variant caption: its instance named, and a plain-room picture worded
    like a photo template, with the choices drawn from `rng`."""
    if scene.instance_id >= len(NAMES):
        raise ValueError(f"instance {scene.instance_id} of {scene.class_name} has no name "
                         f"(names cover the first {len(NAMES)} pretraining instances)")
    subject = f"{NAMES[scene.instance_id]} {scene.class_name}"
    if scene.context or scene.modifier:
        return caption(scene, subject)
    choice = int(rng.integers(len(HEADS) + len(ADJECTIVES)))
    if choice < len(HEADS):
        return f"{HEADS[choice]} {subject}"
    return f"a photo of a {ADJECTIVES[choice - len(HEADS)]} {subject}"


def variant_captions(scenes: list[Scene], seed: int) -> list[str]:
    """One variant caption per scene, drawn from `seed` alone."""
    rng = np.random.default_rng([0xCA7, seed])
    return [variant_caption(scene, rng) for scene in scenes]
