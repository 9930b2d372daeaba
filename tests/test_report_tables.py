"""Report tables on synthetic results with known values: golden Markdown, LaTeX structure,
CSV numbers, partial results, repeated arms, live/object split, paired tests."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from varbench.schema import from_dict
from varbench.report.formats import latex_escape, to_csv, to_latex, to_markdown
from varbench.report.results import RANDOM_INIT_NOTE, load_results
from varbench.report.section import build_views
from varbench.report.spec import ReportSpec
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run
from varbench.report.table_model import format_duration
from varbench.report.tables import comparison_table, min_paired_subjects, paired_table, split_table

SUBJECTS = [SyntheticSubject("dog", "dog", live=True, offset=0.0),
            SyntheticSubject("can", "can", live=False, offset=0.1)]
ARBOOTH = SyntheticArm("arbooth", "arbooth", {"dino": 0.6, "clip_i": 0.7, "clip_t": 0.3, "div": 0.4, "pres": 0.5},
                       fit_seconds=840.0, seconds_per_image=0.8, trainable_parameters=1_611_145_216,
                       artifact_bytes=3_222_290_432)
CUSTOM = SyntheticArm("custom_diffusion", "custom_diffusion",
                      {"dino": 0.5, "clip_i": 0.75, "clip_t": 0.31, "div": 0.45, "pres": 0.45},
                      fit_seconds=360.0, seconds_per_image=1.33, trainable_parameters=19_142_912,
                      artifact_bytes=76_591_104)
MAIN_SECTION = {"name": "main", "title": "Main comparison", "protocols": ["dreambench"],
                "arms": [{"arm": "arbooth", "label": "ARBooth"}, {"arm": "custom_diffusion"}]}

GOLDEN_MAIN = """\
### Main comparison: protocol dreambench

| Method | Run | Cells | DINO ↑ | CLIP-I ↑ | CLIP-T ↑ | DIV ↑ | PRES ↓ | Fit time ↓ | s / image ↓ | Trainable params ↓ | Artifact size ↓ |
| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| ARBooth | {arbooth} | 2/2 | **0.650** [0.600, 0.700] | 0.750 [0.700, 0.800] | 0.350 [0.300, 0.400] | 0.450 [0.400, 0.500] | 0.550 [0.500, 0.600] | 14 min | **0.80** | 1.61 B | 3.22 GB |
| custom_diffusion | {custom} | 2/2 | 0.550 [0.500, 0.600] | **0.800** [0.750, 0.850] | **0.360** [0.310, 0.410] | **0.500** [0.450, 0.550] | **0.500** [0.450, 0.550] | **6.0 min** | 1.33 | **19.1 M** | **76.6 MB** |
| *published: Real images, Ruiz et al. 2023, Table 1* | *arXiv 2208.12242* | *published* | *0.774* | *0.885* | — | — | — | — | — | — | — |
| *published: DreamBooth (Imagen), Ruiz et al. 2023, Table 1* | *arXiv 2208.12242* | *published* | *0.696* | *0.812* | *0.306* | — | — | — | — | — | — |
| *published: DreamBooth (SD), Ruiz et al. 2023, Table 1* | *arXiv 2208.12242* | *published* | *0.668* | *0.803* | *0.305* | — | — | — | — | — | — |
| *published: Textual Inversion (SD), Ruiz et al. 2023, Table 1* | *arXiv 2208.12242* | *published* | *0.569* | *0.780* | *0.255* | — | — | — | — | — | — |

Per-arm comparison. Metric mode: canonical. Device: NVIDIA H100 80GB HBM3. Mean over subjects with 95% percentile-bootstrap CI over subjects (10,000 resamples, seed 0).

