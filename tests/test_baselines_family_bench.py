"""The per-family benchmark of DreamBooth-LoRA and IP-Adapter (baselines.family_bench) at tiny
size on the CPU, its `families` bench component, floor-fraction targets, and the cost
projection of DreamBooth-LoRA and IP-Adapter arms from synthetic rows (no GPU)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest
import torch

import baselines.family_bench as family_bench
from baselines.bench_component import bench_families, family_rows
from baselines.dreambooth_lora import COMPILE_PAYS_AFTER
from baselines.family_bench import FamilyBenchSettings, Fitted, main, run_family_bench
from varbench.bench import harness
from varbench.bench.cost import Workload, arm_hours, lora_step_rate, project
from varbench.bench.harness import row
from varbench.models.families import FAMILIES
from varbench.protocol import load_protocol
from varbench.schema import EXECUTION

LORA_FAMILIES = ("sd15", "sdxl", "sd3", "flux")
IP_FAMILIES = ("sd15", "sdxl", "flux")


def expected_names() -> list[str]:
    names = []
    for family in LORA_FAMILIES:
        step = f"dreambooth_lora {family} step" + (" (gradient checkpointing)" if family == "flux" else "")
        names += [step, f"dreambooth_lora {family} sampling@1", f"dreambooth_lora {family} sampling@2"]
        if family in IP_FAMILIES:
            names += [f"ip_adapter {family} sampling@1", f"ip_adapter {family} sampling@2"]
    return names


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("family-bench") / "out.json"
    report = main(["--size", "tiny", "--device", "cpu", "--sample-steps", "2", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))  # the file is the final report
    return report


@pytest.mark.slow
def test_tiny_run_measures_every_family_and_kind(tiny_report):
    assert tiny_report["errors"] == [] and tiny_report["skipped"] == []
    assert [r["name"] for r in tiny_report["results"]] == expected_names()  # FLUX last
    for result in tiny_report["results"]:
        assert math.isfinite(result["value"]) and result["value"] > 0, result["name"]
        assert result["flops"] > 0 and result["floor"] > 0, result["name"]
        assert result["peak_memory_gib"] is None  # CPU
        assert result["unit"] == ("steps/s" if result["kind"] == "step" else "s/image")
    steps = {r["family"]: r for r in tiny_report["results"] if r["kind"] == "step"}
    for family, step in steps.items():  # the method's defaults: 4 photos a step, no prior
        assert step["batch"] == 4 and step["extra"]["prior_preservation"] is False
        assert step["extra"]["gradient_checkpointing"] is (family == "flux")
        assert step["extra"]["trainable_parameters"] > 0 and len(step["seconds"]) == 2
    sampling = {r["name"]: r for r in tiny_report["results"] if r["kind"] == "sampling"}
    assert sampling["dreambooth_lora sdxl sampling@2"]["extra"]["sample_steps"] == 2
    assert sampling["ip_adapter flux sampling@1"]["extra"]["true_cfg_scale"] == 4.0  # the method's FLUX default


@pytest.mark.slow
def test_component_rows_carry_the_floor_and_its_targets(tiny_report, monkeypatch):
    monkeypatch.setattr(family_bench, "run_family_bench", lambda settings: tiny_report)
    rows = bench_families("tiny", "cpu")
    assert [r["name"] for r in rows] == expected_names()
    for r in rows:
        assert r["component"] == "families" and 0 < r["fraction_of_floor"]
        assert r["meets_target"] is None  # targets apply at full size only
    by_name = {r["name"]: r for r in rows}
    assert by_name["dreambooth_lora sdxl step"]["floor_target"] == 0.35
    assert by_name["dreambooth_lora flux step (gradient checkpointing)"]["floor_target"] == 0.35
    assert by_name["dreambooth_lora flux sampling@1"]["floor_target"] == 0.45
    assert by_name["ip_adapter sdxl sampling@1"]["floor_target"] is None
    full = {r["name"]: r for r in family_rows(tiny_report, full_size=True)}
    step = full["dreambooth_lora sd15 step"]
    assert step["meets_target"] is (step["fraction_of_floor"] >= 0.35)
    failures = family_rows({**tiny_report, "results": [], "errors": [{"name": "x", "error": "out of memory"}]}, True)
    assert failures == [{"component": "families", "name": "x", "error": "out of memory"}]


def test_floor_targets_are_checked_in_row():
    assert harness.FLOOR_TARGETS["dreambooth_lora sd3 step"] == 0.35
    slow = row("families", "dreambooth_lora sd3 step", 1.0, "steps/s", flops=100e12, rate=1000e12)  # floor 10/s
    fast = row("families", "dreambooth_lora sd3 step", 4.0, "steps/s", flops=100e12, rate=1000e12)
    assert slow["fraction_of_floor"] == pytest.approx(0.1) and slow["meets_target"] is False
    assert fast["meets_target"] is True and fast["target"] is None and fast["floor_target"] == 0.35
    uncounted = row("families", "dreambooth_lora sd3 step", 4.0, "steps/s", flops=None, rate=1000e12)
    assert uncounted["meets_target"] is None  # no floor, nothing to compare
    image = row("families", "dreambooth_lora flux sampling@1", 2.0, "s/image", flops=1000e12, rate=1000e12)
    assert image["fraction_of_floor"] == pytest.approx(0.5) and image["meets_target"] is True
    assert "45% of floor" in harness.format_bench({"device": "d", "note": "n", "rows": [image]})
    assert row("baselines", "dreambooth step", 16.0, "steps/s", 5e12, 800e12)["floor_target"] is None


@dataclass
class FakeConfig:
    resolution: int = 64
    sample_steps: int = 2
    sampler: str = "dpm"
    guidance_scale: float = 7.5
    cuda_graphs: bool = True
    compile: bool = False
    channels_last: bool = True
    cudnn_attention: bool = False
    fuse_lora_qkv: bool = False
    compile_generation: bool | str = field(default="auto", metadata={EXECUTION: "compile_generation"})

    def model_family(self, quiet=False):
        return FAMILIES["sdxl"]  # no measured break-even for sampling: `auto` settles to no compile


class FakeModel:
    def __init__(self):
        self.config = FakeConfig()
        self.calls = []  # the speed options of each generate call

    def generate(self, prompts, seeds):
        self.calls.append((self.config.cuda_graphs, self.config.compile_generation))
        return [None] * len(prompts)


def test_out_of_memory_at_the_default_refits_with_checkpointing_and_budget_skips(monkeypatch):
    calls = []

    def fake_fit(family, settings, folder, cache, checkpointing, variant="default", count=True):
        calls.append(checkpointing)
        if not checkpointing:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return Fitted({"name": family_bench.step_name(family, True), "method": "dreambooth_lora", "family": family,
                       "kind": "step", "value": 2.0, "unit": "steps/s", "batch": 4, "seconds": [1.0],
                       "flops": 1e9, "peak_memory_gib": None, "extra": {}}, FakeModel())

    monkeypatch.setattr(family_bench, "bench_lora_fit", fake_fit)
    monkeypatch.setattr(family_bench, "bench_ip_adapter", lambda run, family, folder, cache: None)
    settings = FamilyBenchSettings.for_size("tiny", "cpu", families=("sdxl",), budget_s=1e-9)
    report = run_family_bench(settings)
    assert calls == [False, True]
    assert report["errors"] == [{"name": "dreambooth_lora sdxl step",
                                 "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}]
    assert [r["name"] for r in report["results"]] == ["dreambooth_lora sdxl step (gradient checkpointing)",
                                                      "dreambooth_lora sdxl sampling@1"]
    assert [s["name"] for s in report["skipped"]] == ["dreambooth_lora sdxl sampling@2"]  # past the budget


def fake_step_fits(monkeypatch, out_of_memory=lambda variant, checkpointing: False) -> list[tuple]:
    """Replace each family's fits by instant fake ones (eager, then default; FLOPs seen on
    eager only) and IP-Adapter by nothing; returns the (variant, checkpointing, count) of
    every fit asked for."""
    fits = []

    def fake_fit(family, settings, folder, cache, checkpointing, variant="default", count=True):
        fits.append((variant, checkpointing, count))
        if out_of_memory(variant, checkpointing):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return Fitted({"name": family_bench.step_name(family, checkpointing, variant), "method": "dreambooth_lora",
                       "family": family, "kind": "step", "value": 2.0, "unit": "steps/s", "batch": 4,
                       "seconds": [1.0], "flops": 1e9 if count else None, "peak_memory_gib": None, "extra": {}},
                      FakeModel())

    monkeypatch.setattr(family_bench, "bench_lora_fit", fake_fit)
    monkeypatch.setattr(family_bench, "bench_ip_adapter", lambda run, family, folder, cache: None)
    monkeypatch.setattr(family_bench, "variants_to_fit", lambda family, checkpointing, device: ["eager", "default"])
    monkeypatch.setattr(family_bench, "flops_visible",
                        lambda family, variant, checkpointing, device: variant == "eager")
    return fits


def test_on_a_gpu_each_step_is_measured_eager_then_at_the_defaults_with_the_eager_flops(monkeypatch):
    assert family_bench.variants_to_fit("sd15", False, "cuda") == ["eager", "default"]
    assert family_bench.variants_to_fit("sdxl", True, "cuda") == ["eager", "default"]  # NHWC weights still apply
    assert family_bench.variants_to_fit("sd3", False, "cuda") == ["eager", "default"]
    assert family_bench.variants_to_fit("sd15", False, "cpu") == ["default"]
    assert family_bench.flops_visible("sdxl", "eager", False, "cuda")
    assert not family_bench.flops_visible("sdxl", "default", False, "cuda")  # replayed graphs
    # checkpointed: no graphs, but a worker of 30 cells compiles FLUX.1-dev's fit at the defaults
    assert family_bench.variants_to_fit("flux", True, "cuda") == ["eager", "default"]
    assert not family_bench.flops_visible("flux", "default", True, "cuda")
    monkeypatch.setitem(COMPILE_PAYS_AFTER, "flux", {})  # were there no break-even, `auto` would not compile it
    assert family_bench.variants_to_fit("flux", True, "cuda") == ["default"]  # nothing for eager to differ in
    assert family_bench.flops_visible("flux", "default", True, "cuda")
    assert not family_bench.flops_visible("flux", "compiled", True, "cuda")
    # a worker of 30 cells compiles SD3's fit at the defaults (COMPILE_PAYS_AFTER), so its
    # checkpointed default step is compiled too, and the counter does not see it
    assert not family_bench.flops_visible("sd3", "default", True, "cuda")
    fits = fake_step_fits(monkeypatch)
    report = run_family_bench(FamilyBenchSettings.for_size("tiny", "cpu", families=("sd3",), batches=(1,)))
    assert fits == [("eager", False, True), ("default", False, False)]
    # sampling follows the first fit, with its model (on the CPU under the defaults only)
    assert [r["name"] for r in report["results"]] == [
        "dreambooth_lora sd3 step (eager)", "dreambooth_lora sd3 sampling@1", "dreambooth_lora sd3 step"]
    steps = [r for r in report["results"] if r["kind"] == "step"]
    assert [r["flops"] for r in steps] == [1e9, 1e9] and steps[1]["floor"] == steps[0]["floor"]


def test_on_a_gpu_sampling_runs_eager_then_at_the_defaults_with_the_eager_flops(monkeypatch):
    """The first fit's model samples under each variant's speed options; the replayed
    default calls, which the counter cannot see, take the eager calls' FLOPs."""
    assert family_bench.sampling_variants("cuda") == ["eager", "default"]
    assert family_bench.sampling_variants("cpu") == ["default"]
    models = []
    fake_step_fits(monkeypatch)
    plain_fit = family_bench.bench_lora_fit

    def fit(*args, **kwargs):
        fitted = plain_fit(*args, **kwargs)
        models.append(fitted.model)
        return fitted

    monkeypatch.setattr(family_bench, "bench_lora_fit", fit)
    monkeypatch.setattr(family_bench, "sampling_variants", lambda device: ["eager", "default"])
    monkeypatch.setattr(family_bench, "is_cuda", lambda device: True)  # (timing stays on the CPU)
    counted = []
    monkeypatch.setattr(family_bench, "count_flops", lambda work: counted.append(work()) or 5e9)
    report = run_family_bench(FamilyBenchSettings.for_size("tiny", "cpu", families=("sd3",), batches=(1,)))
    sampling = [r for r in report["results"] if r["kind"] == "sampling"]
    assert [r["name"] for r in sampling] == ["dreambooth_lora sd3 sampling@1 (eager)",
                                             "dreambooth_lora sd3 sampling@1"]
    assert len(counted) == 1 and [r["flops"] for r in sampling] == [5e9, 5e9]
    assert [(r["extra"]["cuda_graphs"], r["extra"]["fallbacks"]) for r in sampling] == [(False, []), (True, [])]
    # warm-up + 1 timed call each (tiny), eager first, on the first fit's model only; the
    # defaults replay graphs, compiled (a worker of 30 cells compiles SD3's sampling: COMPILE_PAYS_AFTER)
    assert models[0].calls == [(False, False)] * 2 + [(True, True)] * 2 and models[1].calls == []


