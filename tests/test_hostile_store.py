"""Hostile store: a finished cell whose files were damaged on disk is never trusted.

Each test damages a copy of one finished toy run the way a user, a full disk or a bad
sync would, then checks that `status` and the report call the cell damaged (and never
count it), and that `run` redoes exactly what the damage took: rescoring for scores,
one image for one image, a refit for fit records.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import varbench.worker
from runner_helpers import image_hashes, metrics_table, run_api, run_cli, states, write_protocol
from varbench.errors import UserError
from varbench.fileio import TMP_MARK
from varbench.integrity import check_records
from varbench.protocol import load_protocol
from varbench.report.results import load_results
from varbench.store import RunStore, find_runs, read_rows

SUBJECT = "red_robot"
IMAGE = "images/p000_s01.png"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    protocol = write_protocol(tmp)
    assert run_api(protocol, tmp / "results") == 0
    return protocol, tmp / "results"


@pytest.fixture
def copy(finished, tmp_path):
    """A private copy of the finished run: (protocol, results root, red_robot's cell folder)."""
    protocol, results = finished
    shutil.copytree(results, tmp_path / "results", symlinks=True)
    (run,) = find_runs(tmp_path / "results")
    return protocol, tmp_path / "results", run.cell(SUBJECT)


def cell_state(cell, verify=False):
    (score_id,) = [p.stem for p in (cell.run_dir / "scores").glob("*.json")]
    return cell.state(score_id, hashes=verify).state


def session_phases(cell) -> list[str]:
    """Phases timed by the latest session (the repair, after a rerun): generation, then scoring."""
    rows = cell.rows("timings") + [row for path in sorted(cell.dir.glob("scores/*/timings.csv"))
                                   for row in read_rows(path)]
    last = max(row["session"] for row in rows)
    return [row["phase"] for row in rows if row["session"] == last]


def write_jpeg_over(path: Path) -> None:
    with Image.open(path) as image:
        image.convert("RGB").save(path, format="JPEG")


def scores_csv(cell) -> Path:
    (folder,) = (cell.dir / "scores").glob("*/")
    return folder / "metrics.csv"


DAMAGES = {
    "metrics truncated to the header": lambda c: scores_csv(c).write_text(
        scores_csv(c).read_text().splitlines()[0] + "\n"),
    "a metric value of banana": lambda c: scores_csv(c).write_text(
        _replace_first_value(scores_csv(c).read_text(), "banana")),
}
IMAGE_DAMAGES = {
    "PNG deleted": lambda p: p.unlink(),
    "PNG emptied": lambda p: p.write_bytes(b""),
    "PNG replaced by a JPEG": write_jpeg_over,
}


def _replace_first_value(text: str, value: str) -> str:
    header, first, *rest = text.splitlines()
    return "\n".join([header, first.rsplit(",", 1)[0] + "," + value, *rest]) + "\n"


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_scores_are_seen_and_only_rescored(copy, damage):
    protocol, results, cell = copy
    before = metrics_table(results)
    images_before = image_hashes(results)
    DAMAGES[damage](cell)
    assert cell_state(cell) == "damaged"
    assert states(results)[SUBJECT] == "done"  # status.json alone would have trusted it
    frame = load_results(results)["toy"]
    assert frame.cells.set_index("subject").loc[SUBJECT, "state"] == "damaged"
    assert SUBJECT not in set(frame.metrics["subject"])  # never averaged
    assert run_api(protocol, results) == 0
    assert cell_state(cell, verify=True) == "done"
    assert session_phases(cell) == ["load_metrics", "score"]  # no fit, no generation
    assert image_hashes(results) == images_before
    pd_equal(metrics_table(results), before)
    assert list((cell.dir / "damaged").glob("*/scores/*/metrics.csv"))  # the damaged file is kept aside


def pd_equal(left, right):
    assert left.astype(str).values.tolist() == right.astype(str).values.tolist()


@pytest.mark.parametrize("damage", IMAGE_DAMAGES)
def test_a_damaged_image_is_regenerated_alone_identically(copy, damage):
    protocol, results, cell = copy
    before = image_hashes(results)
    others = {p: p.stat().st_mtime_ns for p in results.rglob("*.png") if not p.match(f"*/{SUBJECT}/{IMAGE}")}
    IMAGE_DAMAGES[damage](cell.dir / IMAGE)
    assert cell_state(cell) == "damaged"
    assert IMAGE in cell.state().error
    assert run_api(protocol, results) == 0
    assert image_hashes(results) == before
    assert {p: p.stat().st_mtime_ns for p in others} == others  # nothing else was rewritten
    assert "fit" not in session_phases(cell)  # the kept artifact made the image again
    assert cell_state(cell, verify=True) == "done"


def test_same_size_edits_are_caught_with_verify(copy):
    protocol, results, cell = copy
    path = cell.dir / "pres" / "s00.png"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # same size, PNG signature intact: only the hash can tell
    path.write_bytes(bytes(data))
    assert cell_state(cell) == "done"
    assert cell_state(cell, verify=True) == "damaged"
    result = run_cli("status", "--results", str(results), "--verify")
    assert result.returncode == 1 and "1 damaged, 2 done" in result.stdout + result.stderr
    assert run_api(protocol, results, verify=True) == 0
    assert cell_state(cell, verify=True) == "done"


def test_damaged_fit_records_are_refitted(copy):
    protocol, results, cell = copy
    facts = cell.facts()
    (cell.dir / "cell.json").write_text("{not json")
    assert cell_state(cell) == "damaged"
    assert run_api(protocol, results) == 0
    assert cell.facts() == facts
    assert "fit" in session_phases(cell) and "generate" not in session_phases(cell)


@pytest.mark.parametrize("garbage", ["text", "list", "state", "folder", "empty"])
def test_an_unreadable_status_is_damage_not_a_crash(copy, garbage):
    protocol, results, cell = copy
    path = cell.dir / "status.json"
    path.unlink()
    if garbage == "folder":
        path.mkdir()
    else:
        path.write_text({"text": "{{{", "list": "[1, 2]", "state": '{"state": "banana"}', "empty": ""}[garbage])
    assert cell_state(cell) == "damaged"
    status = run_cli("status", "--results", str(results))
    assert status.returncode == 1 and "Traceback" not in status.stderr and "1 damaged" in status.stdout + status.stderr
    assert run_api(protocol, results) == 0
    assert cell_state(cell, verify=True) == "done"


def test_leftover_temporaries_are_swept(copy, finished):
    protocol, results, cell = copy
    (cell.dir / "status.json").write_text(json.dumps({"state": "running"}))  # killed mid-cell
    (cell.dir / "images" / f"p000_s00.png{TMP_MARK}abc").write_bytes(b"half")
    (cell.dir / f"artifact{TMP_MARK}xyz").mkdir()
    assert run_api(protocol, results) == 0
    assert not [p for p in cell.dir.rglob("*") if TMP_MARK in p.name]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_recording_a_failure_stops_with_one_line(tmp_path, monkeypatch):
    protocol = write_protocol(tmp_path, arm_config="{steps: 2, fail_on: red_robot}")
    monkeypatch.setattr(varbench.worker, "write_text", full_disk)
    with pytest.raises(UserError, match="disk full"):
        run_api(protocol, tmp_path / "results")
    (run,) = find_runs(tmp_path / "results")
    assert run.cell("red_robot").state().state == "failed"  # its own error, recorded
    assert run.cell("striped_mug").state().state == "pending"  # the run stopped there


def test_a_disk_that_fills_mid_cell_leaves_it_to_resume(tmp_path, monkeypatch):
    protocol = write_protocol(tmp_path)
    monkeypatch.setattr(varbench.worker, "write_png", full_disk)
    with pytest.raises(UserError, match="disk full"):
        run_api(protocol, tmp_path / "results")
    (run,) = find_runs(tmp_path / "results")
    assert run.cell("red_robot").state().state == "interrupted"  # never "running" forever
    monkeypatch.undo()
    assert run_api(protocol, tmp_path / "results") == 0  # and it resumes


def test_an_unwritable_error_file_still_fails_the_cell_and_the_run_goes_on(tmp_path, monkeypatch):
    protocol = write_protocol(tmp_path, arm_config="{steps: 2, fail_on: red_robot}")
    original = varbench.worker.write_text

    def broken_error_file(path, text):
        if Path(path).name == "error.txt":
            raise OSError(errno.EIO, "Input/output error")
        original(path, text)

    monkeypatch.setattr(varbench.worker, "write_text", broken_error_file)
    assert run_api(protocol, tmp_path / "results") == 1
    assert states(tmp_path / "results") == {"red_robot": "failed", "spotted_dog": "done", "striped_mug": "done"}
    status = json.loads(next((tmp_path / "results").rglob("red_robot/status.json")).read_text())
    assert "error.txt not written" in status["error"]


@pytest.mark.parametrize("link", ["cell", "images"])
def test_cell_writes_never_follow_a_link_out_of_the_root(tmp_path, link):
    protocol = write_protocol(tmp_path)
    results, outside = tmp_path / "results", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    (arm,) = load_protocol(protocol).arms
    cell_dir = RunStore(results, "toy", arm.run_id).cell(SUBJECT).dir
    target = cell_dir if link == "cell" else cell_dir / "images"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside, target_is_directory=True)
    result = run_cli("run", "--protocol", str(protocol), "--results", str(results), "--device", "cpu")
    assert result.returncode == 2 and "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]


