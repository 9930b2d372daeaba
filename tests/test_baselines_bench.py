"""The GPU benchmark module runs at tiny size on the CPU and reports well-formed results."""
from __future__ import annotations

import json
import math

import pytest
import torch

from baselines.bench import LABEL, main


@pytest.mark.slow
def test_tiny_cpu_benchmark_reports_every_measurement(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    main(["--size", "tiny", "--device", "cpu", "--warmup-steps", "2", "--timed-steps", "3", "--repeats", "2",
          "--sample-steps", "3", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert report["label"] == LABEL and "random-init" in LABEL
    assert report["device"] == "cpu" and report["matmul_flops_per_second"] > 0
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == ["dreambooth", "custom_diffusion", "textual_inversion", "sampling@1", "sampling@4"]
    assert [results[n]["batch"] for n in results] == [2, 4, 4, 1, 4]  # TI: 4 micro-batches of 1, fused
    assert [results[n]["unit"] for n in results] == ["steps/s"] * 3 + ["s/image"] * 2
    for result in results.values():
        assert math.isfinite(result["value"]) and result["value"] > 0
        assert result["flops"] > 0 and result["floor"] > 0
        assert result["target"] is None and result["meets_target"] is None  # targets are for SD 1.5 on a GPU
        assert result["peak_memory_gb"] is None
    for name in ("dreambooth", "custom_diffusion", "textual_inversion"):
        assert len(results[name]["seconds"]) == 3  # three timed windows of one step
        assert results[name]["value"] == pytest.approx(1 / sorted(results[name]["seconds"])[1])
    assert [results[n]["extra"]["trainable_parameters"] for n in ("dreambooth", "custom_diffusion",
                                                                   "textual_inversion")] == [1_055_044, 22_560, 32]
    textual = results["textual_inversion"]
    assert textual["extra"]["micro_steps_per_second"] == pytest.approx(4 * textual["value"])
    assert len(results["sampling@4"]["seconds"]) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("Diffusion baselines on cpu (random-init weights")
    assert all(name in printed for name in results)


def test_variants_are_measured_side_by_side(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    main(["--size", "tiny", "--device", "cpu", "--variants", "base", "fast", "nchw:sampling@1", "--only",
          "textual_inversion", "sampling@1", "--warmup-steps", "2", "--timed-steps", "2", "--repeats", "1",
          "--sample-steps", "2",
          "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert [(r["name"], r["variant"]) for r in report["results"]] == [
        ("textual_inversion", "base"), ("sampling@1", "base"), ("textual_inversion", "fast"), ("sampling@1", "fast"),
        ("sampling@1", "nchw")]
    assert report["errors"] == [] and report["skipped"] == []
    assert report["variants"]["base"]["sampling_loop"] == "diffusers"
    assert report["variants"]["fast"]["cuda_graphs"] is True and report["bandwidth_bytes_per_second"] > 0
    for result in report["results"]:  # on the CPU every variant is eager, so each counts its FLOPs
        assert result["flops"] > 0 and result["floor"] > 0
    base, fast = report["results"][0], report["results"][2]
    assert base["flops"] == fast["flops"]  # the same work
    assert base["extra"]["optimizer_bytes"] == 28 * 32 and base["extra"]["first_step_s"] > 0
    table = capsys.readouterr().out.split("\n{")[0]
    lines = [line.split() for line in table.splitlines()]
    assert lines[1][:3] == ["benchmark", "variant", "batch"]
    assert [line[:2] for line in lines[2:7]] == [["textual_inversion", "base"], ["textual_inversion", "fast"],
                                                 ["sampling@1", "base"], ["sampling@1", "fast"], ["sampling@1", "nchw"]]


@pytest.mark.parametrize("variants", [["turbo"], ["fast:sampling@9"]])
def test_unknown_variants_are_rejected(variants, capsys):
    with pytest.raises(SystemExit):
        main(["--size", "tiny", "--device", "cpu", "--variants", *variants])
    assert "unknown variant or benchmark" in capsys.readouterr().err


def test_free_memory_on_cuda_after_a_compiled_benchmark(monkeypatch):
    import baselines.bench_device as bench_device

    emptied = []
    monkeypatch.setattr(bench_device, "is_cuda", lambda device: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    for compiled in (False, True):
        bench_device.free_memory("cuda", compiled=compiled)
    assert emptied == [True, True]


def test_floors_come_from_a_short_eager_run_when_no_variant_is_countable(tmp_path, monkeypatch):
    import baselines.bench as bench

    monkeypatch.setattr(bench, "countable", lambda settings, variant: variant == "base")  # as on a GPU
    report_path = tmp_path / "bench.json"
    main(["--size", "tiny", "--device", "cpu", "--variants", "default", "--only", "textual_inversion", "sampling@1",
          "--warmup-steps", "2", "--timed-steps", "2", "--repeats", "1", "--sample-steps", "2",
          "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert [r["variant"] for r in report["results"]] == ["default", "default"]  # the eager runs add no rows
    for result in report["results"]:
        assert result["flops"] > 0 and result["floor"] > 0
        assert result["extra"]["flops_counted_in"] == "a short eager run"


def test_the_default_variant_spells_out_the_config_defaults():
    from baselines.bench import _DEFAULT, METHODS

    for method_class in METHODS:
        defaults = method_class.Config()
        for name, value in _DEFAULT.items():
            if name in method_class.Config.__dataclass_fields__:
                assert getattr(defaults, name) == value, (method_class.name, name)
