"""The toyworld: exact pixels, distinct instances, contexts and modifiers, prompts that map
to scenes, held-out subjects pretraining never sees, and the `toyworld` dataset."""
from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from PIL import Image

from varbench.data import DATASETS, open_dataset
from varbench.data.manifest import load_manifest
from varbench.errors import UserError
from varbench.toyworld.dataset import (
    LIVE_PROMPTS, OBJECT_PROMPTS, SUBJECTS, scene_for_prompt, subject_instance, write_toyworld_images,
)
from varbench.toyworld.world import (
    CLASSES, CONTEXT_NAMES, HELD_OUT_START, Pose, Scene, background_array, caption, instance, modifiers_for,
    parse_template, picture_grid, pretraining_scenes, render, render_array, render_batch, scene_for_template,
)

# Pinned digests of the raw pixels: a change of any drawing or of the maths shows here
# (then bump varbench.toyworld.dataset.GENERATOR_VERSION and rewrite the manifest).
PINNED = {
    Scene("cat", 5, "in the jungle", "wearing a red hat", Pose(True, 77, 3, -2, 1), seed=11):
        "26533beabd34edd43130de936317738a397fa8b52f5a0807993fd4b6c6e87663",
    Scene("teapot", 12, "on a cobblestone street", "shiny", Pose(False, 64, -4, 5, -2), seed=3):
        "6f19f23f15e03f1aa52a687a87018bdb3dab22fb3c288d470d841c9fab8b4a58",
}


def digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(pixels.tobytes()).hexdigest()


# ------------------------------------------------------------------ determinism

def test_a_scene_renders_to_the_same_pinned_pixels_every_time():
    for scene, expected in PINNED.items():
        first, second = render_array(scene), render_array(scene)
        assert first.shape == (64, 64, 3) and first.dtype == np.uint8
        assert np.array_equal(first, second)
        assert digest(first) == expected, scene
    image = render(next(iter(PINNED)))
    assert image.mode == "RGB" and image.size == (64, 64)


def test_render_batch_equals_one_by_one_and_the_sampler_repeats():
    scenes = pretraining_scenes(40, seed=7)
    assert scenes == pretraining_scenes(40, seed=7) and scenes != pretraining_scenes(40, seed=8)
    batch = render_batch(scenes)
    assert batch.shape == (40, 64, 64, 3) and batch.dtype == np.uint8
    for pixels, scene in zip(batch, scenes):
        assert np.array_equal(pixels, render_array(scene))


# ------------------------------------------------------------------ instances

def test_pretraining_never_draws_a_held_out_instance():
    scenes = pretraining_scenes(3000, seed=1, instances=64)
    assert max(s.instance_id for s in scenes) == 63 and min(s.instance_id for s in scenes) == 0
    assert {s.class_name for s in scenes} == {spec.name for spec in CLASSES}
    with pytest.raises(ValueError, match="held-out"):
        pretraining_scenes(1, seed=1, instances=HELD_OUT_START + 1)
    for name, _, instance_id in SUBJECTS:
        assert instance_id >= HELD_OUT_START and subject_instance(name)[1] == instance_id


def test_instances_of_a_class_differ_visibly():
    pose = Pose(scale=85)
    for spec in CLASSES:
        images = [render_array(Scene(spec.name, i, None, None, pose, seed=1)).astype(np.float64) for i in range(6)]
        for a, b in itertools.combinations(images, 2):
            assert np.abs(a - b).mean() > 2.0, spec.name
        looks = {(instance(spec.name, i).body, instance(spec.name, i).parts) for i in range(6)}
        assert len(looks) == 6


def subject_pixels(scene: Scene) -> np.ndarray:
    """The pixels the subject covers: where the render differs from its bare background."""
    pixels = render_array(scene)
    mask = np.abs(pixels.astype(np.int16) - background_array(scene.context, scene.seed)).max(axis=2) > 24
    assert mask.sum() > 100
    return pixels[mask]