- Published rows (italic, last) are quoted, not measured here, and take part in no statistic or highlight: Ruiz et al. 2023, DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven Generation (CVPR 2023), arXiv 2208.12242. Sources and notes: varbench/report/published.yaml.
"""


def make_spec(*sections: dict) -> ReportSpec:
    return from_dict(ReportSpec, {"sections": list(sections)}, "test spec")


def one_view(root: Path, section: dict = MAIN_SECTION):
    views, skipped = build_views(make_spec(section), load_results(root))
    assert len(views) == 1, (views, skipped)
    return views[0]


@pytest.fixture()
def main_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    ids = {}
    for arm in (ARBOOTH, CUSTOM):
        run = write_synthetic_run(tmp_path, "dreambench", arm, SUBJECTS, random_init=False,
                                  device="NVIDIA H100 80GB HBM3", dataset="dreambench")
        ids[arm.arm] = run.run_id
    return tmp_path, ids


def test_main_table_markdown_matches_golden(main_root):
    root, ids = main_root
    markdown = to_markdown(comparison_table(one_view(root)))
    assert markdown == GOLDEN_MAIN.format(arbooth=ids["arbooth"], custom=ids["custom_diffusion"])


def test_latex_table_structure_and_escaping(main_root):
    root, _ = main_root
    latex = to_latex(comparison_table(one_view(root)))
    lines = [line.strip() for line in latex.splitlines()]
    rules = [line for line in lines if line in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert rules == [r"\toprule", r"\midrule", r"\midrule", r"\bottomrule"]  # a rule above the published rows
    assert r"\begin{tabular}{lrrrrrrrrr}" in lines  # label + 9 value columns; no run id column
    first_rule = lines.index(r"\midrule")
    second_rule = lines.index(r"\midrule", first_rule + 1)
    body = lines[first_rule + 1:second_rule]
    assert len(body) == 2 and all(row.endswith(r"\\") and row.count(" & ") == 9 for row in body)
    published = lines[second_rule + 1:lines.index(r"\bottomrule")]
    assert len(published) == 4 and all(row.startswith(r"\textit{published: ") for row in published)
    assert r"\textit{0.668} & \textit{0.803} & \textit{0.305}" in published[2]  # DreamBooth (SD), Table 1
    assert r"\textbf" not in "".join(published)
    assert body[1].startswith(r"custom\_diffusion & ")
    assert r"\textbf{0.650} {\scriptsize [0.600, 0.700]}" in body[0]
    assert r"DINO $\uparrow$" in latex and r"PRES $\downarrow$" in latex
    assert re.search(r"(?<!\\)_", latex.replace(r"\_", "")) is None  # every underscore escaped
    assert latex.startswith(r"\begin{table}") and latex.rstrip().endswith(r"\end{table}")


def test_latex_escape_of_special_characters():
    assert latex_escape("a_b & 50% #1 $x {y} ~^ \\") == (
        r"a\_b \& 50\% \#1 \$x \{y\} \textasciitilde{}\textasciicircum{} \textbackslash{}")
    assert latex_escape("soft, λ = 0.5†") == r"soft, $\lambda$ = 0.5\textsuperscript{\dag}"


def test_csv_holds_full_precision_numbers(main_root):
    root, ids = main_root
    rows = list(csv.DictReader(io.StringIO(to_csv(comparison_table(one_view(root))))))
    by_run = {row["run_id"]: row for row in rows}
    arbooth = by_run[ids["arbooth"]]
    assert float(arbooth["dino_mean"]) == pytest.approx(0.65)
    assert float(arbooth["dino_ci_low"]) == pytest.approx(0.6) and float(arbooth["dino_ci_high"]) == pytest.approx(0.7)
    assert int(arbooth["dino_n_subjects"]) == 2
    assert float(arbooth["fit_minutes"]) == pytest.approx(14.0)
    assert float(arbooth["seconds_per_image"]) == pytest.approx(0.8)
    assert int(float(arbooth["trainable_parameters"])) == 1_611_145_216
    assert by_run[ids["custom_diffusion"]]["label"] == "custom_diffusion"
    assert arbooth["cells_done"] == "2" and arbooth["cells_failed"] == "0"


def test_partial_results_are_marked_not_dropped(tmp_path: Path):
    subjects = SUBJECTS + [SyntheticSubject("cat", "cat", live=True, offset=0.05)]
    failing = SyntheticArm("arbooth", "arbooth", {"dino": 0.6, "clip_i": 0.7, "clip_t": 0.3},
                           states={"can": "failed", "cat": "absent"})
    write_synthetic_run(tmp_path, "dreambench", failing, subjects)
    write_synthetic_run(tmp_path, "dreambench", CUSTOM, subjects)
    section = {**MAIN_SECTION, "arms": [*MAIN_SECTION["arms"], {"arm": "dreambooth", "label": "DreamBooth"}]}
    table = comparison_table(one_view(tmp_path, section))
    rows = {row[0].text: row for row in table.rows}
    assert rows["ARBooth"][0].mark == "†"
    assert rows["ARBooth"][2].text == "1/3 (1 failed, 1 pending)"
    assert rows["ARBooth"][3].text == "0.600" and rows["ARBooth"][3].detail == "(n = 1)"  # only dog is done
    assert rows["DreamBooth"][2].text == "no results" and rows["DreamBooth"][0].mark == "†"
    assert rows["custom_diffusion"][2].text == "3/3"
    markdown = to_markdown(table)
    assert "No results yet for DreamBooth" in markdown and "Not every subject is done for ARBooth" in markdown
    assert RANDOM_INIT_NOTE in table.caption


def test_two_runs_of_one_arm_are_both_shown(tmp_path: Path):
    first = write_synthetic_run(tmp_path, "dreambench", ARBOOTH, SUBJECTS)
    changed = SyntheticArm("arbooth", "arbooth", {"dino": 0.2, "clip_i": 0.2, "clip_t": 0.2}, config={"lr": 2e-5})
    second = write_synthetic_run(tmp_path, "dreambench", changed, SUBJECTS)
    table = comparison_table(one_view(tmp_path))
    shown = {row[1].text: row[0].text for row in table.rows}
    assert first.run_id != second.run_id and {first.run_id, second.run_id} <= set(shown)
    assert shown[first.run_id] != shown[second.run_id]
    assert shown[first.run_id].startswith("ARBooth [") and first.run_id.split("-")[-1][:6] in shown[first.run_id]
    assert any("Several runs of ARBooth" in note for note in table.notes)


def test_split_table_separates_live_and_object_subjects(main_root):
    root, ids = main_root
    table = split_table(one_view(root))
    headers = [c.header for c in table.columns]
    assert headers[:4] == ["Method", "Run", "Cells", "Subjects (live / object)"]
    row = next(r for r in table.rows if r[1].text == ids["arbooth"])
    values = {c.key: e.text for c, e in zip(table.columns, row)}
    assert values["subjects"] == "1 / 1"
    assert values["dino_live"] == "0.600" and values["dino_object"] == "0.700"
    assert values["clip_t_live"] == "0.300" and values["clip_t_object"] == "0.400"
    assert "DINO live" in to_markdown(table)


def test_paired_table_reports_wilcoxon_against_the_reference(tmp_path: Path):
    subjects = [SyntheticSubject(f"s{i}", "toy", live=False, offset=0.01 * i) for i in range(6)]
    reference = SyntheticArm("arbooth", "arbooth", {"dino": 0.5, "clip_i": 0.5, "clip_t": 0.3})
    better = SyntheticArm("dreambooth", "dreambooth", {"dino": 0.6, "clip_i": 0.5, "clip_t": 0.3})
    for arm in (reference, better):
        write_synthetic_run(tmp_path, "dreambench", arm, subjects)
    section = {"name": "main", "protocols": ["dreambench"], "reference_arm": "arbooth"}
    table = paired_table(one_view(tmp_path, section))
    assert len(table.rows) == 1 and table.rows[0][0].text == "dreambooth"
    dino = table.rows[0][2]
    assert dino.text == "+0.100" and dino.detail == "(p = 0.0312, n = 6)"  # exact: 2 / 2**6
    assert table.rows[0][3].detail == "(p = n/a, n = 6)"  # CLIP-I: every difference is zero
    assert table.records[0]["dino_p_value"] == pytest.approx(0.03125)
    assert table.notes == []


def test_modes_are_never_mixed_in_one_table(tmp_path: Path):
    write_synthetic_run(tmp_path, "vico", ARBOOTH, SUBJECTS, mode="dreammatcher")
    write_synthetic_run(tmp_path, "vico", CUSTOM, SUBJECTS, mode="canonical")
    views, _ = build_views(make_spec({"name": "vico", "protocols": ["vico"]}), load_results(tmp_path))
    assert [(v.mode, [r.arm for r in v.rows]) for v in views] == [
        ("canonical", ["custom_diffusion"]), ("dreammatcher", ["arbooth"])]
    assert {v.stem for v in views} == {"vico-vico-canonical", "vico-vico-dreammatcher"}
    assert "Metric mode: dreammatcher." in comparison_table(views[1]).caption


def test_missing_protocol_is_a_note_not_an_error(main_root):
    root, _ = main_root
    spec = make_spec(MAIN_SECTION, {"name": "layers", "protocols": ["ablation_layers", "ablation_layers_tiny"]})
    views, skipped = build_views(spec, load_results(root))
    assert [v.spec.name for v in views] == ["main"]
    assert skipped == ["Section 'layers': no results for protocol(s) ablation_layers, ablation_layers_tiny; skipped."]


def test_ablation_rows_follow_the_spec_with_parameters(tmp_path: Path):
    for weight in (0.0, 0.5, 1.0):
        arm = SyntheticArm(f"distill-soft-l{weight}", "arbooth", {"dino": 0.5 + weight / 10, "clip_i": 0.6,
                                                                   "clip_t": 0.3}, config={"distill_weight": weight})
        write_synthetic_run(tmp_path, "ablation_distill_tiny", arm, SUBJECTS)
    section = {"name": "distill", "protocols": ["ablation_distill", "ablation_distill_tiny"],
               "row_header": "Distillation", "parameter": {"key": "config.distill_weight", "label": "λ"},
               "arms": [{"arm": "distill-soft-l1.0", "label": "λ = 1"}, {"arm": "distill-soft-l0.0", "label": "off"}],
               "other_arms": "omit", "columns": ["dino", "clip_t"]}
    view = one_view(tmp_path, section)
    table = comparison_table(view)
    assert [row[0].text for row in table.rows] == ["λ = 1", "off"]
    # the spec lists DINO and CLIP-T; artifact size is in the results, so it is shown too
    assert [c.header for c in table.columns] == ["Distillation", "Run", "Cells", "λ", "DINO", "CLIP-T",
                                                 "Artifact size"]
    assert [row[3].text for row in table.rows] == ["1", "0"]
    assert table.rows[0][4].best and not table.rows[1][4].best
    assert any("distill-soft-l0.5" in note and "Not shown" in note for note in table.notes)


def test_copies_column_shows_the_share_of_near_copies_whenever_copy_rows_exist(tmp_path: Path):
    copier = SyntheticArm("copier", "reference_copy", {"dino": 0.7, "clip_i": 0.8, "clip_t": 0.2, "copy": 0.25})
    clean = SyntheticArm("arbooth", "arbooth", {"dino": 0.6, "clip_i": 0.7, "clip_t": 0.3, "copy": 0.0})
    unscored = SyntheticArm("dreambooth", "dreambooth", {"dino": 0.5, "clip_i": 0.7, "clip_t": 0.3})
    for arm in (copier, clean, unscored):
        write_synthetic_run(tmp_path, "smoke", arm, SUBJECTS)
    section = {"name": "s", "protocols": ["smoke"], "columns": ["dino", "clip_t"]}  # copies not listed
    table = comparison_table(one_view(tmp_path, section))
    keys = [c.key for c in table.columns]
    assert keys[3:] == ["dino", "clip_t", "copy", "artifact_bytes"]
    copies = {row[0].text: row[keys.index("copy")] for row in table.rows}
    # 2 subjects x 2 prompts x 2 samples = 8 images; a quarter of each subject's are copies
    assert (copies["copier"].text, copies["copier"].detail) == ("25.0%", "(2 of 8)")
    assert (copies["arbooth"].text, copies["arbooth"].detail) == ("0.0%", "(0 of 8)")
    assert copies["dreambooth"].text == "—"
    assert not any(entry.best for entry in copies.values())  # a guard, never a highlighted score
    header = next(line for line in to_markdown(table).splitlines() if line.startswith("| Method"))
    assert "| Copies |" in header
    records = {r["arm"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert float(records["copier"]["copy_share"]) == 0.25 and records["copier"]["copies"] == "2"


def test_div_pres_and_artifact_size_are_shown_whenever_computed(tmp_path: Path):
    write_synthetic_run(tmp_path / "with", "dreambench", ARBOOTH, SUBJECTS)  # DIV, PRES scored; artifact kept
    plain = SyntheticArm("arbooth", "arbooth", {"dino": 0.6, "clip_i": 0.7, "clip_t": 0.3})
    write_synthetic_run(tmp_path / "without", "dreambench", plain, SUBJECTS)
    section = {"name": "s", "protocols": ["dreambench"], "columns": ["dino", "clip_t", "fit_seconds"]}
    shown = [c.header for c in comparison_table(one_view(tmp_path / "with", section)).columns][3:]
    assert shown == ["DINO", "CLIP-T", "DIV", "PRES", "Fit time", "Artifact size"]  # each in its place
    shown = [c.header for c in comparison_table(one_view(tmp_path / "without", section)).columns][3:]
    assert shown == ["DINO", "CLIP-T", "Fit time", "Artifact size"]  # no DIV or PRES rows: no columns


def test_fit_time_is_in_seconds_under_a_minute_and_in_minutes_above(tmp_path: Path):
    quick = SyntheticArm("quick", "textual_inversion", {"dino": 0.5}, fit_seconds=42.0)
    slow = SyntheticArm("slow", "arbooth", {"dino": 0.5}, fit_seconds=840.0)
    tiny = SyntheticArm("tiny", "dreambooth", {"dino": 0.5}, fit_seconds=0.41)
    for arm in (quick, slow, tiny):
        write_synthetic_run(tmp_path, "smoke", arm, SUBJECTS)
    for columns in (["fit_minutes"], ["fit_seconds"]):  # either spec key: one readable column
        table = comparison_table(one_view(tmp_path, {"name": "s", "protocols": ["smoke"], "columns": columns}))
        index = [c.header for c in table.columns].index("Fit time")
        assert {row[0].text: row[index].text for row in table.rows} == {"quick": "42 s", "slow": "14 min",
                                                                         "tiny": "0.41 s"}
        assert [row[index].best for row in table.rows] == [False, False, True]
    assert format_duration(59.4) == ("59 s", 59.0) and format_duration(90) == ("1.5 min", 90.0)
    assert format_duration(None) == ("—", None)


def test_paired_tests_need_enough_subjects_to_reach_the_confidence_level(tmp_path: Path):
    subjects = [SyntheticSubject(f"s{i}", "toy", live=False, offset=0.01 * i) for i in range(3)]
    for arm in (SyntheticArm("arbooth", "arbooth", {"dino": 0.5, "clip_t": 0.3}),
                SyntheticArm("dreambooth", "dreambooth", {"dino": 0.6, "clip_t": 0.3})):
        write_synthetic_run(tmp_path, "dreambench", arm, subjects)
    section = {"name": "main", "protocols": ["dreambench"], "reference_arm": "arbooth", "metrics": ["dino", "clip_t"]}
    table = paired_table(one_view(tmp_path, section))
    dino = table.rows[0][2]
    assert (dino.text, dino.detail) == ("+0.100", "(n = 3)")  # Δ stays, the p-value goes
    assert "p =" not in to_markdown(table).split("\n\n")[0]
    assert table.records[0]["dino_p_value"] is None and table.records[0]["dino_n_subjects"] == 3
    assert len(table.notes) == 1 and table.notes[0].lower().startswith(
        "too few subjects (n=3) for a paired test at 95%")
    assert (min_paired_subjects(0.95), min_paired_subjects(0.99), min_paired_subjects(0.9)) == (6, 8, 5)