def test_a_default_fit_retried_with_checkpointing_does_not_take_the_eager_flops(monkeypatch):
    """Checkpointing recomputes the forward: its FLOPs are not those of the eager step."""
    # the default fit runs out of memory without checkpointing
    fits = fake_step_fits(monkeypatch, lambda variant, checkpointing: variant == "default" and not checkpointing)
    report = run_family_bench(FamilyBenchSettings.for_size("tiny", "cpu", families=("sdxl",), batches=(1,)))
    assert fits == [("eager", False, True), ("default", False, False), ("default", True, False)]
    steps = {r["name"]: r for r in report["results"] if r["kind"] == "step"}
    assert steps["dreambooth_lora sdxl step (eager)"]["flops"] == 1e9
    assert steps["dreambooth_lora sdxl step (gradient checkpointing)"]["flops"] is None
    assert [e["name"] for e in report["errors"]] == ["dreambooth_lora sdxl step"]


def test_later_cells_fit_on_fresh_bases_and_sample_again_under_their_own_names(monkeypatch):
    """`cells`: a worker's later cells, each a new fit with its own model and its own
    first sampling call; the first cell's rows keep their names."""
    fits = fake_step_fits(monkeypatch)
    folders, models = [], []
    fake_fit = family_bench.bench_lora_fit

    def fit(family, settings, folder, *args, **kwargs):
        folders.append(folder.relative_to(folder.parents[2]).as_posix())
        fitted = fake_fit(family, settings, folder, *args, **kwargs)
        models.append(fitted.model)
        return fitted

    monkeypatch.setattr(family_bench, "bench_lora_fit", fit)
    settings = FamilyBenchSettings.for_size("tiny", "cpu", families=("sd3",), batches=(1,), cells=2,
                                            step_variants=("compiled",))
    report = run_family_bench(settings)
    assert [r["name"] for r in report["results"]] == [
        "dreambooth_lora sd3 step (compiled)", "dreambooth_lora sd3 sampling@1",
        "dreambooth_lora sd3 step (compiled) [cell 2]", "dreambooth_lora sd3 sampling@1 [cell 2]"]
    assert folders == ["lora/compiled/cell1", "lora/compiled/cell2"] and len(fits) == 2
    assert models[0] is not models[1] and len(models[0].calls) == len(models[1].calls) == 2
    later = [r for r in report["results"] if "[cell 2]" in r["name"]]
    assert [r["extra"]["cell"] for r in later] == [2, 2]
    for refused in (["--cells", "0"], ["--cells", "2"], ["--cells", "2", "--step-variants", "eager,default"]):
        with pytest.raises(SystemExit):  # later cells of one variant only: their rows' names are its own
            main(["--size", "tiny", "--device", "cpu", *refused])