def test_seal_lists_every_result_file_with_its_hash(copy):
    _, _, cell = copy
    files = json.loads((cell.dir / "status.json").read_text())["files"]
    assert IMAGE in files and "cell.json" in files and "artifact/toy.safetensors" in files
    assert files[IMAGE]["sha256"] == hashlib.sha256((cell.dir / IMAGE).read_bytes()).hexdigest()
    assert not {"status.json", "owner.json", ".lock"} & set(files) and not any(f.startswith("scores/") for f in files)
    score_files = json.loads((scores_csv(cell).parent / "status.json").read_text())["files"]
    assert set(score_files) == {"metrics.csv", "timings.csv"}
    assert score_files["metrics.csv"]["sha256"] == hashlib.sha256(scores_csv(cell).read_bytes()).hexdigest()


def test_a_killed_cache_build_and_manifest_write_leave_nothing_behind(tmp_path):
    from varbench.cache import get_or_build
    from varbench.hashing import content_hash

    key = {"kind": "test"}
    final = tmp_path / "cache" / "things" / content_hash(key, length=16)
    final.parent.mkdir(parents=True)
    (final.parent / f"{final.name}{TMP_MARK}dead").mkdir()  # a build killed half-way
    get_or_build(tmp_path / "cache", "things", key, lambda folder: (folder / "x").write_text("built"))
    assert sorted(p.name for p in final.parent.iterdir() if not p.name.endswith(".lock")) == [final.name]
    run = RunStore(tmp_path / "results", "p", "r")
    run.dir.mkdir(parents=True)
    (run.dir / f"manifest.json{TMP_MARK}dead").write_text("{half")
    run.add_session({"session": "s1"})
    assert not list(run.dir.glob(f"*{TMP_MARK}*")) and run.sessions() == [{"session": "s1"}]


