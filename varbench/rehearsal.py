"""A full-size rehearsal (`varbench rehearse`): the real runner, in one process, at the real
model sizes with random weights everywhere (`--backbones random`), with short fits and a
few images, then a table of every phase's time and peak GPU memory per arm and the
protocol's GPU-hours projected from the measured per-step and per-image costs.

The rehearsed protocol is the given one with three edits, written beside its results as
`rehearsal.yaml` (so what ran is on disk): each arm's fit cut to `fit_steps` (the field a
method names in `Method.fit_steps_field`), the prompt lists cut to `prompts`, and
`images_per_prompt`. Every figure comes from random weights: timings and memory are
real, images and scores are not.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from varbench.protocol import find_protocol, load_protocol, read_yaml

NOTE = "random weights at the real sizes: timings and memory only, never image quality"


@dataclass
class RehearsalOptions:
    results: Path = Path("results")
    subjects: list[str] | None = None  # default: the dataset's first subject
    measured: Path | None = None  # project from an earlier rehearsal's rehearsal.json, run nothing
    overrides: list[str] = dataclasses.field(default_factory=list)  # --set execution.KEY=VALUE
    methods: list[str] | None = None  # arms or methods (default: all)
    fit_steps: int = 10
    prompts: int = 2
    images_per_prompt: int = 2
    device: str = "auto"
    data_root: str | None = None


def rehearse(protocol_name: str, options: RehearsalOptions) -> str:
    """Run the rehearsal of `protocol_name`; returns its Markdown table (also written to
    `<results>/<name>-random/rehearsal.md`)."""
    from varbench.plan import RunOptions, prepare
    from varbench.runner import run_protocol

    real = load_protocol(protocol_name)
    if options.measured is not None:  # e.g. measured on a GPU machine that lacks the dataset
        _, real_cells = prepare(protocol_name, RunOptions(data_root=options.data_root, methods=options.methods,
                                                          dry_run=True))
        figures = [ArmFigures(**entry) for entry in json.loads(Path(options.measured).read_text())]
        return format_table(figures, real, real_cells)
    edited = write_rehearsal_protocol(protocol_name, options)
    run_options = RunOptions(results=options.results, device=options.device, subjects=options.subjects,
                             methods=options.methods, data_root=options.data_root, random_weights=True,
                             retry_failed=True, overrides=list(options.overrides))
    if not options.subjects:
        _, cells = prepare(str(edited), RunOptions(data_root=options.data_root, random_weights=True, dry_run=True))
        run_options.subjects = [cells[0].subject.name]
    run_protocol(str(edited), run_options)
    _, cells = prepare(str(edited), run_options)
    _, real_cells = prepare(protocol_name, RunOptions(data_root=options.data_root, methods=options.methods,
                                                      dry_run=True))
    figures = measure(options.results, cells)
    table = format_table(figures, real, real_cells)
    folder = Path(options.results) / cells[0].protocol.name
    (folder / "rehearsal.json").write_text(json.dumps([dataclasses.asdict(f) for f in figures], indent=1))
    (folder / "rehearsal.md").write_text(table)
    return table


def write_rehearsal_protocol(protocol_name: str, options: RehearsalOptions) -> Path:
    """The protocol's YAML with short fits and few images, beside the rehearsal's results."""
    from varbench.registry import get_method

    data = read_yaml(find_protocol(protocol_name))
    data.pop("include", None)  # already merged in: the written file stands alone
    data["images_per_prompt"] = options.images_per_prompt
    data.setdefault("prompts", {})["limit"] = options.prompts
    for arm in data.get("arms", []):
        method = get_method(arm["method"])
        fields = {f.name for f in dataclasses.fields(method.Config)}
        changes = {k: v for k, v in method.rehearsal_config.items() if k in fields}
        if method.fit_steps_field is not None:  # None: nothing to shorten (a method that does not train)
            changes[method.fit_steps_field] = options.fit_steps
        arm.setdefault("config", {}).update(changes)
    folder = Path(options.results) / f"{data['name']}-random"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rehearsal.yaml"
    path.write_text("# written by varbench rehearse: " + NOTE + "\n" + yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class ArmFigures:
    arm: str
    load_s: float
    fit_s_per_step: float
    generate_s_per_image: float
    score_s_per_image: float
    peak_gib: dict[str, float]  # phase -> peak GPU memory


def measure(results: Path, cells: list[Any]) -> list[ArmFigures]:
    """Per arm, the mean of its cells' phases (warm-up batches excluded from the rates)."""
    from varbench.plan import cell_store
    from varbench.store import read_rows

    by_arm: dict[str, list[dict[str, str]]] = {}
    for cell in cells:
        store = cell_store(results, cell)
        rows = read_rows(store.dir / "timings.csv") + read_rows(store.score_dir(cell.arm.score_id) / "timings.csv")
        by_arm.setdefault(cell.arm.name, []).extend(rows)
    return [_figures(arm, rows) for arm, rows in by_arm.items()]


