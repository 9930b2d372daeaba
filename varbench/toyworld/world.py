"""The toyworld's public face: classes, instances, scenes, rendering, captions, sampling.

A `Scene` is everything one 64x64 picture depends on: class, instance id, context (None:
a plain "reference photo" room), modifier (None, a property or an accessory), pose and a
seed (the background's own variation, and a modifier's drops). `render(scene)` draws
it, the same pixels on every machine; `caption(scene)` says it the way DreamBench's
prompts do ("a red teapot on the beach"). `parse_template` goes the other way, from a
prompt template ("a {} wearing a red hat") to the modifier and context it names.

Pretraining draws instances 0 .. N - 1 (`pretraining_scenes`); the held-out subjects
of the `toyworld` dataset are instances from `HELD_OUT_START` (one million) up, which
that sampler refuses to reach.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from varbench.toyworld.animals import CAT, DOG, NO_DRESS
from varbench.toyworld.canvas import SIZE, Canvas, rotation
from varbench.toyworld.contexts import CONTEXTS, NEUTRALS
from varbench.toyworld.instances import HELD_OUT_START, ClassSpec, Instance, draw_instance
from varbench.toyworld.modifiers import ACCESSORIES, MODIFIERS, PROPERTIES, Modifier
from varbench.toyworld.objects import BACKPACK, CAN, CANDLE, SNEAKER, TEAPOT, VASE

__all__ = [
    "CLASSES", "CONTEXTS", "CONTEXT_NAMES", "HELD_OUT_START", "MODIFIERS", "Instance", "Pose", "Scene",
    "background_array", "caption", "class_spec", "instance", "modifiers_for", "parse_template", "picture_grid",
    "pretraining_scenes", "render", "render_array", "render_batch", "sample_pose", "scene_for_template",
]

CLASSES: tuple[ClassSpec, ...] = (DOG, CAT, BACKPACK, TEAPOT, VASE, CAN, SNEAKER, CANDLE)
CONTEXT_NAMES: tuple[str, ...] = tuple(CONTEXTS)
PRETRAINING_INSTANCES = 64  # per class, by default
SCENE_SEED_TAG = 0x70E5CE  # keeps scene Generators apart from instance and sampler ones
SAMPLER_SEED_TAG = 0x5A3B1E


@dataclass(frozen=True)
class Pose:
    """Where and how the subject stands, in integers (so a scene is exact and hashable).

    `scale`: percent of the frame the subject's design box spans (55..95 when sampled);
    `dx`, `dy`: pixels its centre moves from the frame's; `tilt`: rotation steps of
    about 4.8 degrees (see `canvas.rotation`); `flip`: mirrored left to right.
    """

    flip: bool = False
    scale: int = 80
    dx: int = 0
    dy: int = 0
    tilt: int = 0


@dataclass(frozen=True)
class Scene:
    class_name: str
    instance_id: int
    context: str | None = None  # a key of CONTEXTS; None: a plain reference-photo room
    modifier: str | None = None  # a key of MODIFIERS
    pose: Pose = field(default_factory=Pose)
    seed: int = 0


# ------------------------------------------------------------------ classes and instances

def class_spec(name: str) -> ClassSpec:
    for spec in CLASSES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown toyworld class {name!r}; classes: {', '.join(s.name for s in CLASSES)}")


@functools.lru_cache(maxsize=8192)
def instance(class_name: str, instance_id: int) -> Instance:
    """Instance `instance_id` of class `class_name`: the same colours, pattern and parts
    every time (drawn from a Generator seeded by the class and the id)."""
    return draw_instance(class_spec(class_name), instance_id)


def modifiers_for(class_name: str) -> tuple[Modifier, ...]:
    """The modifiers a class can take: properties for all, accessories for live ones."""
    return PROPERTIES + ACCESSORIES if class_spec(class_name).live else PROPERTIES


# ------------------------------------------------------------------ rendering

def render_array(scene: Scene) -> np.ndarray:
    """The scene as a (64, 64, 3) uint8 array."""
    spec = class_spec(scene.class_name)
    inst = instance(scene.class_name, scene.instance_id)
    modifier = _checked_modifier(scene, spec)
    rng = np.random.default_rng([SCENE_SEED_TAG, scene.seed])
    pixels = _background(scene.context, scene.seed, rng)
    pose = scene.pose
    canvas = Canvas(pixels, SIZE / 2 + pose.dx, SIZE / 2 + pose.dy, pose.scale / 100, rotation(pose.tilt), pose.flip)
    if modifier is not None and modifier.recolour is not None:
        inst = modifier.recolour(inst)
    body = spec.draw(canvas, inst, modifier if modifier is not None else NO_DRESS)
    if modifier is not None and modifier.overlay is not None:
        modifier.overlay(canvas, body, rng)
    return canvas.to_uint8()


def background_array(context: str | None, seed: int) -> np.ndarray:
    """The background alone of a scene with this context and seed, (64, 64, 3) uint8."""
    pixels = _background(context, seed, np.random.default_rng([SCENE_SEED_TAG, seed]))
    return Canvas.frame(pixels).to_uint8()


def _background(context: str | None, seed: int, rng: np.random.Generator) -> np.ndarray:
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.float64)
    if context is None:  # the reference rooms take turns with the seed
        NEUTRALS[seed % len(NEUTRALS)](Canvas.frame(pixels), rng)
    else:
        CONTEXTS[context](Canvas.frame(pixels), rng)
    return pixels


def render(scene: Scene) -> Image.Image:
    """The scene as a 64x64 RGB image."""
    return Image.fromarray(render_array(scene))


def render_batch(scenes: Iterable[Scene]) -> np.ndarray:
    """Many scenes as one (N, 64, 64, 3) uint8 array."""
    scenes = list(scenes)
    out = np.empty((len(scenes), SIZE, SIZE, 3), dtype=np.uint8)
    for index, scene in enumerate(scenes):
        out[index] = render_array(scene)
    return out


def _checked_modifier(scene: Scene, spec: ClassSpec) -> Modifier | None:
    """The scene's modifier, once its context and modifier are known to exist and fit the class."""
    if scene.context is not None and scene.context not in CONTEXTS:
        raise ValueError(f"unknown toyworld context {scene.context!r}")
    if scene.modifier is None:
        return None
    modifier = MODIFIERS.get(scene.modifier)
    if modifier is None:
        raise ValueError(f"unknown toyworld modifier {scene.modifier!r}")
    if modifier.live_only and not spec.live:
        raise ValueError(f"modifier {scene.modifier!r} needs a live class, not {spec.name!r}")
    return modifier


