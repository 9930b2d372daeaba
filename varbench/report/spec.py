"""The report spec: which tables, figures and sample grids to render from which protocols.

A spec is a YAML file in the checkout's `report/` folder (`paper.yaml` is the default,
`smoke.yaml` covers only the offline smoke protocol). It is a list of *sections*; each
section names one or more protocols (e.g. `[ablation_distill, ablation_distill_tiny]`)
and is rendered once for every one of them that has results, once per metric mode
(tables never mix modes). A protocol without results is skipped with a visible note.

    sections:
      - name: distill                  # file stem prefix of its tables and figures
        title: "Ablation: prior distillation"
        protocols: [ablation_distill, ablation_distill_tiny]
        row_header: "Distillation"
        arms:                          # rows in this order (default: every arm found)
          - {arm: distill-off, label: "none", parameter: 0.0}
          - {arm: distill-soft-l0.5, label: "soft, λ = 0.5"}
        parameter: {key: config.distill_weight, label: "distillation weight λ"}
        tables: [comparison]
        figures: [sweep]

Validated with `varbench.schema.from_dict`, so a typo is one clear error naming the key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from varbench.schema import from_dict
from varbench.errors import UserError, did_you_mean
from varbench.store import check_name

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = "paper"

MetricName = Literal["dino", "clip_i", "clip_t", "div", "pres"]
ColumnName = Literal["dino", "clip_i", "clip_t", "div", "pres", "copy", "fit_minutes", "fit_seconds",
                     "seconds_per_image", "trainable_parameters", "artifact_bytes",
                     "fit_peak_memory_bytes"]
TableKind = Literal["comparison", "split", "paired"]
FigureKind = Literal["sweep", "cost", "spread", "loss"]

MAIN_COLUMNS = ["dino", "clip_i", "clip_t", "div", "pres", "fit_minutes", "seconds_per_image",
                "trainable_parameters", "artifact_bytes"]


@dataclass
class ArmRow:
    arm: str  # the arm name in the protocol (run.json "arm")
    label: str | None = None  # row label in tables and plots (default: the arm name)
    parameter: float | None = None  # x value in sweep plots (overrides parameter.key)
    series: str | None = None  # sweep plots join rows of one series by a line (e.g. "soft", "hard")


@dataclass
class ParameterSpec:
    key: str | None = None  # key path into run.json, e.g. "config.distill_weight"
    label: str = "parameter"  # x-axis label of sweep plots
    log_scale: bool = False


@dataclass
class GridSpec:
    subjects: list[str] = field(default_factory=list)  # default: the first `max_subjects` with images
    max_subjects: int = 4
    prompts: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # prompt indices (columns)
    sample: int = 0  # which sample of each prompt
    references: int = 4  # reference photos shown in the first row
    thumbnail: int = 128  # tile size in pixels


@dataclass
class SectionSpec:
    name: str  # file stem prefix; unique within the spec
    protocols: list[str]  # each one with results is rendered on its own (never pooled)
    title: str = ""
    description: str = ""  # a paragraph under the title in index.html
    row_header: str = "Method"  # header of the label column ("Tuned layers", "Distillation")
    arms: list[ArmRow] = field(default_factory=list)  # rows in order; empty: every arm found
    other_arms: Literal["append", "omit"] = "append"  # arms found but not listed above
    parameter: ParameterSpec = field(default_factory=ParameterSpec)
    reference_arm: str | None = None  # paired tests compare every row with it (default: first row)
    tables: list[TableKind] = field(default_factory=lambda: ["comparison", "split", "paired"])
    # of "comparison"; DIV, PRES, copies and artifact size are added whenever the results have them
    columns: list[ColumnName] = field(default_factory=lambda: list(MAIN_COLUMNS))
    # "published" rows (varbench/report/published.yaml) of the same dataset and metric
    # mode under the measured ones in the comparison table
    published: bool = True
    metrics: list[MetricName] = field(default_factory=lambda: ["dino", "clip_i", "clip_t"])  # split/paired/plots
    figures: list[FigureKind] = field(default_factory=lambda: ["cost", "spread"])
    grids: GridSpec | None = None  # sample grids; none when absent


@dataclass
class StatisticsSpec:
    confidence: float = 0.95
    n_resamples: int = 10_000
    seed: int = 0


@dataclass
class ReportSpec:
    sections: list[SectionSpec]
    title: str = "varbench report"
    statistics: StatisticsSpec = field(default_factory=StatisticsSpec)


def spec_dirs() -> list[Path]:
    """Where spec names are looked up: $VARBENCH_REPORT_SPECS, the checkout, the package."""
    dirs = [Path(p) for p in os.environ.get("VARBENCH_REPORT_SPECS", "").split(os.pathsep) if p]
    dirs += [PACKAGE_DIR.parent / "report", PACKAGE_DIR / "_bundled" / "report"]
    return [d for d in dirs if d.is_dir()]


def available_specs() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in spec_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def find_spec(name_or_path: str | Path | None) -> Path:
    """A spec file from a path, a name ("smoke"), or None for the default ("paper")."""
    if name_or_path is None:
        name_or_path = DEFAULT_SPEC
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError("report spec not found", str(path), "Check the --spec path.")
        return path
    found = available_specs()
    if str(name_or_path) in found:
        return found[str(name_or_path)]
    raise UserError(f"unknown report spec {str(name_or_path)!r}", None,
                    "Pass a YAML path with --spec, or one of: " + (", ".join(found) or "(none found)")
                    + "." + did_you_mean(str(name_or_path), found))


def load_spec(name_or_path: str | Path | None = None) -> ReportSpec:
    path = find_spec(name_or_path)
    source = str(path)
    from varbench.protocol import load_yaml_file

    data = load_yaml_file(path)  # the protocol loader's budgets: a spec is a YAML file anyone may hand us
    spec = from_dict(ReportSpec, data, source)
    check_spec(spec, source)
    return spec


def check_spec(spec: ReportSpec, source: str) -> None:
    """Checks the types cannot express: names, uniqueness, ranges."""
    stats = spec.statistics
    if not 0 < stats.confidence < 1:
        raise UserError(f"statistics.confidence must be between 0 and 1, got {stats.confidence}", source)
    if stats.n_resamples < 100:
        raise UserError(f"statistics.n_resamples must be at least 100, got {stats.n_resamples}", source)
    if not spec.sections:
        raise UserError("the report spec has no sections", source, "Add at least one entry under 'sections:'.")
    seen: set[str] = set()
    for index, section in enumerate(spec.sections):
        where = f"{source}, sections[{index}]"
        check_name(section.name, "section", where)
        if section.name in seen:
            raise UserError(f"section name {section.name!r} used twice", where, "Give each section its own name.")
        seen.add(section.name)
        if not section.protocols:
            raise UserError("section names no protocols", where, "Add 'protocols: [name]'.")
        arms = [row.arm for row in section.arms]
        duplicates = sorted({arm for arm in arms if arms.count(arm) > 1})
        if duplicates:
            raise UserError(f"arm {duplicates[0]!r} listed twice", where, "List each arm once.")
        if section.grids is not None:
            _check_grid(section.grids, where)


def _check_grid(grid: GridSpec, where: str) -> None:
    for key in ("max_subjects", "thumbnail"):
        if getattr(grid, key) < 1:
            raise UserError(f"grids.{key} must be at least 1, got {getattr(grid, key)}", where)
    if grid.references < 0 or grid.sample < 0 or any(index < 0 for index in grid.prompts):
        raise UserError("grids.references, grids.sample and grids.prompts must not be negative", where)
    if not grid.prompts:
        raise UserError("grids.prompts is empty", where, "List at least one prompt index, e.g. [0, 1, 2].")
