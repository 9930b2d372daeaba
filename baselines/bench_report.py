"""The benchmark report (`baselines.bench`): floors shared between variants, and the
printed tables (one row per benchmark and variant, side by side)."""
from __future__ import annotations

from typing import Any

BENCHMARK_ORDER = ("dreambooth", "custom_diffusion", "textual_inversion", "sampling@1", "sampling@4")


def fill_floors(results: list[dict[str, Any]]) -> None:
    """Variants whose FLOPs could not be counted (graphs, compiled) take those of a
    counted variant of the same benchmark: the same work, differently scheduled."""
    counted = {r["name"]: r for r in results if r["flops"] is not None}
    for result in results:
        if result["flops"] is None and result["name"] in counted:
            result["flops"] = counted[result["name"]]["flops"]
            result["floor"] = counted[result["name"]]["floor"]


def floor_fraction(result: dict[str, Any]) -> float | None:
    """Measured speed as a fraction of the floor (1 = at the floor)."""
    if result["floor"] is None:
        return None
    if result["unit"] == "s/image":
        return result["floor"] / result["value"]
    return result["value"] / result["floor"]


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'benchmark':<18} {'variant':<18} {'batch':>5} {'value':>10} {'unit':<8} {'floor':>10} {'%floor':>7} "
              f"{'target':>7} {'ok':>4} {'peak GB':>8} {'setup s':>8}")
    lines = [f"Diffusion baselines on {report['device']} ({report['label']})", header]
    order = {name: i for i, name in enumerate(BENCHMARK_ORDER)}
    variants = list(report["variants"])
    rows = sorted(report["results"], key=lambda r: (order[r["name"]], variants.index(r["variant"])))
    for r in rows:
        floor = f"{r['floor']:.3g}" if r["floor"] is not None else "-"
        fraction = floor_fraction(r)
        percent = f"{100 * fraction:.1f}" if fraction is not None else "-"
        target = f"{r['target']:g}" if r["target"] is not None else "-"
        ok = {True: "yes", False: "no", None: "-"}[r["meets_target"]]
        peak = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "-"
        setup = r["extra"].get("first_step_s", r["extra"].get("first_call_s"))
        lines.append(f"{r['name']:<18} {r['variant']:<18} {r['batch']:>5} {r['value']:>10.4g} {r['unit']:<8} "
                     f"{floor:>10} {percent:>7} {target:>7} {ok:>4} {peak:>8} {setup:>8.1f}")
    micro = [r for r in rows if "micro_steps_per_second" in r["extra"]]
    for r in micro:
        lines.append(f"  {r['name']} [{r['variant']}]: {r['extra']['micro_steps_per_second']:.4g} micro-steps/s "
                     f"(one step = {r['extra']['micro_steps_per_second'] / r['value']:.0f} micro-batches; "
                     "the target counts micro-steps)")
    if report["skipped"]:
        lines.append(f"  skipped (deadline): {', '.join(report['skipped'])}")
    for error in report["errors"]:
        lines.append(f"  FAILED {error}")
    return "\n".join(lines)


def format_attention(report: dict[str, Any]) -> str:
    lines = []
    for title, rows in report.get("attention", {}).items():
        lines.append(f"SDPA ms per call, {title} (q tokens x kv tokens, heads x head dim)")
        for row in rows:
            cells = "  ".join(f"{name} {row[name]:.3f}" if row[name] is not None else f"{name} -"
                              for name in ("flash", "efficient", "cudnn", "math"))
            lines.append(f"  {row['queries']:>5} x {row['keys']:<5} {row['heads']} x {row['head_dim']:<4} {cells}")
    return "\n".join(lines)