# ------------------------------------------------------------------ words

def caption(scene: Scene) -> str:
    """The prompt-style caption: "a dog in the snow", "a red teapot on the beach",
    "a cat wearing a red hat in the jungle", "a wet can"; "a photo of a dog" for a plain
    reference-photo scene (no context, no modifier)."""
    modifier = MODIFIERS[scene.modifier] if scene.modifier else None
    words = [scene.class_name]
    if modifier is not None:
        if modifier.before:
            words.insert(0, modifier.name)
        else:
            words.append(modifier.name)
    words.insert(0, "a" if scene.context or modifier else "a photo of a")
    if scene.context:
        words.append(scene.context)
    return " ".join(words)


def parse_template(template: str) -> tuple[str | None, str | None]:
    """(modifier, context) a prompt template names, e.g. "a {} wearing a red hat in the
    jungle" -> ("wearing a red hat", "in the jungle"); "a photo of a {}" -> (None, None).
    A template the world cannot draw is a ValueError."""
    if template.count("{}") != 1:
        raise ValueError(f"a template holds exactly one '{{}}': {template!r}")
    head, tail = (part.strip() for part in template.split("{}"))
    modifier = None
    if head not in ("a", "a photo of a"):
        word = head.removeprefix("a ").strip()
        if not head.startswith("a ") or word not in MODIFIERS or not MODIFIERS[word].before:
            raise ValueError(f"the toyworld cannot draw {head!r} before the subject in {template!r}")
        modifier = word
    for accessory in sorted((m.name for m in ACCESSORIES), key=len, reverse=True):
        if tail == accessory or tail.startswith(accessory + " "):
            if modifier is not None:
                raise ValueError(f"one modifier per scene: {template!r}")
            modifier, tail = accessory, tail[len(accessory):].strip()
            break
    if tail and tail not in CONTEXTS:
        raise ValueError(f"the toyworld has no context {tail!r} (in {template!r})")
    if tail and head == "a photo of a":
        raise ValueError(f"'a photo of' is the plain room, not a context: {template!r}")
    return modifier, tail or None


