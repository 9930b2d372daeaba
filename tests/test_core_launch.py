"""Launchers: local worker processes (CPU workers stand in for GPUs) and Slurm through
submitit (its local executor runs the real job array here; the sbatch file is checked)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import toy_method
from runner_helpers import image_hashes, run_api, run_cli, states, write_protocol
from varbench.launch import chunk_labels, device_list, run_slurm, sbatch_script
from varbench.plan import dataset_of, plan_cells
from varbench.protocol import load_protocol
from varbench.runner import RunOptions

TWO_ARMS = "  - {method: toy, name: toy-b, config: {steps: 5, lr: 0.1}}\n"


def test_device_list_maps_indices_to_cuda_devices():
    assert device_list(["0", "1"]) == ["cuda:0", "cuda:1"]
    assert device_list(["cpu", "cuda:3"]) == ["cpu", "cuda:3"]


@pytest.mark.slow
def test_local_launcher_spreads_cells_over_workers(tmp_path, monkeypatch):
    protocol = write_protocol(tmp_path, extra=TWO_ARMS, arm_config="{steps: 6, step_seconds: 0.3}")
    results = tmp_path / "results"
    run = run_cli("run", "--protocol", str(protocol), "--results", str(results), "--launcher", "local",
                  "--gpus", "cpu,cpu")
    assert run.returncode == 0, run.stderr
    assert [json.loads(p.read_text())["state"] for p in results.rglob("cells/*/status.json")] == ["done"] * 6
    workers = {json.loads(p.read_text())["pid"] for p in results.rglob("cells/*/status.json")}
    assert len(workers) == 2  # both worker processes took cells
    # The reference runs in this process, with the toy's sleeps skipped: `step_seconds` only
    # slows the workers down (for both to take cells), the images never depend on it.
    monkeypatch.setattr(toy_method, "time", SimpleNamespace(sleep=lambda seconds: None))
    reference = tmp_path / "reference"
    assert run_api(protocol, reference) == 0
    assert sorted(image_hashes(results).values()) == sorted(image_hashes(reference).values())


def slurm_options(results: Path, **slurm) -> RunOptions:
    return RunOptions(results=results, device="cpu", launcher="slurm", slurm=slurm)


def test_sbatch_script_has_the_job_array_and_resources(tmp_path):
    protocol = load_protocol(write_protocol(tmp_path))
    script = sbatch_script(protocol, slurm_options(tmp_path, partition="gpu", account="lab", time_minutes=90,
                                                   gpus_per_job=2, extra={"qos": "high"}), 5, tmp_path / "slurm")
    for line in ("#SBATCH --array=0-4%5", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --time=90", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=16",
                 "#SBATCH --mem=64GB", "#SBATCH --qos=high", "#SBATCH --signal=USR2@120",
                 "#SBATCH --job-name=varbench-toy"):
        assert line in script.splitlines(), line
    assert "submitit.core._submit" in script


def test_cells_are_chunked_per_job(tmp_path):
    protocol = load_protocol(write_protocol(tmp_path, extra=TWO_ARMS))
    cells = plan_cells(protocol, dataset_of(protocol))
    chunks = chunk_labels(cells, 4)
    assert [len(c) for c in chunks] == [4, 2]
    assert sorted(sum(chunks, [])) == sorted(c.label for c in cells)


def test_slurm_dry_run_prints_the_script_without_submitting(tmp_path):
    protocol = write_protocol(tmp_path)
    result = run_cli("run", "--protocol", str(protocol), "--results", str(tmp_path / "r"), "--launcher", "slurm",
                     "--partition", "gpu", "--sbatch", "qos=high", "--dry-run")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "3 array tasks over 3 pending cells" in output and "#SBATCH --qos=high" in output
    assert not (tmp_path / "r" / ".slurm").exists() or not any((tmp_path / "r" / ".slurm").rglob("*.pkl"))


@pytest.mark.slow
def test_slurm_path_runs_through_submitits_local_executor(tmp_path):
    protocol_path = write_protocol(tmp_path, arm_config="{steps: 3}")
    protocol = load_protocol(protocol_path)
    results = tmp_path / "results"
    cells = plan_cells(protocol, dataset_of(protocol))
    jobs = run_slurm(protocol, cells, slurm_options(results), cluster="local")
    assert len(jobs) == 3
    outcomes = [job.result() for job in jobs]
    assert [list(o.values()) for o in outcomes] == [["done"]] * 3
    assert list(states(results).values()) == ["done"] * 3
    assert run_slurm(protocol, cells, slurm_options(results), cluster="local") == []  # nothing left


@pytest.mark.slow
def test_a_killed_local_run_leaves_no_worker_running(tmp_path):
    """`kill` (SIGTERM) on `varbench run --launcher local` stops its workers too, as Ctrl-C
    does; before, the spawned workers ran on as orphans."""
    import os
    import signal
    import subprocess
    import sys
    import time

    protocol = write_protocol(tmp_path, extra=TWO_ARMS, arm_config="{steps: 200, step_seconds: 0.2}")
    results = tmp_path / "results"
    parent = subprocess.Popen([sys.executable, "-m", "varbench", "run", "--protocol", str(protocol), "--results",
                               str(results), "--launcher", "local", "--gpus", "cpu,cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    pids: set[int] = set()
    while len(pids) < 2 and time.monotonic() < deadline:  # both workers inside a cell
        time.sleep(0.5)
        pids = {json.loads(p.read_text()).get("pid") for p in results.rglob("cells/*/status.json")} - {None}
    assert len(pids) == 2, "the workers never started a cell"
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=60)

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    assert not [pid for pid in pids if alive(pid)]
