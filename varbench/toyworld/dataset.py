"""The `toyworld` dataset: held-out toyworld subjects, five 64 px reference views each.

Ten subjects named like DreamBench's folders ("dog", "dog2", "cat", "backpack", ...),
each one instance of its class from the held-out id range (from `HELD_OUT_START`, see
`SUBJECTS`), which the pretraining sampler can never draw. Its reference views are
plain reference-photo rooms (no context) in five poses. The prompt lists mirror
DreamBench's, in its order, keeping every template the world can draw: 22 object
prompts (18 contexts, 4 properties) and 24 live ones (10 contexts, 10 accessories and
outfits, 4 properties); only "cube shaped", "on top of a mirror" and "on top of the
sidewalk in a crowded street" are left out. `scene_for_prompt` gives the scene a prompt
describes, to render ground truth or to check what a generated image should show.

Files are read and written as every drawn dataset's (`varbench.data.drawn`): drawn into
varbench's cache when a subject's images are first read, the same bytes on every
machine, checked against `manifests/toyworld.sha256`; a given root is only read, and
must match byte for byte.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from varbench.data import Dataset
from varbench.data.drawn import DrawnFiles, encode_png
from varbench.data.manifest import MANIFEST_DIR
from varbench.data.subject import Subject
from varbench.fileio import write_bytes, write_text
from varbench.toyworld.world import HELD_OUT_START, Pose, Scene, class_spec, render_array, scene_for_template

NAME = "toyworld"
# Bump when a drawing changes (and run `write_manifest()`): the cache key holds it.
GENERATOR_VERSION = 1
VIEWS = 5

# (subject folder, class, instance id): held-out instances (ids from HELD_OUT_START),
# picked by eye so that two subjects of a class look unlike each other.
SUBJECTS: tuple[tuple[str, str, int], ...] = (
    ("backpack", "backpack", HELD_OUT_START + 1),
    ("can", "can", HELD_OUT_START + 3),
    ("candle", "candle", HELD_OUT_START + 1),
    ("cat", "cat", HELD_OUT_START + 6),
    ("cat2", "cat", HELD_OUT_START + 2),
    ("dog", "dog", HELD_OUT_START + 2),
    ("dog2", "dog", HELD_OUT_START + 7),
    ("sneaker", "sneaker", HELD_OUT_START + 4),
    ("teapot", "teapot", HELD_OUT_START + 1),
    ("vase", "vase", HELD_OUT_START + 5),
)

# The five reference poses (a subject's views differ in mirror, size, place and tilt).
VIEW_POSES = (
    Pose(flip=False, scale=82, dx=0, dy=2, tilt=0),
    Pose(flip=True, scale=68, dx=-6, dy=4, tilt=1),
    Pose(flip=False, scale=92, dx=1, dy=0, tilt=-1),
    Pose(flip=True, scale=74, dx=5, dy=-3, tilt=0),
    Pose(flip=False, scale=62, dx=-4, dy=6, tilt=2),
)

OBJECT_PROMPTS = (
    "a {} in the jungle",
    "a {} in the snow",
    "a {} on the beach",
    "a {} on a cobblestone street",
    "a {} on top of pink fabric",
    "a {} on top of a wooden floor",
    "a {} with a city in the background",
    "a {} with a mountain in the background",
    "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
    "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background",
    "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water",
    "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it",
    "a {} on top of a dirt road",
    "a {} on top of a white rug",
    "a red {}",
    "a purple {}",
    "a shiny {}",
    "a wet {}",
)
LIVE_PROMPTS = (
    "a {} in the jungle",
    "a {} in the snow",
    "a {} on the beach",
    "a {} on a cobblestone street",
    "a {} on top of pink fabric",
    "a {} on top of a wooden floor",
    "a {} with a city in the background",
    "a {} with a mountain in the background",
    "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
    "a {} wearing a red hat",
    "a {} wearing a santa hat",
    "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle",
    "a {} in a chef outfit",
    "a {} in a firefighter outfit",
    "a {} in a police outfit",
    "a {} wearing pink glasses",
    "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit",
    "a red {}",
    "a purple {}",
    "a shiny {}",
    "a wet {}",
)


# ------------------------------------------------------------------ subjects and scenes

def subject_instance(name: str) -> tuple[str, int]:
    """(class, instance id) of subject `name`."""
    for subject, class_name, instance_id in SUBJECTS:
        if subject == name:
            return class_name, instance_id
    raise ValueError(f"no toyworld subject {name!r}; subjects: {', '.join(s for s, _, _ in SUBJECTS)}")


def reference_scene(name: str, view: int) -> Scene:
    """The scene of reference view `view` (0-4) of subject `name`: a plain room, one of
    `VIEW_POSES`; the room changes with the view (the scene seed picks it)."""
    class_name, instance_id = subject_instance(name)
    index = [s for s, _, _ in SUBJECTS].index(name)
    return Scene(class_name, instance_id, None, None, VIEW_POSES[view], seed=index * VIEWS + view)


def scene_for_prompt(subject_or_class: Subject | str, template: str, seed: int = 0, instance_id: int = 0) -> Scene:
    """The scene prompt `template` describes ("a {} wearing a red hat" -> that modifier,
    no context), for a toyworld `Subject` (its held-out instance) or for a class name
    (instance `instance_id`); the pose and background variation come from `seed`.
    A template the world cannot draw, or an accessory for an object, is a ValueError."""
    if isinstance(subject_or_class, Subject):
        class_name, instance_id = subject_instance(subject_or_class.name)
    else:
        class_name = class_spec(subject_or_class).name
    return scene_for_template(class_name, instance_id, template, seed)


# ------------------------------------------------------------------ the dataset

def toyworld_dataset(root: str | None = None) -> Dataset:
    """The toyworld subjects: read from `root` if given (never written: a copy that is not
    exactly the drawn files is a `UserError`), else from varbench's cache, drawn there
    when their images are first needed."""
    entries = [(name, class_name, class_spec(class_name).live) for name, class_name, _ in SUBJECTS]
    return Dataset(NAME, FILES.subjects(entries, root), OBJECT_PROMPTS, LIVE_PROMPTS)


def write_toyworld_images(folder: Path) -> None:
    """Render every reference view of every subject and write it as a PNG (atomically)."""
    for name, _, _ in SUBJECTS:
        for view, path in enumerate(FILES.image_paths(Path(folder), name)):
            write_bytes(path, encode_png(render_array(reference_scene(name, view))))


FILES = DrawnFiles(NAME, generator_version=GENERATOR_VERSION, views=VIEWS, write=write_toyworld_images)


def manifest_text(folder: Path) -> str:
    """The checksum manifest of the files `write_toyworld_images(folder)` wrote."""
    lines = [
        "# varbench checksum manifest: the procedurally drawn toyworld subjects (varbench.toyworld.dataset,",
        f"# generator version {GENERATOR_VERSION}). Regenerated and compared byte for byte by "
        "tests/test_toyworld_world.py.",
        "# Columns: sha256, size in bytes, path relative to the dataset folder.",
    ]
    for name, _, _ in SUBJECTS:
        for path in FILES.image_paths(Path(folder), name):
            data = path.read_bytes()
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {len(data)}  {path.relative_to(folder).as_posix()}")
    return "\n".join(lines) + "\n"


def write_manifest(scratch: Path) -> Path:
    """Draw the subjects into `scratch` and rewrite `manifests/toyworld.sha256` from them
    (after a drawing change and a GENERATOR_VERSION bump)."""
    write_toyworld_images(scratch)
    path = MANIFEST_DIR / f"{NAME}.sha256"
    write_text(path, manifest_text(scratch))
    return path