def scene_for_template(class_name: str, instance_id: int, template: str, seed: int = 0,
                       pose: Pose | None = None) -> Scene:
    """The scene a prompt template describes for one instance; the pose, unless given,
    is sampled from `seed` (so samples of one prompt vary as generated images would)."""
    modifier, context = parse_template(template)
    if pose is None:
        pose = sample_pose(np.random.default_rng([SAMPLER_SEED_TAG, seed, 1]))
    scene = Scene(class_name, instance_id, context, modifier, pose, seed)
    _checked_modifier(scene, class_spec(class_name))  # a live-only modifier on an object fails here
    return scene


# ------------------------------------------------------------------ sampling

def sample_pose(rng: np.random.Generator) -> Pose:
    """A random pose; the subject stays (mostly) in the frame."""
    scale = int(rng.integers(55, 96))
    room = (100 - scale) * SIZE // 200 + 2  # pixels the centre may move
    return Pose(flip=bool(rng.integers(2)), scale=scale, dx=int(rng.integers(-room, room + 1)),
                dy=int(rng.integers(-room, room + 1)), tilt=int(rng.integers(-2, 3)))


def pretraining_scenes(count: int, seed: int, instances: int = PRETRAINING_INSTANCES,
                       plain_share: float = 0.15, modifier_share: float = 0.3) -> list[Scene]:
    """`count` scenes for pretraining: a class, an instance below `instances`, a context
    (a plain room for about `plain_share` of them), a modifier for about `modifier_share`,
    a pose and a scene seed, all from one Generator seeded by `seed`.

    `instances` must stay below HELD_OUT_START, so held-out subjects never appear."""
    if not 0 < instances <= HELD_OUT_START:
        raise ValueError(f"pretraining instances must be 1..{HELD_OUT_START} (held-out ids start there), "
                         f"got {instances}")
    rng = np.random.default_rng([SAMPLER_SEED_TAG, seed])
    classes = rng.integers(len(CLASSES), size=count)
    ids = rng.integers(instances, size=count)
    contexts = rng.integers(len(CONTEXT_NAMES), size=count)
    plain = rng.random(count) < plain_share
    live = np.array([CLASSES[k].live for k in classes], dtype=bool)
    choices = np.where(live, len(PROPERTIES) + len(ACCESSORIES), len(PROPERTIES))
    modifiers = rng.integers(choices)  # properties come first, so objects only reach those
    modified = rng.random(count) < modifier_share
    scales = rng.integers(55, 96, size=count)
    room = (100 - scales) * SIZE // 200 + 2
    dxs, dys = rng.integers(-room, room + 1), rng.integers(-room, room + 1)
    tilts, flips = rng.integers(-2, 3, size=count), rng.integers(2, size=count)
    seeds = rng.integers(2**31, size=count)
    everything = PROPERTIES + ACCESSORIES
    return [
        Scene(CLASSES[classes[i]].name, int(ids[i]),
              None if plain[i] else CONTEXT_NAMES[contexts[i]],
              everything[modifiers[i]].name if modified[i] else None,
              Pose(bool(flips[i]), int(scales[i]), int(dxs[i]), int(dys[i]), int(tilts[i])), int(seeds[i]))
        for i in range(count)
    ]


# ------------------------------------------------------------------ pictures

def picture_grid(path: str | Path, instance_id: int = 2, zoom: int = 2,
                 classes: Sequence[str] | None = None) -> Path:
    """One PNG: a row per class (instance `instance_id`), a column per context, the
    first column the plain reference room; each tile zoomed `zoom` times."""
    names = list(classes) if classes is not None else [spec.name for spec in CLASSES]
    columns: list[str | None] = [None, *CONTEXT_NAMES]
    gap = 2
    tile = SIZE + gap
    grid = np.full((len(names) * tile + gap, len(columns) * tile + gap, 3), 255, dtype=np.uint8)
    for row, name in enumerate(names):
        for col, context in enumerate(columns):
            pixels = render_array(Scene(name, instance_id, context, None, Pose(scale=80), seed=col))
            grid[gap + row * tile:gap + row * tile + SIZE, gap + col * tile:gap + col * tile + SIZE] = pixels
    image = Image.fromarray(grid)
    if zoom != 1:
        image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