def test_a_later_cell_that_fails_is_named_as_that_cell(monkeypatch):
    fake_step_fits(monkeypatch, lambda variant, checkpointing: len(calls) > 1)
    calls = []
    fake_fit = family_bench.bench_lora_fit

    def fit(*args, **kwargs):
        calls.append(args)
        return fake_fit(*args, **kwargs)

    monkeypatch.setattr(family_bench, "bench_lora_fit", fit)
    report = run_family_bench(FamilyBenchSettings.for_size("tiny", "cpu", families=("sd3",), batches=(1,), cells=2,
                                                           step_variants=("default",)))
    assert [r["name"] for r in report["results"]] == ["dreambooth_lora sd3 step", "dreambooth_lora sd3 sampling@1"]
    # out of memory, then again with checkpointing: both errors are the second cell's
    assert [e["name"] for e in report["errors"]] == ["dreambooth_lora sd3 step [cell 2]",
                                                     "dreambooth_lora sd3 step (gradient checkpointing) [cell 2]"]


# --- cost projection ----------------------------------------------------------------------

def family_bench_rows():
    return [row("families", "dreambooth_lora sdxl step", 2.0, "steps/s", None, None),
            row("families", "dreambooth_lora sdxl sampling@1", 1.5, "s/image", None, None),
            row("families", "dreambooth_lora sdxl sampling@4", 1.0, "s/image", None, None),
            row("families", "dreambooth_lora flux step (gradient checkpointing)", 0.5, "steps/s", None, None),
            row("families", "dreambooth_lora flux sampling@1", 3.0, "s/image", None, None),
            row("families", "ip_adapter sdxl sampling@1", 2.5, "s/image", None, None),
            row("families", "ip_adapter sdxl sampling@4", 2.0, "s/image", None, None),
            row("metrics", "scoring", 1000.0, "images/s", None, None)]


