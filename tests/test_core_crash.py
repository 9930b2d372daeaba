"""Crash safety and concurrency, with real processes killed by SIGKILL.

One uninterrupted run is the reference. A second results root is driven through a
chain of runs, each killed at a different point (during fit, during generation, during
scoring, at an arbitrary moment); after each kill nothing partial is visible, and the
final rerun gives images and metrics identical to the reference.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

import toy_method
from runner_helpers import image_hashes, metrics_table, run_api, run_cli, states, write_protocol
from varbench.fileio import TMP_MARK
from varbench.store import METRIC_COLUMNS

pytestmark = pytest.mark.slow
SLOW_TOY = "{steps: 8, step_seconds: 0.15}"


@pytest.fixture(scope="module")
def slow_toy(tmp_path_factory):
    """The slow toy protocol and its reference: one uninterrupted run, shared by the tests
    (which only read it). The reference runs in this process with the toy's sleeps skipped:
    `step_seconds` only slows the toy down (for the kills to land mid-way), its images and
    metrics never depend on it, and the protocol (so the run id) is the one under test."""
    tmp = tmp_path_factory.mktemp("slow-toy")
    protocol = write_protocol(tmp, arm_config=SLOW_TOY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(toy_method, "time", SimpleNamespace(sleep=lambda seconds: None))
        assert run_api(protocol, tmp / "reference") == 0
    return protocol, tmp / "reference"


def start_run(protocol: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "varbench", "run", "--protocol", str(protocol), "--results",
                             str(results), "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ.copy())


def kill_when(process: subprocess.Popen, condition: Callable[[], bool], timeout: float = 180) -> bool:
    """SIGKILL `process` as soon as `condition()` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.kill()
    raise AssertionError("condition never met")


def cells(results: Path) -> list[Path]:
    return sorted(p for p in results.glob("*/*/cells/*") if p.is_dir())


def running_cell(results: Path) -> Path | None:
    for cell in cells(results):
        status = cell / "status.json"
        if status.is_file() and json.loads(status.read_text())["state"] == "running":
            return cell
    return None


def in_fit(results: Path) -> bool:
    cell = running_cell(results)
    return bool(cell and (cell / "work").is_dir() and not (cell / "artifact").exists())


def in_generation(results: Path) -> bool:
    cell = running_cell(results)
    return bool(cell and 0 < len(list(cell.glob("images/*.png"))) < 4)


def in_scoring(results: Path) -> bool:
    """Scoring runs after the generation is sealed, with its own status in its score folder."""
    for cell in cells(results):
        for status in cell.glob("scores/*/status.json"):
            state = json.loads(status.read_text())["state"] if status.is_file() else None
            if state == "running" and not (status.parent / "metrics.csv").exists():
                return True
    return False


def assert_nothing_partial(results: Path) -> None:
    """Every file a reader would open is whole: PNGs decode, CSVs and JSON parse."""
    for path in results.rglob("*"):
        if TMP_MARK in path.name or not path.is_file():
            continue
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    for metrics in results.rglob("metrics.csv"):
        assert list(pd.read_csv(metrics).columns) == METRIC_COLUMNS


def test_killed_runs_resume_to_identical_results(tmp_path, slow_toy):
    protocol, reference = slow_toy
    results = tmp_path / "results"
    killed_at = []
    for name, condition in [("fit", in_fit), ("generation", in_generation), ("scoring", in_scoring)]:
        if kill_when(start_run(protocol, results), lambda: condition(results)):
            killed_at.append(name)
            assert_nothing_partial(results)
            status = run_cli("status", "--results", str(results))
            assert "interrupted" in status.stdout + status.stderr  # the dead run's lock is free
    for delay in (7.0, 9.5):  # arbitrary moments, wherever they land (often mid-write)
        process = start_run(protocol, results)
        start = time.monotonic()
        kill_when(process, lambda: time.monotonic() - start > delay)
        assert_nothing_partial(results)
    assert killed_at == ["fit", "generation", "scoring"]
    assert run_api(protocol, results) == 0
    assert image_hashes(results) == {k.replace("reference", "results"): v for k, v in image_hashes(reference).items()}
    pd.testing.assert_frame_equal(metrics_table(results), metrics_table(reference))


def test_two_concurrent_runs_never_do_a_cell_twice(tmp_path, slow_toy):
    protocol, reference = slow_toy
    results = tmp_path / "results"
    first, second = start_run(protocol, results), start_run(protocol, results)
    assert first.wait(timeout=300) in (0, 1) and second.wait(timeout=300) in (0, 1)
    assert run_api(protocol, results) == 0  # anything skipped as busy is finished here
    assert set(states(results).values()) == {"done"}
    for timings in results.rglob("cells/*/timings.csv"):  # the generation's (scoring times its own)
        assert pd.read_csv(timings)["phase"].tolist().count("fit") == 1
    assert sorted(image_hashes(results).values()) == sorted(image_hashes(reference).values())
