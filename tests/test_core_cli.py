"""The CLI as a user meets it: a whole run, status, and one clear line for bad input."""
from __future__ import annotations

import shutil
import time

import pytest

from conftest import SHARED_DATA
from runner_helpers import run_cli, states, write_protocol


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    result = run_cli("--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0
    for command in ("run", "report", "status", "validate", "list", "data", "calibrate"):
        assert command in result.stdout
    assert elapsed < 10  # generous for a loaded CI box; heavy imports would take far longer


def test_help_imports_no_heavy_module():
    import subprocess
    import sys

    code = ("import sys, varbench.cli; heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open_clip',"
            " 'timm', 'pandas', 'matplotlib') if m in sys.modules]; print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.slow
def test_run_then_status_then_dry_run(tmp_path):
    protocol = write_protocol(tmp_path, arm_config="{steps: 3}")
    results = tmp_path / "results"
    run = run_cli("run", "--protocol", str(protocol), "--results", str(results), "--device", "cpu",
                  "--subjects", "red_robot,spotted_dog")
    assert run.returncode == 0, run.stderr
    assert states(results) == {"red_robot": "done", "spotted_dog": "done"}
    status = run_cli("status", "--results", str(results), "--protocol", str(protocol))
    assert status.returncode == 1  # striped_mug is still pending
    assert "pending" in status.stdout + status.stderr and "red_robot" in status.stdout + status.stderr
    dry = run_cli("run", "--protocol", str(protocol), "--results", str(results), "--dry-run")
    assert dry.returncode == 0 and "striped_mug" in dry.stdout + dry.stderr


def one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_protocol_name(tmp_path):
    one_line_error(run_cli("run", "--protocol", "dreambenhc", "--results", str(tmp_path)), "unknown protocol")


def test_unknown_method_filter(tmp_path):
    protocol = write_protocol(tmp_path)
    one_line_error(run_cli("run", "--protocol", str(protocol), "--methods", "dreambooht", "--dry-run"),
                   "no arm or method named 'dreambooht'")


def test_unknown_subject_filter(tmp_path):
    protocol = write_protocol(tmp_path)
    one_line_error(run_cli("run", "--protocol", str(protocol), "--subjects", "red_robt", "--dry-run"),
                   "subject 'red_robt'", "Did you mean 'red_robot'?")


def test_missing_protocol_file(tmp_path):
    one_line_error(run_cli("validate", str(tmp_path / "nope.yaml")), "protocol file not found")


def test_missing_subject_folder(tmp_path):
    data = tmp_path / "dreambench"
    shutil.copytree(SHARED_DATA / "dreambench", data)
    shutil.rmtree(data / "dog2")
    protocol = write_protocol(tmp_path)
    protocol.write_text(protocol.read_text().replace("dataset: smoke", "dataset: dreambench"))
    one_line_error(run_cli("run", "--protocol", str(protocol), "--data-root", str(data), "--dry-run"), "dog2")


def test_truncated_image_is_caught_when_the_dataset_opens(tmp_path):
    data = tmp_path / "dreambench"
    shutil.copytree(SHARED_DATA / "dreambench", data)
    victim = data / "can" / "01.jpg"
    victim.write_bytes(victim.read_bytes()[:1000])
    protocol = write_protocol(tmp_path)
    protocol.write_text(protocol.read_text().replace("dataset: smoke", "dataset: dreambench"))
    one_line_error(run_cli("run", "--protocol", str(protocol), "--data-root", str(data), "--dry-run"),
                   "can/01.jpg")


@pytest.mark.slow
def test_corrupt_image_fails_its_cell_with_one_clear_line(tmp_path):
    data = tmp_path / "dreambench"
    shutil.copytree(SHARED_DATA / "dreambench", data)
    victim = data / "can" / "01.jpg"
    size = victim.stat().st_size  # same size: passes the quick open-time check, fails to decode
    victim.write_bytes((b"\xff\xd8\xff" + b"garbage" * size)[:size])
    protocol = write_protocol(tmp_path, arm_config="{steps: 2}")
    protocol.write_text(protocol.read_text().replace("dataset: smoke", "dataset: dreambench"))
    results = tmp_path / "results"
    run = run_cli("run", "--protocol", str(protocol), "--data-root", str(data), "--results", str(results),
                  "--subjects", "can,candle", "--device", "cpu")
    assert run.returncode == 1
    assert states(results) == {"can": "failed", "candle": "done"}
    assert "Traceback" not in run.stderr + run.stdout
    failure_lines = [line for line in (run.stdout + run.stderr).splitlines() if "failed (" in line]
    assert len(failure_lines) == 1 and "can/01.jpg" in failure_lines[0]
