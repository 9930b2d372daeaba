"""End to end through the runner with the toy method on the smoke subjects."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from runner_helpers import image_hashes, metrics_table, phases, run_api, states, write_protocol

SUBJECTS = ["red_robot", "spotted_dog", "striped_mug"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete run, shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("run")
    protocol = write_protocol(tmp)
    assert run_api(protocol, tmp / "results") == 0
    return protocol, tmp / "results"


def test_every_cell_done_with_images_metrics_timings_and_facts(finished):
    _, results = finished
    assert states(results) == {s: "done" for s in SUBJECTS}
    assert len(list(results.rglob("images/*.png"))) == 3 * 2 * 2  # subjects x prompts x samples
    assert len(list(results.rglob("pres/*.png"))) == 3
    metrics = metrics_table(results)
    counts = metrics.groupby("metric").size().to_dict()
    assert counts == {"dino": 12, "clip_i": 12, "clip_t": 12, "div": 6, "pres": 3}
    assert set(metrics["mode"]) == {"canonical"}
    assert (metrics.loc[metrics.metric == "div", "sample_index"] == -1).all()
    assert phases(results, "red_robot")[:2] == ["load", "fit"]
    assert {"generate_warmup", "generate", "pres_generate", "score"} <= set(phases(results, "red_robot"))
    (facts,) = [json.loads(p.read_text()) for p in results.rglob("red_robot/cell.json")]
    assert facts["trainable_parameters"] == 3 and facts["artifact_bytes"] > 0 and facts["class_noun"] == "toy robot"
    losses = pd.read_csv(next(results.rglob("red_robot/losses.csv")))
    assert losses["step"].tolist() == [1, 2, 3, 4, 5, 6] and losses["loss"].iloc[-1] < losses["loss"].iloc[0]


def test_manifest_records_provenance_and_random_init(finished):
    _, results = finished
    (manifest,) = [json.loads(p.read_text()) for p in results.rglob("manifest.json")]
    (session,) = manifest["sessions"]
    assert session["finished"] and session["random_init_metrics"] is True
    assert session["packages"]["torch"] and session["device_type"] == "cpu"
    (identity,) = [json.loads(p.read_text()) for p in results.rglob("run.json")]
    assert identity["method"] == "toy" and identity["config"]["steps"] == 6


def test_rerun_recomputes_nothing(finished, tmp_path):
    protocol, results = finished
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "manifest" not in p.name}
    assert run_api(protocol, results) == 0
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "manifest" not in p.name}
    assert after == before


def test_resume_regenerates_only_missing_images_identically(finished, tmp_path):
    protocol, results = finished
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    reference_images, reference_metrics = image_hashes(copy), metrics_table(copy)
    cell = next(copy.rglob("cells/spotted_dog"))
    (cell / "images" / "p001_s01.png").unlink()
    shutil.rmtree(cell / "scores")  # killed before scoring
    json_status = cell / "status.json"
    json_status.write_text(json.dumps({"state": "running"}))  # as if killed mid-generation
    assert run_api(protocol, copy) == 0
    assert image_hashes(copy) == reference_images
    pd.testing.assert_frame_equal(metrics_table(copy), reference_metrics)
    new_phases = phases(copy, "spotted_dog")
    assert new_phases.count("fit") == 1 and "load_artifact" in new_phases  # no refit


def test_images_do_not_depend_on_batch_size(finished, tmp_path):
    protocol, results = finished
    other = write_protocol(tmp_path, name="b.yaml")
    other.write_text(other.read_text().replace("batch_size: 2", "batch_size: 3"))
    assert run_api(other, tmp_path / "r") == 0
    assert image_hashes(tmp_path / "r") == image_hashes(results)  # same run ids, same bytes


def test_failing_cell_is_recorded_and_others_finish_then_retry(tmp_path):
    flag = tmp_path / "still-broken"
    flag.write_text("1")
    protocol = write_protocol(tmp_path, arm_config=f"{{steps: 3, fail_on: striped_mug, fail_flag: '{flag}'}}")
    results = tmp_path / "results"
    assert run_api(protocol, results) == 1
    assert states(results) == {"red_robot": "done", "spotted_dog": "done", "striped_mug": "failed"}
    status = json.loads(next(results.rglob("striped_mug/status.json")).read_text())
    assert status["error"] == "RuntimeError: toy failure on striped_mug"
    assert "Traceback" in next(results.rglob("striped_mug/error.txt")).read_text()
    assert run_api(protocol, results) == 1  # failed cells stay failed without --retry-failed
    flag.unlink()
    assert run_api(protocol, results, retry_failed=True) == 0
    assert set(states(results).values()) == {"done"}


def test_nan_loss_fails_the_cell(tmp_path):
    protocol = write_protocol(tmp_path, arm_config="{steps: 12, nan_on: red_robot}")
    results = tmp_path / "results"
    assert run_api(protocol, results, subjects=["red_robot"]) == 1
    status = json.loads(next(results.rglob("red_robot/status.json")).read_text())
    assert status["state"] == "failed" and status["error"].startswith("NonFiniteLoss: loss became nan at fit step")


def test_dry_run_writes_nothing(tmp_path, capsys):
    protocol = write_protocol(tmp_path)
    assert run_api(protocol, tmp_path / "results", dry_run=True) == 0
    assert not (tmp_path / "results").exists()


def test_a_load_error_fails_the_arm_once_not_once_per_cell(tmp_path):
    import toy_method

    toy_method.LOAD_CALLS.clear()
    protocol = write_protocol(tmp_path, arm_config="{steps: 2, load_error: 'toy weights missing'}")
    results = tmp_path / "results"
    assert run_api(protocol, results) == 1
    assert set(states(results).values()) == {"failed"}
    errors = {json.loads(p.read_text())["error"] for p in results.rglob("cells/*/status.json")}
    assert errors == {"toy weights missing (toy weights). Put them in place."}
    assert len(toy_method.LOAD_CALLS) == 1  # later cells reuse the recorded error
