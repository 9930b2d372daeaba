"""Which single reference photo the fixed-pairing modes compare every image with.

`kosmosg` and `dreambench++` pair each generated image with one reference per subject.
Where the evaluator's release names that photo, varbench uses it (`reference: release`,
the default); otherwise, or with `reference: index`, the photo at `reference_index` in
the dataset's file order.

Kosmos-G on DreamBench: its release keeps one photo per subject before sampling and
scoring (microsoft/unilm, commit ce408a63161c3cc05c26e5163514f35cf837de1c,
`kosmos-g/scripts/remove_dreambench_multiimg.sh`, which deletes every other file;
`sample_kosmosg_dreambench.py` then pairs each image with `<subject>/<file>`). Only 4 of
the 30 are the subject's first file, so index 0 picks another photo for 26 subjects.

DreamBench++ evaluates on its own dataset of one photo per subject (yuangpeng/dreambench_plus);
its release names no DreamBench photo, so on DreamBench the `dreambench++` mode uses
`reference_index` (default 0, the first file).
"""
from __future__ import annotations

from typing import Any

KOSMOSG_DREAMBENCH = {
    "backpack": "02.jpg", "backpack_dog": "02.jpg", "bear_plushie": "03.jpg", "berry_bowl": "02.jpg",
    "can": "01.jpg", "candle": "02.jpg", "cat": "04.jpg", "cat2": "02.jpg", "clock": "03.jpg",
    "colorful_sneaker": "01.jpg", "dog": "02.jpg", "dog2": "02.jpg", "dog3": "05.jpg", "dog5": "00.jpg",
    "dog6": "02.jpg", "dog7": "01.jpg", "dog8": "04.jpg", "duck_toy": "01.jpg", "fancy_boot": "02.jpg",
    "grey_sloth_plushie": "04.jpg", "monster_toy": "04.jpg", "pink_sunglasses": "04.jpg", "poop_emoji": "00.jpg",
    "rc_car": "03.jpg", "red_cartoon": "00.jpg", "robot_toy": "00.jpg", "shiny_sneaker": "01.jpg",
    "teapot": "04.jpg", "vase": "02.jpg", "wolf_plushie": "04.jpg",
}
RELEASE_CHOICES = {"kosmosg": KOSMOSG_DREAMBENCH}  # mode -> {subject: the file its release keeps}


def paired_reference(mode: str, reference: str, reference_index: int, subject: Any) -> int | str:
    """Index into `subject.image_paths` of the one reference of a fixed-pairing mode, or,
    when `reference_index` is past the subject's photos, a message saying so."""
    if reference == "release":
        name = RELEASE_CHOICES.get(mode, {}).get(subject.name)
        names = [path.name for path in subject.image_paths]
        if name is not None and name in names:
            return names.index(name)
    count = len(subject.image_paths)
    if not 0 <= reference_index < count:
        return f"metrics.reference_index is {reference_index} but subject {subject.name} has {count} reference images"
    return reference_index
