"""Published results beside measured ones: the shipped file, its validation, where its rows
appear (same dataset and metric mode only), that they never enter statistics, and the
real-vs-real ceiling note."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from varbench.errors import UserError
from varbench.report.formats import to_csv, to_html, to_markdown
from varbench.report.published import load_published, published_for, real_vs_real
from varbench.report.results import load_results
from varbench.report.section import build_views
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run
from varbench.report.tables import comparison_table
from varbench.report.spec import ReportSpec
from varbench.schema import from_dict

SUBJECTS = [SyntheticSubject("dog", "dog", live=True, offset=0.0),
            SyntheticSubject("can", "can", live=False, offset=0.1)]
SECTION = {"name": "main", "protocols": ["dreambench"], "columns": ["dino", "clip_i", "clip_t"]}
GOOD_ENTRY = """\
  - dataset: dreambench
    mode: canonical
    method: Real images
    kind: real
    metrics: {dino: 0.774, clip_i: 0.885}
    source: {cite: Ruiz et al. 2023, table: Table 1, arxiv: "2208.12242"}
"""


def table_for(root: Path, section: dict = SECTION):
    spec = from_dict(ReportSpec, {"sections": [section]}, "test spec")
    views, _ = build_views(spec, load_results(root))
    assert len(views) == 1
    return comparison_table(views[0])


def write_runs(root: Path, *arms: SyntheticArm, dataset: str = "dreambench", mode: str = "canonical") -> None:
    for arm in arms:
        write_synthetic_run(root, "dreambench", arm, SUBJECTS, dataset=dataset, mode=mode)


def test_shipped_file_holds_the_dreambooth_paper_table_1_rows():
    entries = {entry.method: entry for entry in load_published()}
    assert set(entries) == {"Real images", "DreamBooth (Imagen)", "DreamBooth (SD)", "Textual Inversion (SD)"}
    assert entries["Real images"].metrics == {"dino": 0.774, "clip_i": 0.885}
    assert entries["Real images"].kind == "real"
    assert entries["DreamBooth (SD)"].metrics == {"dino": 0.668, "clip_i": 0.803, "clip_t": 0.305}
    assert entries["DreamBooth (Imagen)"].metrics == {"dino": 0.696, "clip_i": 0.812, "clip_t": 0.306}
    assert entries["Textual Inversion (SD)"].metrics == {"dino": 0.569, "clip_i": 0.780, "clip_t": 0.255}
    for entry in entries.values():
        assert (entry.dataset, entry.mode) == ("dreambench", "canonical")
        assert (entry.source.table, entry.source.arxiv, entry.source.cite) == ("Table 1", "2208.12242",
                                                                              "Ruiz et al. 2023")
    assert entries["DreamBooth (SD)"].label == "published: DreamBooth (SD), Ruiz et al. 2023, Table 1"


def test_ceiling_is_the_real_vs_real_value_of_that_dataset_and_mode_only():
    assert real_vs_real("dreambench", "canonical") == 0.774
    assert real_vs_real("dreambench", "canonical", "clip_i") == 0.885
    assert real_vs_real("dreambench", "canonical", "clip_t") is None
    assert real_vs_real("dreambench", "dreammatcher") is None  # another evaluator: another scale of values
    assert real_vs_real("vico", "canonical") is None
    assert [e.method for e in published_for("dreambench", "canonical")][:1] == ["Real images"]
    assert published_for("smoke", "canonical") == []


@pytest.mark.parametrize("entries, expected", [
    (GOOD_ENTRY + "    colour: red\n", "unknown key 'colour' at entries[0]"),
    ("  - {dataset: dreambench, mode: canonical, method: X, metrics: {dino: 0.5}}\n",
     "missing required key 'entries[0].source'"),
    (GOOD_ENTRY.replace("mode: canonical", "mode: canon"), "unknown metric mode 'canon'"),
    (GOOD_ENTRY.replace("clip_i:", "clipi:"), "unknown metric 'clipi'"),
    (GOOD_ENTRY.replace("0.774", "77.4"), "metrics.dino = 77.4 is outside [-1, 1] for mode canonical"),
    (GOOD_ENTRY.replace("0.774", '"0.774"'), "entries[0].metrics.dino"),
    (GOOD_ENTRY.replace("{dino: 0.774, clip_i: 0.885}", "{}"), "entry gives no metric values"),
    (GOOD_ENTRY.replace('"2208.12242"', "arXiv:2208.12242"), "entries[0].source.arxiv"),
    (GOOD_ENTRY + GOOD_ENTRY, "two real-vs-real entries for dataset dreambench, mode canonical"),
])
def test_malformed_entries_are_one_line_errors_naming_file_and_entry(tmp_path: Path, entries: str, expected: str):
    path = tmp_path / "published.yaml"
    path.write_text("entries:\n" + entries, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_published(path)
    line = caught.value.line()
    assert expected in line and str(path) in line and "\n" not in line
    assert "entries[" in line or "Real images" in line or "two real-vs-real" in line  # which entry


def test_a_file_without_an_entries_list_is_refused(tmp_path: Path):
    path = tmp_path / "published.yaml"
    path.write_text("- dataset: dreambench\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds one key, 'entries:'"):
        load_published(path)


def test_published_rows_follow_the_measured_ones_only_for_the_same_dataset_and_mode(tmp_path: Path):
    arm = SyntheticArm("arbooth", "arbooth", {"dino": 0.5, "clip_i": 0.6, "clip_t": 0.3})
    write_runs(tmp_path / "dreambench", arm)
    table = table_for(tmp_path / "dreambench")
    assert [row[0].text for row in table.rows] == ["arbooth"]
    assert [row[0].text for row in table.published] == [
        "published: Real images, Ruiz et al. 2023, Table 1",
        "published: DreamBooth (Imagen), Ruiz et al. 2023, Table 1",
        "published: DreamBooth (SD), Ruiz et al. 2023, Table 1",
        "published: Textual Inversion (SD), Ruiz et al. 2023, Table 1"]
    assert [entry.text for entry in table.published[2][3:6]] == ["0.668", "0.803", "0.305"]
    assert table.published[0][5].text == "—"  # real images: no CLIP-T
    markdown = to_markdown(table)
    assert markdown.index("| arbooth |") < markdown.index("| *published: Real images, Ruiz et al. 2023, Table 1* |")

    write_runs(tmp_path / "other_mode", arm, mode="dreammatcher")  # same dataset, another evaluator
    write_runs(tmp_path / "other_data", arm, dataset="smoke")  # same mode, another dataset
    assert table_for(tmp_path / "other_mode").published == []
    assert table_for(tmp_path / "other_data").published == []
    assert table_for(tmp_path / "dreambench", {**SECTION, "published": False}).published == []


def test_published_rows_take_part_in_no_highlight_statistic_or_csv(tmp_path: Path):
    low = SyntheticArm("arbooth", "arbooth", {"dino": 0.5, "clip_i": 0.6, "clip_t": 0.3})
    high = SyntheticArm("dreambooth", "dreambooth", {"dino": 0.55, "clip_i": 0.65, "clip_t": 0.31})
    write_runs(tmp_path, low, high)
    table = table_for(tmp_path)
    dino = [c.key for c in table.columns].index("dino")
    # the published 0.774 is higher, yet the best measured row is the bold one
    assert [row[dino].best for row in table.rows] == [False, True]
    assert not any(entry.best or entry.value is not None for row in table.published for entry in row)
    records = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["arm"] for r in records] == ["arbooth", "dreambooth"]
    page = to_html(table)
    assert page.count('<tbody class="published">') == 1
    assert page.index("dreambooth") < page.index('<tbody class="published">') < page.index("published: Real images")


def test_dino_above_the_real_vs_real_ceiling_gets_a_note(tmp_path: Path):
    copier = SyntheticArm("copier", "reference_copy", {"dino": 0.80, "clip_i": 0.9, "clip_t": 0.2})
    honest = SyntheticArm("arbooth", "arbooth", {"dino": 0.6, "clip_i": 0.7, "clip_t": 0.3})
    write_runs(tmp_path / "dreambench", copier, honest)
    notes = table_for(tmp_path / "dreambench").notes
    ceiling = [note for note in notes if "ceiling" in note]
    assert ceiling == ["copier's DINO (0.850) exceeds the real-vs-real ceiling 0.774 of this dataset: "
                       "it may copy the references."]  # 0.80 plus the mean subject offset 0.05
    write_runs(tmp_path / "smoke", copier, dataset="smoke")  # no published ceiling for this dataset
    assert not any("ceiling" in note for note in table_for(tmp_path / "smoke").notes)
