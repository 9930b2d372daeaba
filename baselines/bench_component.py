"""The `baselines` benchmark component: DreamBooth / Custom Diffusion / Textual Inversion
steps/s and SD 1.5 sampling s/image as varbench bench rows; and the `families` component:
DreamBooth-LoRA and IP-Adapter per model family (baselines.family_bench). Registered through the
entry-point group `varbench.benchmarks` (pyproject.toml), so varbench's core imports
nothing from this package.
"""
from __future__ import annotations

from typing import Any

from varbench.bench.harness import failed, row


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


def bench_families(size: str, device: str) -> list[dict[str, Any]]:
    """The `families` component (baselines.family_bench): DreamBooth-LoRA steps/s and
    sampling s/image, IP-Adapter s/image, per model family; `size` is full or tiny."""
    from baselines.family_bench import FamilyBenchSettings, run_family_bench

    report = run_family_bench(FamilyBenchSettings.for_size(size, device))
    return family_rows(report, full_size=size == "full")


def family_rows(report: dict[str, Any], full_size: bool) -> list[dict[str, Any]]:
    """A `baselines.family_bench` report as harness rows (its errors as failures; what the
    time budget skipped is left out, as not measured)."""
    rate = report["matmul_flops_per_second"]
    rows = [row("families", r["name"], r["value"], r["unit"], r["flops"], rate, r["peak_memory_gib"],
                method=r["method"], family=r["family"], batch=r["batch"], seconds=r["seconds"],
                full_size=full_size, **r["extra"])
            for r in report["results"]]
    return rows + [failed("families", e["name"], e["error"]) for e in report["errors"]]
