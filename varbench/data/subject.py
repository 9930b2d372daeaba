"""A subject: a handful of reference photos of one thing, with its class noun."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from varbench.errors import UserError


@dataclass(frozen=True)
class Subject:
    name: str  # folder name, e.g. "dog2"; also the cell's name in the store
    class_noun: str  # e.g. "dog", "stuffed animal"
    live: bool  # cats and dogs: picks the live prompt list
    image_paths: tuple[Path, ...]

    def load_images(self) -> list[Image.Image]:
        """The reference images as RGB; a corrupt or missing file is a `UserError`."""
        return [load_rgb(path) for path in self.image_paths]


def load_rgb(path: Path) -> Image.Image:
    """Open an image fully (so truncated files fail here, not later) as RGB."""
    path = Path(path)
    if not path.is_file():
        raise UserError("image file not found", str(path), "Check the dataset folder or run 'varbench data verify'.")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(
            f"cannot read image: {err}",
            str(path),
            "Replace the file with a valid JPEG/PNG or re-fetch the dataset with 'varbench data fetch'.",
        ) from None
