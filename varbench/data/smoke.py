"""The `smoke` dataset: three procedurally drawn subjects, offline, for CPU pipeline checks.

- red_robot (class "toy robot", a two-word class noun like DreamBench's "stuffed animal"),
- striped_mug (class "mug"),
- spotted_dog (class "dog", live, so the live prompt list is exercised too),
each in five 128x128 views (see `smoke_images`), plus three object and three live
prompt templates in DreamBench's wording.

The images are drawn by varbench itself (`varbench.data.drawn`: the same bytes on every
machine, drawn into varbench's cache on first read, a given root only read and checked
against `manifests/smoke.sha256`; a test regenerates and compares). `write_smoke_images(folder)`
makes such a copy, on purpose.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from varbench.data import Dataset
from varbench.data.drawn import DrawnFiles, encode_png
from varbench.data.smoke_images import Canvas, draw_dog, draw_mug, draw_robot, render_view
from varbench.fileio import write_bytes

__all__ = ["FILES", "SMOKE_SUBJECTS", "encode_png", "smoke_dataset", "write_smoke_images"]

VIEWS = 5

# (name, class noun, live, drawing function)
SMOKE_SUBJECTS: tuple[tuple[str, str, bool, Callable[[Canvas], None]], ...] = (
    ("red_robot", "toy robot", False, draw_robot),
    ("striped_mug", "mug", False, draw_mug),
    ("spotted_dog", "dog", True, draw_dog),
)
SMOKE_OBJECT_PROMPTS = ("a {} in the jungle", "a {} on the beach", "a {} in the snow")
SMOKE_LIVE_PROMPTS = ("a {} in the jungle", "a {} in the snow", "a {} wearing a red hat")


def write_smoke_images(folder: Path) -> None:
    """Draw every view of every subject and write it as a PNG (atomically)."""
    for index, (name, _, _, draw) in enumerate(SMOKE_SUBJECTS):
        for view, path in enumerate(FILES.image_paths(Path(folder), name)):
            write_bytes(path, encode_png(render_view(draw, index, view)))


# Bump generator_version when a drawing changes (and rewrite manifests/smoke.sha256).
FILES = DrawnFiles("smoke", generator_version=1, views=VIEWS, write=write_smoke_images)


def smoke_dataset(root: str | None = None) -> Dataset:
    """The smoke subjects: read from `root` if given (never written: a copy that is not
    exactly the drawn files is a `UserError`), else from varbench's cache, drawn there
    when their images are first needed."""
    subjects = FILES.subjects([(name, noun, live) for name, noun, live, _ in SMOKE_SUBJECTS], root)
    return Dataset("smoke", subjects, SMOKE_OBJECT_PROMPTS, SMOKE_LIVE_PROMPTS)
