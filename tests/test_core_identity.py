"""What a result *is* (run id, score id) apart from how fast it was computed (execution).

The run id hashes what determines fits and images; the score id what determines scores;
execution options (speed switches, batch sizes, workers) are recorded, never hashed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import TESTS_DIR
from runner_helpers import image_hashes, metrics_table, phases, run_api, run_cli, write_protocol
from varbench.errors import UserError
from varbench.migrate import migrate_results
from varbench.protocol import load_protocol
from varbench.store import find_runs

# The toy arm of tests/protocols/toy.yaml, pinned: if this changes, every user's finished
# results stop being found. Change it only with a new STORE_LAYOUT and a migration.
PINNED_RUN_ID = "toy-20defb650f"
PINNED_SCORE_ID = "canonical-cef96f9f"
LAYOUT1 = TESTS_DIR / "data" / "results-layout-1"  # written by varbench before the split


def arm_of(path: Path, overrides: list[str] | None = None):
    (arm,) = load_protocol(path, overrides).arms
    return arm


def test_the_run_id_is_pinned_and_ignores_execution(tmp_path):
    toy = TESTS_DIR / "protocols" / "toy.yaml"
    arm = arm_of(toy)
    assert (arm.run_id, arm.score_id) == (PINNED_RUN_ID, PINNED_SCORE_ID)
    text = toy.read_text()
    faster = tmp_path / "faster.yaml"
    faster.write_text(text.replace("execution: {batch_size: 2, metric_batch_size: 8}",
                                   "execution: {batch_size: 5, metric_batch_size: 3, metric_precision: fp32,"
                                   " decode_workers: 2}"))
    assert (arm_of(faster).run_id, arm_of(faster).score_id) == (PINNED_RUN_ID, PINNED_SCORE_ID)
    assert arm_of(toy, ["execution.batch_size=7", "toy.execution.metric_batch_size=2"]).run_id == PINNED_RUN_ID
    hyper = tmp_path / "hyper.yaml"
    hyper.write_text(text.replace("config: {steps: 6}", "config: {steps: 6, lr: 0.3}"))
    assert arm_of(hyper).run_id != PINNED_RUN_ID and arm_of(hyper).score_id == PINNED_SCORE_ID
    mode = tmp_path / "mode.yaml"
    mode.write_text(text.replace("mode: canonical", "mode: dreammatcher"))
    assert arm_of(mode).run_id == PINNED_RUN_ID and arm_of(mode).score_id != PINNED_SCORE_ID


def test_execution_options_are_applied_and_checked(tmp_path):
    toy = TESTS_DIR / "protocols" / "toy.yaml"
    arm = arm_of(toy, ["execution.batch_size=3"])
    assert arm.batch_size == 3 and arm.metrics.batch_size == 8 and arm.execution["metric_batch_size"] == 8
    with pytest.raises(UserError, match="not honoured.*Did you mean 'batch_size'"):
        arm_of(toy, ["toy.execution.batch_sise=3"])
    with pytest.raises(UserError, match="honoured by no arm"):
        arm_of(toy, ["execution.compile=true"])  # the toy method has no speed switches
    with pytest.raises(UserError, match="no arm or method named 'tyo'"):
        arm_of(toy, ["tyo.execution.batch_size=3"])
    with pytest.raises(UserError, match="must be at least 1"):
        arm_of(toy, ["execution.batch_size=0"])
    in_config = tmp_path / "in-config.yaml"
    in_config.write_text(toy.read_text().replace("metrics: {mode: canonical,", "metrics: {batch_size: 4, mode: canonical,"))
    with pytest.raises(UserError, match="metrics.batch_size is an execution option.*metric_batch_size"):
        load_protocol(in_config)


def test_dry_run_json_is_one_object_per_cell(tmp_path):
    result = run_cli("run", "--protocol", str(TESTS_DIR / "protocols" / "toy.yaml"), "--results", str(tmp_path / "r"),
                     "--dry-run", "--json", "--set", "execution.batch_size=3")
    assert result.returncode == 0, result.stderr
    cells = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(c["subject"] for c in cells) == ["red_robot", "spotted_dog", "striped_mug"]
    assert {(c["protocol"], c["arm"], c["run_id"], c["score_id"], c["state"]) for c in cells} == {
        ("toy", "toy", PINNED_RUN_ID, PINNED_SCORE_ID, "pending")}
    assert cells[0]["execution"] == {"batch_size": 3, "metric_batch_size": 8}
    assert not (tmp_path / "r").exists()


def test_scoring_in_another_mode_reuses_every_image(tmp_path):
    protocol = write_protocol(tmp_path)
    results = tmp_path / "results"
    assert run_api(protocol, results, subjects=["red_robot"]) == 0
    images, canonical = image_hashes(results), metrics_table(results)
    other = write_protocol(tmp_path, name="dreammatcher.yaml")
    other.write_text(other.read_text().replace("mode: canonical", "mode: dreammatcher")
                     .replace("batch_size: 2,", "batch_size: 1,"))
    assert run_api(other, results, subjects=["red_robot"]) == 0
    assert image_hashes(results) == images  # not one image regenerated
    assert phases(results, "red_robot").count("fit") == 1  # and no refit: only scoring ran
    both = metrics_table(results)
    assert set(both["mode"]) == {"canonical", "dreammatcher"} and len(both) == 2 * len(canonical)
    (run,) = find_runs(results)
    assert sorted(identity["mode"] for identity in run.scores().values()) == ["canonical", "dreammatcher"]


def test_layout1_results_are_migrated_and_then_reused_as_they_are(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(LAYOUT1, results)
    before = image_hashes(results)
    metrics_before = metrics_table(results)
    (line,) = migrate_results(results)
    assert line.startswith("toy/toy-d782ad0348 -> ")
    protocol = write_protocol(tmp_path, arm_config="{steps: 3}")
    (arm,) = load_protocol(protocol).arms
    assert line.endswith(f"toy/{arm.run_id} (scores {arm.score_id})")
    assert sorted(before.values()) == sorted(image_hashes(results).values())
    files = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert run_api(protocol, results, subjects=["red_robot", "spotted_dog"]) == 0  # found, trusted, nothing redone
    assert {p: p.stat().st_mtime_ns for p in files} == files
    after = metrics_table(results)
    assert after["value"].tolist() == metrics_before["value"].tolist() and set(after["run_id"]) == {arm.run_id}
    assert migrate_results(results) == []  # a second migration finds nothing to do


def test_compile_auto_compiles_only_where_enough_cells_share_it():
    from dataclasses import dataclass, field
    from typing import Literal

    from varbench.execution import settle_auto

    @dataclass
    class Config:
        compile: bool | Literal["auto"] = field(default=False, metadata={"execution": "compile"})
        steps: int = 3

    assert settle_auto(Config("auto"), cells_here=3, pays_after={"compile": 3}).compile is True
    assert settle_auto(Config("auto"), cells_here=2, pays_after={"compile": 3}).compile is False
    assert settle_auto(Config("auto"), cells_here=50, pays_after={}).compile is False  # no break-even stated
    assert settle_auto(Config(True), cells_here=1, pays_after={"compile": 3}).compile is True  # explicit stays
    assert settle_auto(Config(False), cells_here=9, pays_after={"compile": 3}).compile is False


def test_a_worker_counts_its_cells_per_arm(tmp_path):
    from varbench.launch import cells_per_arm
    from varbench.plan import RunOptions, prepare

    _, cells = prepare(str(TESTS_DIR / "protocols" / "toy.yaml"), RunOptions(results=tmp_path))
    assert cells_per_arm(cells) == {PINNED_RUN_ID: 3}
    assert cells_per_arm(cells, workers=2) == {PINNED_RUN_ID: 2}  # a fair share, rounded up


def test_decode_workers_reach_the_scoring_pool(tmp_path, monkeypatch):
    """An execution option must act, not only be recorded: decode_workers is handed to the
    decoding pool (which reads VARBENCH_DECODE_WORKERS when the scorer starts it)."""
    monkeypatch.delenv("VARBENCH_DECODE_WORKERS", raising=False)
    protocol = write_protocol(tmp_path)
    assert run_api(protocol, tmp_path / "r", subjects=["red_robot"], overrides=["execution.decode_workers=3"]) == 0
    import os

    assert os.environ["VARBENCH_DECODE_WORKERS"] == "3"
    status = json.loads(next((tmp_path / "r").rglob("cells/red_robot/status.json")).read_text())
    assert status["execution"]["decode_workers"] == 3
