"""Subject, class and prompt tables of DreamBench and ViCo equal the published files.

The published files in ../shared/data are parsed here independently of the loaders
(different code: ast.literal_eval of each quoted template, csv-like splitting), and the
ViCo concept table is checked against the shared data README.
"""
from __future__ import annotations

import ast
import re

import pytest
from conftest import SHARED_DATA

from varbench.data import open_dataset
from varbench.data.dreambench import parse_prompts_and_classes
from varbench.data.fetch import DatasetWarning
from varbench.data.manifest import load_manifest
from varbench.data.vico import VICO_CONCEPTS

DREAMBENCH = SHARED_DATA / "dreambench"
VICO = SHARED_DATA / "vico"


def published_dreambench():
    """(classes in file order, object templates, live templates) read the simple way."""
    text = (DREAMBENCH / "prompts_and_classes.txt").read_text()
    table, prompts = text.split("\nPrompts\n")
    rows = [line.split(",", 1) for line in table.splitlines()[3:] if line]
    object_part, live_part = prompts.split("Live Subject Prompts")

    def templates(part):
        quoted = [line[: line.index(".format")] for line in part.splitlines() if ".format(" in line]
        return [ast.literal_eval(q).replace("{0} {1}", "{}") for q in quoted]

    return rows, templates(object_part), templates(live_part)


@pytest.fixture(scope="module")
def dreambench():
    return open_dataset("dreambench", str(DREAMBENCH))


@pytest.fixture(scope="module")
def vico():
    with pytest.warns(DatasetWarning, match="tortoise_plushy"):
        return open_dataset("vico", str(VICO))


def test_dreambench_subjects_and_classes_match_the_published_table(dreambench):
    rows, _, _ = published_dreambench()
    assert [(s.name, s.class_noun) for s in dreambench.subjects] == [(name, noun) for name, noun in rows]
    assert len(dreambench.subjects) == 30
    assert dreambench.subject("bear_plushie").class_noun == "stuffed animal"  # two-word class noun
    assert dreambench.subject("backpack_dog").class_noun == "backpack"  # an object despite its name
    assert "dog4" not in {s.name for s in dreambench.subjects}


def test_dreambench_prompts_match_the_published_text(dreambench):
    _, object_templates, live_templates = published_dreambench()
    assert list(dreambench.object_prompts) == object_templates
    assert list(dreambench.live_prompts) == live_templates
    assert len(dreambench.object_prompts) == 25 and len(dreambench.live_prompts) == 25
    assert dreambench.object_prompts[0] == "a {} in the jungle"
    assert dreambench.live_prompts[-1] == "a cube shaped {}"
    raw = (DREAMBENCH / "prompts_and_classes.txt").read_text()
    for template in dreambench.object_prompts + dreambench.live_prompts:
        assert template.count("{}") == 1
        published = template.replace("{}", "{0} {1}")
        assert f"'{published}'.format(unique_token, class_token)" in raw


def test_dreambench_live_subjects_are_the_cats_and_dogs(dreambench):
    live = {s.name for s in dreambench.subjects if s.live}
    assert live == {"cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"}
    assert {s.class_noun for s in dreambench.subjects if s.live} == {"cat", "dog"}
    assert sum(not s.live for s in dreambench.subjects) == 21
    assert dreambench.prompts_for(dreambench.subject("dog")) == dreambench.live_prompts
    assert dreambench.prompts_for(dreambench.subject("can")) == dreambench.object_prompts


def test_dreambench_image_lists_match_the_folder(dreambench):
    for subject in dreambench.subjects:
        on_disk = sorted(p.name for p in (DREAMBENCH / subject.name).iterdir())
        assert [p.name for p in subject.image_paths] == on_disk
    assert sum(len(s.image_paths) for s in dreambench.subjects) == 158


def test_vico_concept_table_matches_the_data_readme():
    readme = (SHARED_DATA / "README.md").read_text()
    block = readme[readme.index("Concepts (name, class noun, live):"):readme.index("- The paper's protocol")]
    entries = re.findall(r"(\w+) (\w+) (yes|no)", block)
    assert [(name, noun, flag == "yes") for name, noun, flag in entries] == list(VICO_CONCEPTS)
    assert len(VICO_CONCEPTS) == 16
    assert {name for name, _, _ in VICO_CONCEPTS} == set(load_manifest("vico").subjects())


def test_vico_prompts_match_the_published_files_line_for_line(vico):
    assert list(vico.live_prompts) == (VICO / "prompts_live_objects.txt").read_text().split("\n")
    assert list(vico.object_prompts) == (VICO / "prompts_nonlive_objects.txt").read_text().split("\n")
    assert len(vico.live_prompts) == 31 and len(vico.object_prompts) == 31
    # A published quirk kept as is: one object template ends with a space.
    assert vico.object_prompts[24] == "a {} with Japanese modern city street in the background "
    assert vico.live_prompts[24] == "a {} with Japanese modern city street in the background"


def test_vico_shared_copy_opens_without_tortoise_plushy(vico):
    assert vico.absent_subjects == ("tortoise_plushy",)
    assert [s.name for s in vico.subjects] == [name for name, _, _ in VICO_CONCEPTS if name != "tortoise_plushy"]
    assert {s.name for s in vico.subjects if s.live} == {"brown_dog", "fat_dog", "brown_dog2", "black_cat", "brown_cat"}
    assert vico.subject("brown_teddybear").class_noun == "teddybear"
    for subject in vico.subjects:
        assert sorted(p.name for p in subject.image_paths) == sorted(p.name for p in (VICO / subject.name).iterdir())
    with pytest.raises(Exception, match="tortoise_plushy.*absent from this copy.*varbench data fetch vico"):
        vico.subject("tortoise_plushy")


def test_parser_reads_the_published_file_into_three_tables():
    classes, objects, live = parse_prompts_and_classes(DREAMBENCH / "prompts_and_classes.txt")
    assert list(classes)[:3] == ["backpack", "backpack_dog", "bear_plushie"]
    assert set(objects) & set(live) == set(objects[:10]) | set(objects[20:])  # shared scene and style prompts
    assert "a {} wearing a santa hat" in live and "a {} wearing a santa hat" not in objects
