"""A subject: a handful of reference photos of one thing, with its class noun."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from varbench.metrics.imagefile import REFERENCE, open_rgb


@dataclass(frozen=True)
class Subject:
    name: str  # folder name, e.g. "dog2"; also the cell's name in the store
    class_noun: str  # e.g. "dog", "stuffed animal"
    live: bool  # cats and dogs: picks the live prompt list
    image_paths: tuple[Path, ...]

    def load_images(self) -> list[Image.Image]:
        """The reference images as RGB (see `load_rgb`); a corrupt or missing file is a `UserError`."""
        return [load_rgb(path) for path in self.image_paths]


class DrawnSubject(Subject):
    """A subject whose image files are made on first use (the procedural `smoke` set).

    Reading `image_paths` first calls `materialize()`, which must write the files if
    they are absent and be cheap when they are there. Everything else (name, class noun,
    live flag: all that planning and `varbench run --dry-run` read) writes nothing, and
    `planned_paths` gives the paths without making the files. Comparing, hashing or
    printing one reads `image_paths`, so it makes the files too. `materialize` must be
    picklable (a module-level function or a `functools.partial` of one) for subjects
    to cross process boundaries.
    """

    def __init__(self, name: str, class_noun: str, live: bool, image_paths: Iterable[Path],
                 materialize: Callable[[], object]):
        object.__setattr__(self, "materialize", materialize)
        super().__init__(name, class_noun, live, tuple(image_paths))

    @property
    def image_paths(self) -> tuple[Path, ...]:
        self.materialize()
        return self.planned_paths

    @image_paths.setter
    def image_paths(self, paths: tuple[Path, ...]) -> None:
        # Only the dataclass __init__ gets here (it sets fields with object.__setattr__);
        # `subject.image_paths = ...` still raises FrozenInstanceError.
        object.__setattr__(self, "planned_paths", tuple(paths))


def load_rgb(path: Path) -> Image.Image:
    """A reference photo, fully read (so truncated files fail here, not later), as 8-bit RGB.

    The EXIF orientation is always applied: a phone photo stored sideways with an
    orientation tag is meant to be seen upright, and that is how methods fit to it and
    reports show it. Alpha is dropped by the plain RGB conversion, 16-bit files keep
    their high byte, oversized and unreadable files are a `UserError` (see
    `varbench.metrics.imagefile`). Scoring reads references through the metric mode's
    decoder instead, which applies EXIF only where the mode's evaluator did.
    """
    return open_rgb(path, exif=True, role=REFERENCE)
