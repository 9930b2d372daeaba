"""Your own subjects: `data: {dataset: folder, root: DIR}` with a subjects.yaml."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import TESTS_DIR
from varbench.data import open_dataset
from varbench.data.smoke import smoke_dataset
from varbench.errors import UserError
from varbench.plan import RunOptions, prepare

DESCRIPTION = """prompts:
  object: ["a {} on the beach", "a {} in the snow"]
  live: ["a {} sleeping"]
subjects:
  - {name: mybag, class: backpack}
  - {name: rex, class: dog, live: true, prompts: ["a {} wearing a hat", "a {} in the rain", "a {} swimming"]}
"""


@pytest.fixture
def subjects(tmp_path, isolated_cache) -> Path:
    folder = tmp_path / "subjects"
    smoke = smoke_dataset(None)
    for name, source in (("mybag", smoke.subjects[0]), ("rex", smoke.subjects[2])):
        (folder / name).mkdir(parents=True)
        for path in source.image_paths[:2]:
            shutil.copy(path, folder / name / path.name)
    (folder / "subjects.yaml").write_text(DESCRIPTION)
    return folder


def protocol_file(tmp_path: Path) -> Path:
    toy = (TESTS_DIR / "protocols" / "toy.yaml").read_text()
    path = tmp_path / "own.yaml"
    own = toy.replace("data: {dataset: smoke}", "data: {dataset: folder, root: subjects}")
    path.write_text(own.replace(toy.splitlines()[5], "prompts: {source: dataset}"))
    return path


def test_subjects_prompts_and_images_come_from_the_folder(subjects):
    dataset = open_dataset("folder", str(subjects))
    bag, rex = dataset.subjects
    assert (bag.class_noun, bag.live, len(bag.image_paths)) == ("backpack", False, 2)
    assert dataset.prompts_for(bag) == ("a {} on the beach", "a {} in the snow")
    assert dataset.prompts_for(rex) == ("a {} wearing a hat", "a {} in the rain", "a {} swimming")


def test_a_run_plans_its_cells_and_hashes_the_images(subjects, tmp_path):
    assert "data: {dataset: smoke}" in (TESTS_DIR / "protocols" / "toy.yaml").read_text()
    assert (TESTS_DIR / "protocols" / "toy.yaml").read_text().splitlines()[5].startswith("prompts:")
    path = protocol_file(tmp_path)
    _, cells = prepare(str(path), RunOptions(results=tmp_path / "results", dry_run=True))
    assert [(c.subject.name, len(c.templates)) for c in cells] == [("mybag", 2), ("rex", 3)]
    before = cells[0].arm.run_id
    first = sorted((subjects / "rex").iterdir())[0]
    first.write_bytes((subjects / "mybag" / sorted(p.name for p in (subjects / "mybag").iterdir())[0]).read_bytes())
    _, cells = prepare(str(path), RunOptions(results=tmp_path / "results", dry_run=True))
    assert cells[0].arm.run_id != before  # another image: another run, never a mix of both


@pytest.mark.parametrize("damage, named", [
    ("no description", "subjects"),
    ("subject without images", "rex"),
    ("unreadable image", "rex"),
    ("unknown key", "subjects.yaml"),
    ("object prompts missing", "subjects.yaml"),
])
def test_a_bad_folder_is_one_line_naming_where(subjects, damage, named):
    if damage == "no description":
        (subjects / "subjects.yaml").unlink()
    elif damage == "subject without images":
        shutil.rmtree(subjects / "rex")
    elif damage == "unreadable image":
        next((subjects / "rex").iterdir()).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    elif damage == "unknown key":
        (subjects / "subjects.yaml").write_text(DESCRIPTION.replace("live: true,", "lives: true,"))
    else:
        (subjects / "subjects.yaml").write_text(DESCRIPTION.replace('object: ["a {} on the beach", '
                                                                    '"a {} in the snow"]', "object: []"))
    with pytest.raises(UserError) as caught:
        open_dataset("folder", str(subjects))
    assert named in str(caught.value.where) and "\n" not in str(caught.value)
