"""The procedural smoke subjects: byte-identical, distinct, varied views, cached."""
from __future__ import annotations

import hashlib
import io
import itertools
import time

import numpy as np
import pytest
from PIL import Image

from varbench.data import open_dataset
from varbench.data.manifest import load_manifest
from varbench.data.smoke import SMOKE_SUBJECTS, encode_png, write_smoke_images


@pytest.fixture(scope="module")
def smoke_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smoke")
    write_smoke_images(folder)
    return folder


def test_generated_files_equal_the_committed_checksums(smoke_folder):
    manifest = load_manifest("smoke")
    assert len(manifest.entries) == 15
    written = sorted(p.relative_to(smoke_folder).as_posix() for p in smoke_folder.rglob("*.png"))
    assert written == sorted(entry.path for entry in manifest.entries)
    for entry in manifest.entries:
        data = (smoke_folder / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.digest, entry.path


def test_generation_is_fast_and_repeatable(tmp_path, smoke_folder):
    start = time.perf_counter()
    write_smoke_images(tmp_path)
    assert time.perf_counter() - start < 1.0
    for path in smoke_folder.rglob("*.png"):
        assert (tmp_path / path.relative_to(smoke_folder)).read_bytes() == path.read_bytes()


def test_png_writer_round_trips_through_pillow():
    pixels = np.arange(300 * 200 * 3, dtype=np.uint64).reshape(300, 200, 3).astype(np.uint8)  # > one 64K block
    with Image.open(io.BytesIO(encode_png(pixels))) as image:
        assert image.mode == "RGB" and image.size == (200, 300)
        assert np.array_equal(np.asarray(image), pixels)


def load(folder, name):
    return [np.asarray(Image.open(folder / name / f"{view:02d}.png").convert("RGB"), dtype=np.float64)
            for view in range(5)]


def saturated_mean_colour(image: np.ndarray) -> np.ndarray:
    """Mean colour of the clearly coloured pixels: the subject, not the pale background."""
    saturated = image.max(axis=2) - image.min(axis=2) > 80
    assert saturated.sum() > 200  # the subject is visible in every view
    return image[saturated].mean(axis=0)


def test_subjects_are_told_apart_by_colour_across_all_views(smoke_folder):
    features = {name: [saturated_mean_colour(image) for image in load(smoke_folder, name)]
                for name, *_ in SMOKE_SUBJECTS}
    within = max(np.linalg.norm(a - b) for views in features.values() for a, b in itertools.combinations(views, 2))
    between = min(np.linalg.norm(a - b) for (n1, v1), (n2, v2) in itertools.combinations(features.items(), 2)
                  for a in v1 for b in v2)
    assert between > 3 * within


def test_views_of_one_subject_differ_in_pose_scale_and_background(smoke_folder):
    for name, *_ in SMOKE_SUBJECTS:
        images = load(smoke_folder, name)
        for a, b in itertools.combinations(images, 2):
            assert np.abs(a - b).mean() > 10  # never a near-copy
        masks = [image.max(axis=2) - image.min(axis=2) > 80 for image in images]
        areas = [mask.sum() for mask in masks]
        assert max(areas) > 1.8 * min(areas)  # scale varies
        centres = [np.argwhere(mask).mean(axis=0) for mask in masks]
        assert max(np.linalg.norm(c - centres[0]) for c in centres) > 10  # position varies
        corners = [tuple(image[2, 2]) for image in images]
        assert len(set(corners)) == 5  # every view has its own background


def test_open_dataset_smoke_builds_a_cache_copy_once(isolated_cache):
    dataset = open_dataset("smoke")
    assert [s.name for s in dataset.subjects] == ["red_robot", "striped_mug", "spotted_dog"]
    assert [s.live for s in dataset.subjects] == [False, False, True]
    assert dataset.subject("red_robot").class_noun == "toy robot"
    assert len(dataset.object_prompts) >= 3 and len(dataset.live_prompts) >= 3
    assert all(template.count("{}") == 1 for template in dataset.object_prompts + dataset.live_prompts)
    assert dataset.live_prompts != dataset.object_prompts
    first = dataset.subject("spotted_dog").image_paths[0]
    assert isolated_cache in first.parents and first.is_file()
    mtime = first.stat().st_mtime_ns
    again = open_dataset("smoke")
    assert again.subject("spotted_dog").image_paths[0] == first and first.stat().st_mtime_ns == mtime


def test_a_damaged_cache_copy_is_drawn_again(isolated_cache):
    # Only varbench's own cache copy is repaired: a given data root is never written
    # (a damaged one is a UserError, see tests/test_hostile_data.py).
    dataset = open_dataset("smoke")
    path = dataset.subject("striped_mug").image_paths[3]
    good = path.read_bytes()
    path.write_bytes(good[:100])
    assert open_dataset("smoke").subject("striped_mug").image_paths[3] == path
    assert path.read_bytes() == good
