"""`varbench bench` plumbing: floors, targets, merging by component, cost projection."""
from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from varbench.bench import harness
from varbench.bench.harness import failed, format_bench, row, run_bench
from varbench.bench.cost import arm_hours, cost_report, sampling_seconds, workload
from varbench.protocol import load_protocol


def test_floor_and_fraction_for_times_and_rates():
    time_row = row("infinity", "infinity sampling@8", 0.5, "s/image", flops=100e12, rate=800e12)
    assert time_row["floor"] == pytest.approx(0.125) and time_row["fraction_of_floor"] == pytest.approx(0.25)
    assert time_row["target"] == 0.25 and time_row["meets_target"] is False
    rate_row = row("baselines", "dreambooth step", 16.0, "steps/s", flops=5e12, rate=800e12)
    assert rate_row["floor"] == pytest.approx(160.0) and rate_row["fraction_of_floor"] == pytest.approx(0.1)
    assert rate_row["meets_target"] is True
    tiny = row("metrics", "scoring", 20.0, "images/s", flops=1e9, rate=1e11, full_size=False)
    assert tiny["meets_target"] is None  # targets apply to full sizes only


def measured_rows():
    return [row("arbooth", "arbooth iteration", 3.0, "s/iteration", None, None),
            row("infinity", "infinity sampling@1", 0.4, "s/image", None, None),
            row("infinity", "infinity sampling@4", 0.3, "s/image", None, None),
            row("baselines", "dreambooth step", 10.0, "steps/s", None, None),
            row("baselines", "sd15 sampling@4", 0.5, "s/image", None, None),
            row("metrics", "scoring", 1000.0, "images/s", None, None)]


def test_sampling_seconds_takes_the_largest_measured_batch_not_above():
    rows = measured_rows()
    assert sampling_seconds(rows, "infinity sampling", 8) == 0.3
    assert sampling_seconds(rows, "infinity sampling", 2) == 0.4
    assert sampling_seconds(rows, "sd15 sampling", 1) == 0.5  # only batch 4 measured: use it
    opt_in = rows + [{"name": "infinity sampling@8 (compiled)", "value": 0.1}]
    assert sampling_seconds(opt_in, "infinity sampling", 8) == 0.3  # projections use the defaults


def test_dreambench_projection_by_hand(monkeypatch):
    monkeypatch.setenv("VARBENCH_DREAMBENCH_DIR", str(SHARED_DATA / "dreambench"))
    protocol = load_protocol("dreambench")
    work = workload(protocol)
    assert (work.subjects, work.images_per_subject) == (30, 25 * 4 + 4)
    hours = arm_hours(protocol.arm("arbooth"), measured_rows(), work, batch=4)
    assert hours["fit"] == pytest.approx(30 * 500 * 3.0 / 3600)
    assert hours["generate"] == pytest.approx(30 * 104 * 0.3 / 3600)
    assert hours["score"] == pytest.approx(30 * 104 / 1000 / 3600)
    dreambooth = arm_hours(protocol.arm("dreambooth"), measured_rows(), work, batch=4)
    assert dreambooth["fit"] == pytest.approx(30 * 800 / 10.0 / 3600)
    assert arm_hours(protocol.arm("textual_inversion"), measured_rows(), work, batch=4) is None  # not measured
    report = cost_report({"device": "test", "note": "n", "rows": measured_rows()}, gpus=8)
    assert "| arbooth | 12.50 | 0.26 | 0.00 | 12.76 | 1.60 |" in report
    assert "| textual_inversion | not measured |" in report
    assert "| class images (shared) | " in report