def _figures(arm: str, rows: list[dict[str, str]]) -> ArmFigures:
    def rate(phase: str) -> float:
        picked = [r for r in rows if r["phase"] == phase and r.get("warmup") != "True"]
        items = sum(int(r["items"] or 0) for r in picked)
        return sum(float(r["seconds"]) for r in picked) / items if items else math.nan

    loads = [float(r["seconds"]) for r in rows if r["phase"] == "load"]
    peaks: dict[str, float] = {}
    for r in rows:
        peak = int(r.get("peak_memory_bytes") or 0) / 2**30
        peaks[r["phase"]] = max(peaks.get(r["phase"], 0.0), peak)
    return ArmFigures(arm, sum(loads) / len(loads) if loads else math.nan, rate("fit"), rate("generate"),
                      rate("score"), peaks)


def projected_hours(figures: ArmFigures, arm: Any, cells: list[Any]) -> float:
    """GPU-hours of the real protocol's cells of `arm` at the measured rates (model loading
    counted once per cell: an upper bound, since a worker that reuses an arm's base loads
    it once and restores it for its later cells, timed as `reuse_base`, not `load`)."""
    mine = [c for c in cells if c.arm.name == arm.name]
    field = type(arm.make_method()).fit_steps_field
    steps = getattr(arm.config, field) if field else 0
    fit_s_per_step = 0.0 if math.isnan(figures.fit_s_per_step) else figures.fit_s_per_step
    images = sum(len(c.images) for c in mine)
    seconds = len(mine) * (figures.load_s + steps * fit_s_per_step) + images * (
        figures.generate_s_per_image + figures.score_s_per_image)
    return seconds / 3600


def format_table(figures: list[ArmFigures], real: Any, real_cells: list[Any]) -> str:
    lines = [f"### Rehearsal of `{real.name}` ({NOTE})", "",
             "| arm | load s | fit s/step | generate s/image | score s/image | peak GiB fit | peak GiB generate "
             "| peak GiB score | projected GPU-hours |",
             "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    total = 0.0
    for entry in figures:
        arm = real.arm(entry.arm)
        hours = projected_hours(entry, arm, real_cells)
        total += hours if not math.isnan(hours) else 0.0
        peaks = [entry.peak_gib.get(phase, math.nan) for phase in ("fit", "generate", "score")]
        lines.append(f"| {entry.arm} | {entry.load_s:.1f} | {entry.fit_s_per_step:.3f} | "
                     f"{entry.generate_s_per_image:.3f} | {entry.score_s_per_image:.4f} | "
                     + " | ".join(f"{p:.1f}" for p in peaks) + f" | {hours:.2f} |")
    lines += ["", f"Projected GPU-hours of all {len(real_cells)} cells of `{real.name}`: {total:.2f} "
              "(loading counted per cell, an upper bound; prior-preservation class images, shared per class, "
              "not included)."]
    return "\n".join(lines) + "\n"