def test_cost_projects_dreambooth_lora_and_ip_adapter_arms():
    protocol = load_protocol("dreambench")
    work, rows = Workload(subjects=30, classes=15, images_per_subject=104), family_bench_rows()
    sdxl = arm_hours(protocol.arm("lora-sdxl"), rows, work, batch=4)
    assert sdxl["fit"] == pytest.approx(30 * 500 / 2.0 / 3600)
    assert sdxl["generate"] == pytest.approx(30 * 104 * 1.0 / 3600)
    assert sdxl["score"] == pytest.approx(30 * 104 / 1000 / 3600)
    flux = arm_hours(protocol.arm("lora-flux"), rows, work, batch=4)  # checkpointed, as the arm trains
    assert flux["fit"] == pytest.approx(30 * 500 / 0.5 / 3600)
    assert flux["generate"] == pytest.approx(30 * 104 * 3.0 / 3600)  # only batch 1 measured: used
    ip = arm_hours(protocol.arm("ip-adapter-sdxl"), rows, work, batch=4)
    assert ip["fit"] == 0 and ip["generate"] == pytest.approx(30 * 104 * 2.0 / 3600)
    assert arm_hours(protocol.arm("lora-sdxl"), rows[3:], work, batch=4) is None  # SDXL not measured
    # the arm's own variant first, the other where only that one was measured
    assert lora_step_rate(rows, "sdxl", checkpointing=True) == 2.0
    assert lora_step_rate(rows, "flux", checkpointing=False) == 0.5
    assert lora_step_rate(rows, "sd3", checkpointing=False) is None


