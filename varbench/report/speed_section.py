"""The report's "Speed and cost" section, from `varbench bench` output.

When the results root holds `bench/bench.json` (`varbench bench --out <results>/bench`),
the report shows every speed figure against its FLOP floor and target, and the
projected GPU-hours of the `dreambench` and `vico` protocols per arm (varbench.bench.cost).
The figures come from random-init weights (timing does not depend on weight values),
which the caption says.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from varbench.fileio import read_json_or_none
from varbench.report.html import Unit
from varbench.report.table_model import Column, Entry, Table

BENCH_FILE = Path("bench") / "bench.json"


def _number(value: float | None, spec: str = ".3g") -> Entry:
    return Entry("" if value is None else format(value, spec), value=value)


def speed_table(bench: dict[str, Any]) -> Table:
    columns = [Column("name", "Benchmark", align="left"), Column("value", "Measured"), Column("unit", "Unit", align="left"),
               Column("floor", "FLOP floor"), Column("fraction", "Of floor"), Column("memory", "Peak GiB"),
               Column("target", "Target"), Column("met", "Met", align="left")]
    table = Table("speed", "Speed against the FLOP floor",
                  f"{bench['device']}; {bench['note']}. Floor: the counted FLOPs of one unit of work at the "
                  "measured bf16 matmul rate of the same GPU (a time's lower bound, a rate's ceiling).", columns)
    for r in bench["rows"]:
        met = {True: "yes", False: "no", None: ""}[r["meets_target"]]
        table.rows.append([Entry(r["name"]), _number(r["value"], ".4g"), Entry(r["unit"]), _number(r["floor"]),
                           _number(r["fraction_of_floor"], ".0%"), _number(r["peak_memory_gib"], ".1f"),
                           _number(r["target"]), Entry(met)])
        table.records.append({k: r[k] for k in ("component", "name", "value", "unit", "flops", "floor",
                                                "fraction_of_floor", "peak_memory_gib", "target", "meets_target")})
    return table


def cost_table(bench: dict[str, Any], gpus: int) -> Table:
    from varbench.bench.cost import project

    columns = [Column("protocol", "Protocol", align="left"), Column("arm", "Arm", align="left"),
               Column("fit", "Fit h"), Column("generate", "Generation h"), Column("score", "Scoring h"),
               Column("total", "GPU-hours", better="lower"), Column("wall", f"Wall h on {gpus} GPUs"),
               Column("note", "Note", align="left")]
    table = Table("cost", "Projected cost of whole protocols",
                  f"From the speed figures above ({bench['device']}); model loading excluded; wall-clock "
                  f"assumes cells spread evenly over {gpus} GPUs.", columns)
    for entry in project(bench["rows"], gpus):
        table.rows.append([Entry(entry["protocol"]), Entry(entry["arm"])]
                          + [_number(entry.get(key), ".2f") for key in ("fit", "generate", "score", "total", "wall")]
                          + [Entry(entry["note"])])
        table.records.append(entry)
    return table


def _readable(bench: Any) -> bool:
    rows = bench.get("rows") if isinstance(bench, dict) else None
    return (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
            and isinstance(bench.get("device"), str) and isinstance(bench.get("note"), str))


def speed_unit(results: Path, gpus: int = 8) -> Unit | None:
    """The section, or None when the results root has no benchmark output."""
    path = Path(results) / BENCH_FILE
    bench = read_json_or_none(path)
    if bench is None and not path.exists():
        return None
    if not _readable(bench):  # a damaged bench.json costs the speed section, not the report
        warnings.warn(f"unreadable benchmark results, speed section left out: {path}", stacklevel=2)
        return None
    return Unit(anchor="speed", title="Speed and cost",
                description="Full-size speed of every method and metric on one GPU (varbench bench), and what "
                            "the protocols cost at those speeds.",
                tables=[speed_table(bench), cost_table(bench, gpus)])