def dominant_colours(pixels: np.ndarray, count: int) -> list[tuple[int, ...]]:
    bins, counts = np.unique(pixels // 32, axis=0, return_counts=True)
    return [tuple(bins[i]) for i in np.argsort(-counts, kind="stable")[:count]]


def test_an_instance_keeps_its_colours_in_every_pose():
    poses = (Pose(False, 90, 0, 0, 0), Pose(True, 60, -5, 4, 2), Pose(False, 72, 6, -3, -2))
    for spec in CLASSES:
        for instance_id in (0, 1, HELD_OUT_START):
            firsts = [dominant_colours(subject_pixels(Scene(spec.name, instance_id, "in the jungle", None, pose,
                                                            seed=2)), 3) for pose in poses]
            for a, b in itertools.permutations(firsts, 2):
                assert a[0] in b, (spec.name, instance_id)


def test_the_same_instance_keeps_its_details_across_renders():
    inst = instance("dog", 3)
    assert inst == instance("dog", 3)  # same colours, pattern marks and parts
    assert len(inst.parts) >= 2 and all(len(spec.parts) >= 2 for spec in CLASSES)


# ------------------------------------------------------------------ contexts and modifiers

def context_feature(pixels: np.ndarray) -> np.ndarray:
    """Mean colour and texture (contrast, edges) of four horizontal bands."""
    features = []
    for band in np.array_split(pixels.astype(np.float64), 4, axis=0):
        lum = band.mean(axis=2)
        features += [*band.reshape(-1, 3).mean(axis=0), lum.std(),
                     2 * np.abs(np.diff(lum, axis=1)).mean(), 2 * np.abs(np.diff(lum, axis=0)).mean()]
    return np.asarray(features)


def test_every_context_is_told_apart_from_every_other():
    assert len(CONTEXT_NAMES) >= 12
    reference = {name: context_feature(background_array(name, 0)) for name in CONTEXT_NAMES}
    for a, b in itertools.combinations(CONTEXT_NAMES, 2):
        assert np.linalg.norm(reference[a] - reference[b]) > 30, (a, b)
        assert np.abs(background_array(a, 0).astype(np.float64) - background_array(b, 0)).mean() > 10, (a, b)
    for seed in (1, 2, 3):  # another seed's variation is still nearest its own context
        for name in CONTEXT_NAMES:
            feature = context_feature(background_array(name, seed))
            assert min(reference, key=lambda other: np.linalg.norm(feature - reference[other])) == name


def test_every_modifier_changes_the_drawing():
    pose = Pose(scale=85)
    for class_name in ("dog", "cat", "teapot", "can"):
        plain = render_array(Scene(class_name, 4, "in the snow", None, pose, seed=5)).astype(np.float64)
        for modifier in modifiers_for(class_name):
            dressed = render_array(Scene(class_name, 4, "in the snow", modifier.name, pose, seed=5))
            changed = np.abs(dressed - plain).max(axis=2) > 30
            assert changed.sum() > 25, (class_name, modifier.name)
    with pytest.raises(ValueError, match="live"):
        render_array(Scene("teapot", 0, None, "wearing a red hat"))


# ------------------------------------------------------------------ words

def test_captions_read_like_dreambench_prompts_and_parse_back():
    assert caption(Scene("dog", 0, "in the snow")) == "a dog in the snow"
    assert caption(Scene("teapot", 0, "on the beach", "red")) == "a red teapot on the beach"
    assert caption(Scene("cat", 0, "in the jungle", "wearing a red hat")) == "a cat wearing a red hat in the jungle"
    assert caption(Scene("dog", 0)) == "a photo of a dog"
    assert caption(Scene("can", 0, None, "wet")) == "a wet can"
    for scene in pretraining_scenes(300, seed=4):
        template = caption(scene).replace(f" {scene.class_name}", " {}", 1)
        assert parse_template(template) == (scene.modifier, scene.context)
    for bad in ("a cube shaped {}", "a {} on top of a mirror", "a {} wearing a red hat wearing pink glasses", "{}"):
        with pytest.raises(ValueError):
            parse_template(bad)


def test_every_prompt_template_of_the_dataset_maps_to_a_scene(isolated_cache):
    dataset = open_dataset("toyworld")  # opening draws nothing
    for subject in dataset.subjects:
        for index, template in enumerate(dataset.prompts_for(subject)):
            scene = scene_for_prompt(subject, template, seed=index)
            assert (scene.class_name, scene.instance_id) == subject_instance(subject.name)
            assert caption(scene) == template.format(subject.class_noun)
            assert render_array(scene).shape == (64, 64, 3)
    snow = "a {} in the snow"
    assert scene_for_prompt("vase", snow, instance_id=9) == scene_for_template("vase", 9, snow)
    with pytest.raises(ValueError, match="live"):
        scene_for_prompt("teapot", "a {} wearing a red hat")


# ------------------------------------------------------------------ the dataset

def test_the_toyworld_dataset_opens_with_held_out_subjects(isolated_cache):
    assert "toyworld" in DATASETS
    dataset = open_dataset("toyworld")
    assert not isolated_cache.exists()  # planning draws nothing
    assert len(dataset.subjects) >= 10 and sum(s.live for s in dataset.subjects) >= 2
    assert {"dog", "dog2", "cat", "cat2"} <= {s.name for s in dataset.subjects}
    assert dataset.object_prompts == OBJECT_PROMPTS and dataset.live_prompts == LIVE_PROMPTS
    assert 18 <= len(OBJECT_PROMPTS) <= 25 and 18 <= len(LIVE_PROMPTS) <= 25
    assert all(t.count("{}") == 1 for t in OBJECT_PROMPTS + LIVE_PROMPTS)
    assert not any("wearing" in t or "outfit" in t for t in OBJECT_PROMPTS)
    for subject in dataset.subjects:
        images = subject.load_images()
        assert 4 <= len(images) <= 6 and all(image.size == (64, 64) for image in images)
        assert isolated_cache in subject.image_paths[0].parents


def test_the_drawn_files_match_the_committed_manifest(isolated_cache, tmp_path):
    manifest = load_manifest("toyworld")
    dataset = open_dataset("toyworld")
    cache_folder = dataset.subjects[0].image_paths[0].parent.parent
    copy = tmp_path / "copy"
    write_toyworld_images(copy)
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.png")) == \
        sorted(entry.path for entry in manifest.entries)
    for entry in manifest.entries:
        for folder in (cache_folder, copy):
            data = (folder / entry.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry.digest and len(data) == entry.size, entry.path
    with Image.open(copy / manifest.entries[0].path) as image:
        assert image.mode == "RGB" and image.size == (64, 64)
    # a given root is read and checked, never written: a damaged copy is a UserError
    assert open_dataset("toyworld", root=str(copy)).subject("dog").image_paths[0].parent == copy / "dog"
    (copy / "dog" / "02.png").write_bytes(b"not a png")
    with pytest.raises(UserError):
        open_dataset("toyworld", root=str(copy))


def test_the_picture_grid_has_a_row_per_class_and_a_column_per_context(tmp_path):
    path = picture_grid(tmp_path / "grid.png", zoom=1)
    with Image.open(path) as image:
        assert image.size == ((len(CONTEXT_NAMES) + 1) * 66 + 2, len(CLASSES) * 66 + 2)


def test_toyworld_is_a_protocol_dataset_with_nothing_to_fetch(tmp_path):
    from varbench.data.sources import dataset_source
    from varbench.preflight import dataset_requirement
    from varbench.protocol import load_protocol

    with pytest.raises(UserError, match="toyworld dataset is generated locally"):
        dataset_source("toyworld")
    text = "name: tw\nversion: 1\ndata: {dataset: toyworld}\narms: [{method: toy}]\nmetrics: {backbones: tiny}\n"
    (tmp_path / "tw.yaml").write_text(text)
    protocol = load_protocol(str(tmp_path / "tw.yaml"))
    assert dataset_requirement(protocol, None).found  # drawn on first use
    (tmp_path / "copy" / "dog").mkdir(parents=True)
    wrong = dataset_requirement(protocol, str(tmp_path / "copy"))  # a given copy is checked
    assert not wrong.found and "unchanged copy" in wrong.how