def test_vico_live_is_projected_only_where_its_protocol_exists(monkeypatch):
    import varbench.protocol as protocol_module

    found = protocol_module.available_protocols()
    protocols = {entry["protocol"] for entry in project(family_bench_rows())}
    assert protocols == {"dreambench", "vico"} | ({"vico_live"} if "vico_live" in found else set())
    monkeypatch.setattr(protocol_module, "available_protocols",
                        lambda: {name: path for name, path in found.items() if name != "vico_live"})
    assert {entry["protocol"] for entry in project(family_bench_rows())} == {"dreambench", "vico"}


def test_the_budget_counts_the_one_time_compile_a_new_batch_size_pays_again():
    """A batch-4 call predicted from batch 1 also pays batch 1's one-time capture and compile
    again (graphs and compiled code are per shape), so a run near its budget skips it."""
    run = family_bench.Run(FamilyBenchSettings.for_size("tiny", "cpu", budget_s=100.0), None)
    assert run.fits_budget("sampling@4", 1.0, 4, once_s=0.0)  # 1.1 x 4 x 2 = 9 s
    assert not run.fits_budget("sampling@4", 1.0, 4, once_s=140.0)  # + a FLUX-sized compile
    assert [s["name"] for s in run.report["skipped"]] == ["sampling@4"]