def test_a_projection_prices_images_at_the_batch_the_protocol_generates_with(monkeypatch):
    """vico sets `execution: {batch_size: 8}`: its arms are priced at the batch-8 row."""
    monkeypatch.setenv("VARBENCH_DREAMBENCH_DIR", str(SHARED_DATA / "dreambench"))
    monkeypatch.setenv("VARBENCH_VICO_DIR", str(SHARED_DATA / "vico"))
    rows = measured_rows() + [row("infinity", "infinity sampling@8", 0.2, "s/image", None, None)]
    assert load_protocol("vico").arm("arbooth").batch_size == 8
    report = cost_report({"device": "test", "note": "n", "rows": rows}, gpus=8)
    vico = report.split("#### vico:")[1].split("####")[0]
    assert "images, batch 8" in vico
    generate = float(vico.split("| arbooth | ")[1].split(" | ")[1])
    work = workload(load_protocol("vico"))
    assert generate == pytest.approx(work.subjects * work.images_per_subject * 0.2 / 3600, abs=0.005)


@pytest.mark.slow
def test_tiny_metrics_bench_writes_well_formed_files(tmp_path):
    report = run_bench("tiny", "cpu", ("metrics",), tmp_path)
    (scoring,) = report["rows"]
    assert scoring["name"] == "scoring" and scoring["unit"] == "images/s" and scoring["value"] > 0
    assert 0 < scoring["fraction_of_floor"] < 1 and scoring["meets_target"] is None
    assert (tmp_path / "bench.md").read_text() == format_bench(report)
    assert "dreambench" in (tmp_path / "cost.md").read_text()
    merged = run_bench("tiny", "cpu", ("metrics",), tmp_path)  # rerun replaces, never duplicates
    assert len(merged["rows"]) == 1


def test_a_failed_benchmark_is_listed_not_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "components", lambda: {"arbooth": lambda size, device: [
        row("arbooth", "arbooth iteration (eager blocks)", 3.0, "s/iteration", 1e15, 1e15),
        failed("arbooth", "arbooth iteration", "out of memory: tried to allocate 2.00 GiB")]})
    report = run_bench("tiny", "cpu", ("arbooth",), tmp_path)
    assert [r["name"] for r in report["rows"]] == ["arbooth iteration (eager blocks)"]
    assert report["failures"] == [{"component": "arbooth", "name": "arbooth iteration",
                                   "error": "out of memory: tried to allocate 2.00 GiB"}]
    assert "- arbooth iteration: out of memory: tried to allocate 2.00 GiB" in (tmp_path / "bench.md").read_text()
    monkeypatch.setattr(harness, "components", lambda: {"arbooth": lambda size, device: [
        row("arbooth", "arbooth iteration", 2.0, "s/iteration", 1e15, 1e15)]})
    rerun = run_bench("tiny", "cpu", ("arbooth",), tmp_path)  # a rerun replaces the failure too
    assert [r["name"] for r in rerun["rows"]] == ["arbooth iteration"] and rerun["failures"] == []


def test_components_come_from_entry_points_and_the_core_imports_no_baseline():
    """Each method package registers its benchmark (baselines included, as a plugin would)."""
    import subprocess
    import sys

    assert list(harness.components()) == ["infinity", "arbooth", "baselines", "metrics", "score", "families"]
    code = ("import sys, varbench.bench.harness, varbench.cli, varbench.runner, varbench.launch, varbench.worker;"
            "print(sorted(m for m in sys.modules if m == 'baselines' or m.startswith('baselines.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_toyworld_arms_get_no_projection_from_real_size_figures():
    """The bench measures Infinity-2B and SD 1.5: a toy-sized model trained in the toyworld
    must not be costed with their figures, while the same methods on real bases are."""
    from pathlib import Path

    from varbench.bench.cost import load_bench, planned_hours
    from varbench.plan import RunOptions, prepare

    bench = load_bench()
    _, cells = prepare("toyworld", RunOptions(results=Path("unused"), dry_run=True))
    assert set(planned_hours(cells, bench["rows"]).values()) == {None}
    _, cells = prepare("dreambench", RunOptions(results=Path("unused"), dry_run=True,
                                                data_root=str(SHARED_DATA / "dreambench")))
    assert all(hours for hours in planned_hours(cells[:40], bench["rows"]).values())
