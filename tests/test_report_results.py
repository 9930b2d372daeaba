"""Reading a results root: cell states, expected subjects, timings of resumed cells, errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from varbench.report.results import latest_phases, load_results
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run
from varbench.store import TIMING_COLUMNS

SUBJECTS = [SyntheticSubject("dog", "dog", live=True), SyntheticSubject("can", "can", live=False)]


def timing(phase: str, seconds: float, items: int, session: str) -> dict:
    return {"phase": phase, "seconds": str(seconds), "items": str(items), "session": session,
            "peak_memory_bytes": "0"}


def test_latest_session_wins_and_batches_of_one_session_add_up():
    sessions = [{"session": "b", "started": "2026-01-02T00:00:00"}, {"session": "a", "started": "2026-01-01T00:00:00"}]
    rows = [timing("fit", 100.0, 10, "a"), timing("generate", 8.0, 4, "a"),
            timing("fit", 90.0, 10, "b"),  # the resumed session refit: its time counts
            timing("generate_warmup", 5.0, 4, "b"), timing("generate", 2.0, 4, "b"), timing("generate", 4.0, 4, "b")]
    phases = latest_phases(pd.DataFrame(rows), sessions)
    assert phases["fit"]["seconds"] == 90.0
    assert (phases["generate"]["seconds"], phases["generate"]["items"]) == (6.0, 8)
    assert phases["generate_warmup"]["seconds"] == 5.0


def test_seconds_per_image_excludes_warmup_and_falls_back_to_it(tmp_path: Path):
    arm = SyntheticArm("a", "arbooth", {"dino": 0.5}, fit_seconds=120.0, seconds_per_image=0.25)
    run = write_synthetic_run(tmp_path, "p", arm, SUBJECTS)
    cell = run.cell("can")  # one batch only: the runner records it as "generate" ...
    rows = [r for r in cell.rows("timings") if r["phase"] != "generate"]
    cell.replace_rows("timings", TIMING_COLUMNS, rows)  # ... here only the warm-up row is left
    cells = load_results(tmp_path)["p"].cells.set_index("subject")
    assert cells.loc["dog", "seconds_per_image"] == pytest.approx(0.25)  # warm-up batch excluded
    assert cells.loc["can", "seconds_per_image"] == pytest.approx(2.5)  # the warm-up row: 10 x 0.25 s, 1 image
    assert cells.loc["dog", "fit_seconds"] == 120.0 and cells.loc["dog", "load_seconds"] == 5.0


def test_expected_subjects_come_from_every_run_and_missing_cells_are_pending(tmp_path: Path):
    write_synthetic_run(tmp_path, "p", SyntheticArm("a", "arbooth", {"dino": 0.5}), SUBJECTS)
    write_synthetic_run(tmp_path, "p", SyntheticArm("b", "dreambooth", {"dino": 0.4},
                                                     states={"can": "absent", "dog": "failed"}), SUBJECTS)
    results = load_results(tmp_path)["p"]
    assert results.subjects == ["can", "dog"]
    cells = results.cells[["run_id", "subject", "state"]].itertuples(index=False)
    states = {(results.run(run_id).arm, subject): state for run_id, subject, state in cells}
    assert states == {("a", "can"): "done", ("a", "dog"): "done", ("b", "can"): "pending", ("b", "dog"): "failed"}
    assert set(results.metrics["run_id"]) == {r.run_id for r in results.runs if r.arm == "a"}  # done cells only
    assert results.cells.set_index(["run_id", "subject"])["live"].tolist().count(True) == 2  # dog, in both runs
    assert results.metrics.groupby("subject")["live"].first().to_dict() == {"can": False, "dog": True}


def test_random_init_and_devices_come_from_the_manifest(tmp_path: Path):
    real = write_synthetic_run(tmp_path, "p", SyntheticArm("a", "arbooth", {"dino": 0.5}), SUBJECTS,
                               random_init=False, device="NVIDIA H100 80GB HBM3")
    results = load_results(tmp_path)["p"]
    run = results.run(real.run_id)
    assert not run.random_init and run.devices == ["NVIDIA H100 80GB HBM3"] and run.modes == ["canonical"]
    real.add_session({"session": "later", "started": "2026-02-01T00:00:00", "device": "cpu",
                      "random_init_method": True, "random_init_metrics": False})
    run = load_results(tmp_path)["p"].run(real.run_id)
    assert run.random_init and run.devices == ["NVIDIA H100 80GB HBM3", "cpu"]
    assert run.value_at("metrics.mode") == "canonical" and run.value_at("config.nothing") is None


def test_corrupt_files_are_named_and_never_counted(tmp_path: Path):
    """A corrupt store file no longer stops the whole report (issue 17, store reads
    tolerate garbage): it is named in a warning, its cell is damaged and not averaged,
    and a run whose provenance is unreadable is labelled random-init."""
    run = write_synthetic_run(tmp_path, "p", SyntheticArm("a", "arbooth", {"dino": 0.5}), SUBJECTS)
    (run.dir / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="manifest.json"):
        loaded = load_results(tmp_path)["p"]
    assert loaded.runs[0].random_init
    (run.dir / "manifest.json").write_text('{"sessions": []}', encoding="utf-8")
    (score_id,) = run.scores()
    (run.cell("dog").score_dir(score_id) / "metrics.csv").write_text("run_id,subject\nx,dog\n", encoding="utf-8")
    loaded = load_results(tmp_path)["p"]
    dog = loaded.cells.set_index("subject").loc["dog"]
    assert dog["state"] == "damaged" and "metrics.csv" in dog["error"]
    assert "dog" not in set(loaded.metrics["subject"])


def test_toyworld_runs_are_labelled_toyworld_not_random_init(tmp_path: Path):
    """Trained toyworld encoders on a toyworld base: numbers that mean something in the
    miniature world, captioned as such and never as random-init (issue 22)."""
    write_synthetic_run(tmp_path, "toyworld", SyntheticArm("dreambooth", "dreambooth", {"dino": 0.6}), SUBJECTS,
                        random_init=False, backbones="toyworld", dataset="toyworld")
    write_synthetic_run(tmp_path, "toyworld", SyntheticArm("tiny_db", "dreambooth", {"dino": 0.4}), SUBJECTS,
                        random_init=True, dataset="toyworld")
    runs = {run.arm: run for run in load_results(tmp_path)["toyworld"].runs}
    assert runs["dreambooth"].toyworld and not runs["dreambooth"].random_init
    assert runs["tiny_db"].random_init and not runs["tiny_db"].toyworld


def test_a_toyworld_report_carries_the_known_answers(tmp_path: Path):
    """The method-level known answers appear under a toyworld section, judged from its
    arms' numbers: a tuned arm between the floor and the ceiling holds."""
    from varbench.report import render_report

    for arm, dino in (("no_fit", 0.2), ("reference_copy", 0.95), ("dreambooth", 0.6)):
        write_synthetic_run(tmp_path, "toyworld", SyntheticArm(arm, arm, {"dino": dino}), SUBJECTS,
                            random_init=False, backbones="toyworld", dataset="toyworld")
    render_report(tmp_path, tmp_path / "report")
    table = (tmp_path / "report" / "tables" / "toyworld-toyworld-known-answers.md").read_text()
    assert "dreambooth: DINO above no_fit's" in table and "| holds |" in table


def test_a_toyworld_section_without_floor_or_ceiling_has_no_known_answers_table(tmp_path: Path):
    from varbench.report import render_report

    write_synthetic_run(tmp_path, "toyworld", SyntheticArm("dreambooth", "dreambooth", {"dino": 0.6}), SUBJECTS,
                        random_init=False, backbones="toyworld", dataset="toyworld")
    render_report(tmp_path, tmp_path / "report")
    assert (tmp_path / "report" / "tables" / "toyworld-toyworld-comparison.md").is_file()
    assert not list((tmp_path / "report" / "tables").glob("*known-answers*"))
