"""`varbench bench`: every speed figure of the suite, at full size with random weights on
one GPU, each against its FLOP floor, plus the projected cost of whole protocols.

Components (each also runnable alone, see its module):
  infinity   Infinity-2B sampling s/image at batch 1, 4, 8 (transformer + VAE decode)
             varbench.models.infinity.bench
  arbooth    one ARBooth fine-tuning iteration (batch 2, soft distillation)
             varbench.methods.arbooth.bench
  baselines  DreamBooth / Custom Diffusion / Textual Inversion steps/s, SD 1.5 50-step CFG
             sampling s/image at batch 1 and 4                    baselines.bench
  metrics    scoring throughput: PNG decode + DINO + CLIP-I + CLIP-T  varbench.metrics.bench

Every row: value and unit, the FLOPs of one unit of work, the floor (those FLOPs at the
measured bf16 matmul rate of the same GPU), the fraction of the floor reached, peak
memory, the target where the issue sets one. Results go to `<out>/bench.json` (merged
with an existing file by component, so components can run in separate calls) and
`<out>/bench.md`; `<out>/cost.md` projects GPU-hours of the `dreambench` and `vico`
protocols per method (varbench.cost). Weights are random: timings only.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from varbench.fileio import read_json, write_json, write_text

COMPONENTS = ("infinity", "arbooth", "baselines", "metrics")
NOTE = "random-init weights: timings only, not image quality"
SIZES = {  # --size full | tiny -> each component's size name
    "full": {"infinity": "infinity-2b", "arbooth": "infinity-2b", "baselines": "sd15", "metrics": "real"},
    "tiny": {"infinity": "infinity-tiny", "arbooth": "infinity-tiny", "baselines": "tiny", "metrics": "tiny"},
}
# Issue targets on one H100: (benchmark name, unit) -> bound (s/... at most, .../s at least).
TARGETS = {"infinity sampling@1": 0.5, "infinity sampling@8": 0.25, "infinity sampling@8 (compiled)": 0.25,
           "arbooth iteration": 3.0,
           "dreambooth step": 15.0, "custom_diffusion step": 25.0, "custom_diffusion step (compiled)": 25.0,
           # Textual Inversion's target and reference count micro-steps (batch 1; one
           # optimizer step accumulates 4 of them; varbench runs them as one batch of 4).
           "textual_inversion micro-step": 25.0,
           "sd15 sampling@4": 0.25, "sd15 sampling@4 (compiled)": 0.25, "scoring": 2000.0}


def row(component: str, name: str, value: float, unit: str, flops: float | None, rate: float | None,
        peak_gib: float | None = None, **details: Any) -> dict[str, Any]:
    """One benchmark figure with its floor: rates ('.../s') are capped by rate/flops,
    times ('s/...') bounded below by flops/rate."""
    floor = fraction = None
    if flops and rate:
        floor = rate / flops if unit.endswith("/s") else flops / rate
        fraction = value / floor if unit.endswith("/s") else floor / value
    target = TARGETS.get(name)
    meets = None
    if target is not None and details.get("full_size", True):
        meets = value >= target if unit.endswith("/s") else value <= target
    return {"component": component, "name": name, "value": value, "unit": unit, "flops": flops,
            "floor": floor, "fraction_of_floor": fraction, "peak_memory_gib": peak_gib, "target": target,
            "meets_target": meets, "details": details}


def bench_infinity(size: str, device: str) -> list[dict[str, Any]]:
    from varbench.models.infinity.bench import run_benchmark

    report = run_benchmark(size, (1, 4, 8), device, repeats=3, warmup=2,
                           variants=("graphs", "fused", "compiled", "compiled-graphs"))
    flops, rate = report["flops_per_image"]["total"], report["matmul_flops_per_second"]
    # Per batch size the fastest of the default paths (graphs up to batch 4, else the
    # fused decoder), and the faster of compiled blocks with and without CUDA graphs as a
    # row of their own: generation does not compile them by default (compiling costs
    # ~50 s per batch size).
    best: dict[tuple[int, bool], dict] = {}
    for result in report["results"]:
        key = (result["batch"], result["variant"].startswith("compiled"))
        if "error" not in result and (key not in best or
                                      result["total_s_per_image"] < best[key]["total_s_per_image"]):
            best[key] = result
    return [row("infinity", f"infinity sampling@{batch}" + (" (compiled)" if compiled else ""),
                r["total_s_per_image"], "s/image", flops, rate, r["peak_memory_gib"], variant=r["variant"],
                transformer_s=r["transformer_s_per_image"], decode_s=r["vae_decode_s_per_image"],
                setup_s=r["warmup_seconds"], full_size=size == "infinity-2b")
            for (batch, compiled), r in sorted(best.items())]


def bench_arbooth(size: str, device: str) -> list[dict[str, Any]]:
    from varbench.methods.arbooth.bench import run_benchmark

    report = run_benchmark(size, device, ("default", "eager", "joint-pool"), warmup=2, iterations=5)
    rate = report["matmul_flops_per_second"]
    names = {"default": "arbooth iteration", "eager": "arbooth iteration (eager blocks)",
             "joint-pool": "arbooth iteration (teacher pool)"}
    return [failed("arbooth", names[r["variant"]], r["error"]) if "error" in r else
            row("arbooth", names[r["variant"]], r["seconds_per_iteration"], "s/iteration", r["flops"]["total"],
                rate, r["peak_memory_gib"], split=r["split_seconds"], setup_s=r["warmup_seconds"],
                recomputed_blocks=r["recomputed_blocks"], full_size=size == "infinity-2b")
            for r in report["results"]]


def failed(component: str, name: str, error: str) -> dict[str, Any]:
    """A benchmark that produced no figure (e.g. out of memory): listed, never dropped."""
    return {"component": component, "name": name, "error": error}


def bench_baselines(size: str, device: str) -> list[dict[str, Any]]:
    from baselines.bench import BenchSettings, run_benchmarks

    # Compiled SD sampling and Custom Diffusion too, as rows of their own: compiling costs
    # 1.5-2.5 min (cold cache), so it pays for long runs only and is opt-in.
    variants = ("default", "compiled:sampling@4,custom_diffusion")
    report = run_benchmarks(BenchSettings(size=size, device=device, variants=variants))
    rate = report["matmul_flops_per_second"]
    rows = []
    for r in report["results"]:
        name = f"sd15 {r['name']}" if r["name"].startswith("sampling") else f"{r['name']} step"
        if r.get("variant", "default") != "default":
            name += f" ({r['variant']})"
        value, unit = r["value"], "steps/s" if r["unit"] == "steps/s" else r["unit"]
        rows.append(row("baselines", name, value, unit, r.get("flops"), rate, r.get("peak_memory_gb"),
                        batch=r.get("batch"), variant=r.get("variant"), full_size=size == "sd15", **r.get("extra", {})))
        micro = r.get("extra", {}).get("micro_steps_per_second")
        if micro:
            per_micro = r["flops"] * value / micro if r.get("flops") else None
            rows.append(row("baselines", f"{r['name']} micro-step", micro, "micro-steps/s", per_micro, rate,
                            r.get("peak_memory_gb"), batch=r.get("batch"), full_size=size == "sd15"))
    return rows + [failed("baselines", error.split(":")[0], error) for error in report["errors"]]


def bench_metrics(size: str, device: str) -> list[dict[str, Any]]:
    from varbench.metrics.bench import measure_throughput

    images = 4096 if size == "real" else 64
    report = measure_throughput(device, size, images=images, image_size=512 if size == "real" else 64,
                                batch_size=256 if size == "real" else 16)
    flops = report["encoder_gflops_per_image"] * 1e9
    return [row("metrics", "scoring", report["images_per_second"], "images/s", flops,
                report["matmul_tflops_per_second"] * 1e12, None, decode_images_per_second=report["decode_images_per_second"],
                encode_images_per_second=report["encode_images_per_second"],
                decode_workers=report["decode_workers"], workers_start_seconds=report["workers_start_seconds"],
                full_size=size == "real")]


RUNNERS: dict[str, Callable[[str, str], list[dict[str, Any]]]] = {
    "infinity": bench_infinity, "arbooth": bench_arbooth, "baselines": bench_baselines, "metrics": bench_metrics}


def run_bench(size: str, device: str, only: tuple[str, ...], out: Path, gpus: int = 8) -> dict[str, Any]:
    """Run the chosen components, merge into `<out>/bench.json`, write the tables."""
    from varbench.provenance import device_name, package_versions

    previous = read_json(out / "bench.json", default={"rows": []})
    rows = [r for r in previous["rows"] + previous.get("failures", []) if r["component"] not in only]
    for component in only:
        rows += RUNNERS[component](SIZES[size][component], device)
    ordered = sorted(rows, key=lambda r: COMPONENTS.index(r["component"]))
    report = {"note": NOTE, "size": size, "device": device_name(device), "packages": package_versions(),
              "rows": [r for r in ordered if "error" not in r], "failures": [r for r in ordered if "error" in r]}
    write_json(out / "bench.json", report)
    write_text(out / "bench.md", format_bench(report))
    from varbench.cost import cost_report
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
        lines.append(f"| {r['name']} | {fmt(r['value'], '.4g')} | {r['unit']} | {fmt(r['floor'])} | "
                     f"{fmt(r['fraction_of_floor'], '.0%')} | {fmt(r['peak_memory_gib'], '.1f')} | "
                     f"{fmt(r['target'])} | {met} |")
    if report.get("failures"):
        lines += ["", "Failed (no figure):"] + [f"- {r['name']}: {r['error']}" for r in report["failures"]]
    lines += ["", "Floor: the counted FLOPs of one unit of work at the measured bf16 matmul rate of the "
              "same GPU (a rate's ceiling, a time's lower bound)."]
    return "\n".join(lines) + "\n"


def print_bench(report: dict[str, Any]) -> None:
    from varbench.progress import console

    console.print(format_bench(report), markup=False, highlight=False, soft_wrap=True)
