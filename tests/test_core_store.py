from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from varbench.errors import UserError
from varbench.fileio import TMP_MARK, atomic_dir, atomic_write, sweep_temporaries, write_json
from varbench.store import METRIC_COLUMNS, RunStore, check_name, find_runs


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "status.json"
    write_json(target, {"state": "done"})

    def crash(handle):
        handle.write(b'{"state": "runn')  # half a file, then the writer dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text().strip().startswith("{") and '"done"' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_atomic_dir_replaces_half_built_folder_only_on_success(tmp_path):
    final = tmp_path / "artifact"

    def build(folder: Path):
        (folder / "w.bin").write_bytes(b"123")

    atomic_dir(final, build)
    assert (final / "w.bin").read_bytes() == b"123"

    def broken(folder: Path):
        (folder / "w.bin").write_bytes(b"9")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_dir(final, broken)
    assert (final / "w.bin").read_bytes() == b"123"
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_sweep_removes_crash_leftovers(tmp_path):
    (tmp_path / f"a.csv{TMP_MARK}x1").write_text("partial")
    (tmp_path / f"artifact{TMP_MARK}y").mkdir()
    (tmp_path / "keep.csv").write_text("ok")
    assert sweep_temporaries(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]


def test_rows_round_trip_through_pandas(tmp_path):
    run = RunStore(tmp_path, "smoke", "toy-abc")
    run.write_identity({"protocol": "smoke", "arm": "toy"})
    cell = run.cell("dog")
    rows = [{"run_id": "toy-abc", "subject": "dog", "kind": "eval", "prompt_index": 0, "sample_index": i,
             "image": f"images/p000_s0{i}.png", "metric": "dino", "mode": "canonical", "value": 0.5 + i / 10}
            for i in range(2)]
    cell.add_rows("metrics", METRIC_COLUMNS, rows[:1])
    cell.add_rows("metrics", METRIC_COLUMNS, rows[1:])
    frame = pd.read_csv(cell.dir / "metrics.csv")
    assert list(frame.columns) == METRIC_COLUMNS
    assert frame["value"].tolist() == [0.5, 0.6]
    assert [r.run_id for r in find_runs(tmp_path)] == ["toy-abc"]


def test_identity_mismatch_is_refused(tmp_path):
    run = RunStore(tmp_path, "smoke", "toy-abc")
    run.write_identity({"a": 1})
    run.write_identity({"a": 1})  # same identity: fine
    with pytest.raises(UserError, match="different run"):
        run.write_identity({"a": 2})


@pytest.mark.parametrize("name", ["..", "../x", "/etc", "a/b", ".hidden", "", "a\\b", "x" * 200, "a..b"])
def test_names_that_could_escape_the_root_are_rejected(name):
    with pytest.raises(UserError, match="not allowed"):
        check_name(name, "subject", "test")


@pytest.mark.parametrize("name", ["dog", "dog2", "grey_sloth_plushie", "layers-ca_ffn", "distill-soft-l0.5"])
def test_ordinary_names_pass(name):
    assert check_name(name, "subject", "test") == name


def test_session_records_merge_by_id(tmp_path):
    run = RunStore(tmp_path, "p", "r")
    run.add_session({"session": "s1", "finished": None})
    run.add_session({"session": "s2", "finished": None})
    run.add_session({"session": "s1", "finished": "t"})
    assert sorted((s["session"], s["finished"]) for s in run.sessions()) == [("s1", "t"), ("s2", None)]
    assert os.path.exists(run.dir / "manifest.json")
