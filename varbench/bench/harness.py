"""`varbench bench`: every speed figure of the suite, at full size with random weights on
one GPU, each against its FLOP floor, plus the projected cost of whole protocols.

Components are registered through the entry-point group `varbench.benchmarks` (a method
package registers its own, as a third-party method would); the built-in ones (each also
runnable alone, see its module):
  infinity   Infinity-2B sampling s/image at batch 1, 4, 8 (transformer + VAE decode)
             varbench.models.infinity.bench
  arbooth    one ARBooth fine-tuning iteration (batch 2, soft distillation)
             varbench.methods.arbooth.bench
  baselines  DreamBooth / Custom Diffusion / Textual Inversion steps/s, SD 1.5 50-step CFG
             sampling s/image at batch 1 and 4                    baselines.bench
  metrics    scoring throughput: PNG decode + DINO + CLIP-I + CLIP-T  varbench.metrics.bench
  families   DreamBooth-LoRA steps/s and sampling s/image, IP-Adapter s/image, per model family
             (SD 1.5, SDXL, SD3 Medium, FLUX.1-dev)                 baselines.family_bench

Every row: value and unit, the FLOPs of one unit of work, the floor (those FLOPs at the
measured bf16 matmul rate of the same GPU), the fraction of the floor reached, peak
memory, the target where the issue sets one (an absolute bound, TARGETS, or a fraction of the
floor to reach, FLOOR_TARGETS). Results go to `<out>/bench.json` (merged
with an existing file by component, so components can run in separate calls) and
`<out>/bench.md`; `<out>/cost.md` projects GPU-hours of the `dreambench`, `vico` and
`vico_live` protocols per method (varbench.bench.cost). Weights are random: timings only.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from varbench.fileio import read_json, write_json, write_text

COMPONENTS = ("infinity", "arbooth", "baselines", "metrics", "score", "families")
NOTE = "random-init weights: timings only, not image quality"
SIZES = {  # --size full | tiny -> each component's size name
    "full": {"infinity": "infinity-2b", "arbooth": "infinity-2b", "baselines": "sd15", "metrics": "real",
             "score": "real", "families": "full"},
    "tiny": {"infinity": "infinity-tiny", "arbooth": "infinity-tiny", "baselines": "tiny", "metrics": "tiny",
             "score": "tiny", "families": "tiny"},
}
# Issue targets on one H100: (benchmark name, unit) -> bound (s/... at most, .../s at least).
TARGETS = {"infinity sampling@1": 0.5, "infinity sampling@8": 0.25, "infinity sampling@8 (compiled)": 0.25,
           "arbooth iteration": 3.0,
           "dreambooth step": 15.0, "custom_diffusion step": 25.0, "custom_diffusion step (compiled)": 25.0,
           # Textual Inversion's target and reference count micro-steps (batch 1; one
           # optimizer step accumulates 4 of them; varbench runs them as one batch of 4).
           "textual_inversion micro-step": 25.0,
           "sd15 sampling@4": 0.25, "sd15 sampling@4 (compiled)": 0.25, "scoring": 2000.0,
           "varbench score": 2000.0}
# Targets as a fraction of the row's FLOP floor, for figures whose worth is how well they use
# the GPU rather than an absolute time: met (at full size) when fraction_of_floor >= the bound.
# DreamBooth-LoRA steps (each family, as measured with or without gradient checkpointing: the
# counted FLOPs then include the recomputed forward) and FLUX.1-dev sampling (baselines.family_bench).
FLOOR_TARGETS = {**{f"dreambooth_lora {family} step{variant}": 0.35 for family in ("sd15", "sdxl", "sd3", "flux")
                    for variant in ("", " (gradient checkpointing)")},
                 "dreambooth_lora flux sampling@1": 0.45}


def row(component: str, name: str, value: float, unit: str, flops: float | None, rate: float | None,
        peak_gib: float | None = None, **details: Any) -> dict[str, Any]:
    """One benchmark figure with its floor: rates ('.../s') are capped by rate/flops,
    times ('s/...') bounded below by flops/rate. `meets_target`: every target the name has
    (TARGETS, FLOOR_TARGETS) met; None without a target, below full size, or when a floor
    target has no floor (FLOPs not counted)."""
    floor = fraction = None
    if flops and rate:
        floor = rate / flops if unit.endswith("/s") else flops / rate
        fraction = value / floor if unit.endswith("/s") else floor / value
    target, floor_target = TARGETS.get(name), FLOOR_TARGETS.get(name)
    checks: list[bool | None] = []
    if target is not None:
        checks.append(value >= target if unit.endswith("/s") else value <= target)
    if floor_target is not None:
        checks.append(None if fraction is None else fraction >= floor_target)
    meets = all(checks) if checks and None not in checks and details.get("full_size", True) else None
    return {"component": component, "name": name, "value": value, "unit": unit, "flops": flops,
            "floor": floor, "fraction_of_floor": fraction, "peak_memory_gib": peak_gib, "target": target,
            "floor_target": floor_target, "meets_target": meets, "details": details}


def failed(component: str, name: str, error: str) -> dict[str, Any]:
    """A benchmark that produced no figure (e.g. out of memory): listed, never dropped."""
    return {"component": component, "name": name, "error": error}


def components() -> dict[str, Callable[[str, str], list[dict[str, Any]]]]:
    """Every benchmark component, from the entry-point group `varbench.benchmarks` (in-tree
    ones and plugins alike; a method package registers its own), in COMPONENTS order first."""
    from importlib.metadata import entry_points

    found = {point.name: point for point in entry_points(group="varbench.benchmarks")}
    order = [name for name in COMPONENTS if name in found] + sorted(set(found) - set(COMPONENTS))
    return {name: found[name].load() for name in order}


def run_bench(size: str, device: str, only: tuple[str, ...], out: Path, gpus: int = 8) -> dict[str, Any]:
    """Run the chosen components, merge into `<out>/bench.json`, write the tables."""
    from varbench.provenance import device_name, package_versions

    previous = read_json(out / "bench.json", default={"rows": []})
    rows = [r for r in previous["rows"] + previous.get("failures", []) if r["component"] not in only]
    runners = components()
    for component in only:
        rows += runners[component](SIZES[size].get(component, size), device)
    rank = {name: index for index, name in enumerate(runners)}
    ordered = sorted(rows, key=lambda r: rank.get(r["component"], len(rank)))
    report = {"note": NOTE, "size": size, "device": device_name(device), "packages": package_versions(),
              "rows": [r for r in ordered if "error" not in r], "failures": [r for r in ordered if "error" in r]}
    write_json(out / "bench.json", report)
    write_text(out / "bench.md", format_bench(report))
    from varbench.bench.cost import cost_report
    from varbench.errors import UserError

    try:
        cost = cost_report(report, gpus)
    except UserError as err:  # e.g. no protocols or methods installed here: the figures still count
        cost = f"not projected: {err.line()}\n"
    write_text(out / "cost.md", cost)
    return report


def format_bench(report: dict[str, Any]) -> str:
    lines = [f"### Speed on {report['device']} ({report['note']})", "",
             "| benchmark | value | unit | floor | of floor | peak GiB | target | met |",
             "| :--- | ---: | :--- | ---: | ---: | ---: | ---: | :---: |"]
    for r in report["rows"]:
        def fmt(x, spec=".3g"):
            return "" if x is None else format(x, spec)
        met = {True: "yes", False: "no", None: ""}[r["meets_target"]]
        target = " ".join(t for t in (fmt(r["target"]), fmt(r.get("floor_target"), ".0%")) if t)
        if r.get("floor_target") is not None:
            target += " of floor"
        lines.append(f"| {r['name']} | {fmt(r['value'], '.4g')} | {r['unit']} | {fmt(r['floor'])} | "
                     f"{fmt(r['fraction_of_floor'], '.0%')} | {fmt(r['peak_memory_gib'], '.1f')} | "
                     f"{target} | {met} |")
    if report.get("failures"):
        lines += ["", "Failed (no figure):"] + [f"- {r['name']}: {r['error']}" for r in report["failures"]]
    lines += ["", "Floor: the counted FLOPs of one unit of work at the measured bf16 matmul rate of the "
              "same GPU (a rate's ceiling, a time's lower bound)."]
    return "\n".join(lines) + "\n"


def print_bench(report: dict[str, Any]) -> None:
    from varbench.progress import console

    console.print(format_bench(report), markup=False, highlight=False, soft_wrap=True)
