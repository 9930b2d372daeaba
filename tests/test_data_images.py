"""`Subject.load_images` decodes every reference image of every dataset."""
from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from varbench.data import open_dataset
from varbench.data.fetch import DatasetWarning


def test_all_158_dreambench_jpegs_decode_as_square_rgb():
    dataset = open_dataset("dreambench", str(SHARED_DATA / "dreambench"))
    sizes = []
    for subject in dataset.subjects:
        images = subject.load_images()
        assert len(images) == len(subject.image_paths) and 4 <= len(images) <= 6, subject.name
        for image in images:
            assert image.mode == "RGB" and image.width == image.height
            sizes.append(image.width)
    assert len(sizes) == 158
    assert 615 <= min(sizes) and max(sizes) <= 2048  # as the data README says


def test_all_vico_images_decode():
    with pytest.warns(DatasetWarning):
        dataset = open_dataset("vico", str(SHARED_DATA / "vico"))
    counts = {}
    for subject in dataset.subjects:
        images = subject.load_images()
        assert all(image.mode == "RGB" and min(image.size) > 0 for image in images)
        counts[subject.name] = len(images)
    assert sum(counts.values()) == 82 and len(counts) == 15  # 84 files minus the two prompt lists
    assert counts["brown_teddybear"] == 7 and counts["duck_toy"] == 4


def test_all_smoke_images_decode(isolated_cache):
    dataset = open_dataset("smoke")
    for subject in dataset.subjects:
        images = subject.load_images()
        assert len(images) == 5
        assert all(image.mode == "RGB" and image.size == (128, 128) for image in images)