@pytest.fixture(scope="module")
def one_cell(tmp_path_factory):
    """A one-cell protocol and the images and scores of an undisturbed run of it."""
    tmp = tmp_path_factory.mktemp("one-cell")
    protocol = write_protocol(tmp, arm_config="{steps: 2}")
    assert run_api(protocol, tmp / "clean", subjects=[SUBJECT]) == 0
    return protocol, image_hashes(tmp / "clean"), metrics_table(tmp / "clean")


# Which write of a one-cell run fails (the run's 22 writes, in order: run.json, manifest,
# owner.json, status "running", images.csv, timings, losses, cell.json, PNGs, metrics.csv,
# status "done", manifest): the identity, the lock owner, each status, the records, a PNG,
# the scores and the closing manifest, each with another errno.
FAULTS = [(0, errno.EIO), (2, errno.ENOSPC), (3, errno.EACCES), (4, errno.EIO), (8, errno.ENOSPC),
          (10, errno.EIO), (19, errno.ENOSPC), (20, errno.EIO), (21, errno.EACCES)]


@pytest.mark.parametrize("fail_at, code", FAULTS)
def test_a_write_failing_anywhere_never_crashes_and_the_rerun_matches(one_cell, tmp_path, monkeypatch,
                                                                      fail_at, code):
    """Fault injection: the n-th file write of a run fails. The run ends normally or with one
    error naming the cause (the CLI prints either as one line), no cell is left 'running',
    and a clean rerun gives exactly the undisturbed run's images and scores."""
    import varbench.fileio as fileio

    protocol, clean_images, clean_metrics = one_cell
    results = tmp_path / "results"
    writes, original = [0], fileio.atomic_write

    def failing_write(path, write):
        writes[0] += 1
        if writes[0] == fail_at + 1:
            raise OSError(code, os.strerror(code), str(path))
        original(path, write)

    with monkeypatch.context() as patch:
        patch.setattr(fileio, "atomic_write", failing_write)
        try:
            run_api(protocol, results, subjects=[SUBJECT])
        except (UserError, OSError) as stopped:
            assert os.strerror(code) in str(stopped) or "disk full" in str(stopped)
    allowed = {"done", "failed", "pending"} | ({"interrupted"} if code == errno.ENOSPC else set())
    for run in find_runs(results):  # only a full disk may leave the cell to resume
        assert run.cell(SUBJECT).state().state in allowed
    assert run_api(protocol, results, subjects=[SUBJECT], retry_failed=True) == 0
    assert image_hashes(results) == clean_images
    pd_equal(metrics_table(results), clean_metrics)


def test_a_malformed_images_csv_row_is_damage_not_a_crash(copy):
    protocol, results, cell = copy
    (cell.dir / "images.csv").write_text("kind,path\neval\n")  # a short row
    assert cell_state(cell) == "damaged"
    assert [p.what for p in check_records(cell.dir)] == ["line 2 is malformed"]  # it used to raise TypeError
    status = run_cli("status", "--results", str(results))
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert run_api(protocol, results) == 0 and cell_state(cell, verify=True) == "done"
