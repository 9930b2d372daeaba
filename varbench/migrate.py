"""`varbench migrate`: convert a results root written in layout 1 to layout 2, in place.

Layout 1 (varbench before the run id / score id split) hashed the whole method config,
execution options included, and the whole `metrics:` section into the run id, and kept
each cell's `metrics.csv` beside its images. Layout 2 (varbench.store) hashes only what
determines fits and images into the run id and keeps scores per metric mode in
`cells/<subject>/scores/<score id>/`. Migrating recomputes nothing:

- the run folder is renamed to its layout-2 run id (run.json rewritten; the old identity
  kept as `run.layout1.json`), and the `run_id` column of its CSVs follows;
- each cell's metrics.csv, with the scoring rows of its timings.csv, moves to its score
  folder, and both the cell and the score folder are sealed again, unless the cell was
  already damaged (then it stays damaged, and `varbench run` repairs it);
- two layout-1 runs that differ only in execution options or metric mode become one run:
  cells and score folders the target lacks are moved in, and what is left of the other
  (images of the same cells) is kept under `<protocol>/.migrated/<old run id>/`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from varbench.errors import UserError
from varbench.fileio import write_json
from varbench.hashing import content_hash
from varbench.integrity import check_seal
from varbench.metrics.settings import MetricsConfig, score_id, score_identity
from varbench.schema import execution_fields
from varbench.store import STORE_LAYOUT, CellStore, RunStore, add_rows, find_runs, read_rows, write_rows

SCORING_PHASES = ("load_metrics", "score")


def migrate_results(root: Path) -> list[str]:
    """Migrate every layout-1 run under `root`; returns one line per run migrated."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("results folder not found", str(root), "Pass the folder 'varbench run' wrote (--results).")
    lines = []
    for run in find_runs(root):
        identity = run.identity()
        if identity and identity.get("layout") != STORE_LAYOUT:
            lines.append(migrate_run(run, identity))
    return lines


def migrate_run(run: RunStore, old: dict[str, Any]) -> str:
    new, metrics = layout2_identity(old, str(run.dir / "run.json"))
    run_id, sid = f"{old['arm']}-{content_hash(new, length=10)}", score_id(metrics)
    for cell_dir in sorted((run.dir / "cells").glob("*")):
        if cell_dir.is_dir() and not cell_dir.is_symlink():
            convert_cell(run.cell(cell_dir.name), run_id, sid)
    write_json(run.dir / "run.layout1.json", old)
    target = RunStore(run.root, run.protocol, run_id)
    if not target.dir.exists():
        os.replace(run.dir, target.dir)
    else:
        merge_into(run, target)
    write_json(target.dir / "run.json", new)
    target.write_score_identity(sid, score_identity(metrics))
    return f"{run.protocol}/{run.run_id} -> {run.protocol}/{run_id} (scores {sid})"


def layout2_identity(old: dict[str, Any], where: str) -> tuple[dict[str, Any], MetricsConfig]:
    """The layout-2 run identity of a layout-1 run.json, and its metrics section."""
    from varbench.registry import get_method

    config_class = get_method(str(old.get("method")), where).Config
    dropped = set(execution_fields(config_class).values())
    known = {f.name for f in dataclasses.fields(MetricsConfig)}
    metrics = MetricsConfig(**{k: v for k, v in (old.get("metrics") or {}).items() if k in known})
    new = {"layout": STORE_LAYOUT, **{key: old.get(key) for key in ("protocol", "protocol_version", "arm", "method",
                                                                     "method_version")},
           "config": {k: v for k, v in (old.get("config") or {}).items() if k not in dropped},
           "dataset": old.get("dataset"), "prompts": old.get("prompts"), "images_per_prompt": old.get("images_per_prompt"),
           "pres_images": metrics.pres_images, "seeds": old.get("seeds")}
    return new, metrics


def convert_cell(cell: CellStore, run_id: str, sid: str) -> None:
    """Move the cell's scores into their score folder, relabel its rows, seal it again."""
    status = cell.status()
    damaged = status.get("state") == "done" and bool(check_seal(cell.dir, status.get("files") or {}, hashes=False))
    folder = cell.score_dir(sid)
    timings = read_rows(cell.dir / "timings.csv")
    if (cell.dir / "metrics.csv").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(cell.dir / "metrics.csv", folder / "metrics.csv")
        add_rows(folder / "timings.csv", list(timings[0]) if timings else ["phase"],
                 [row for row in timings if row.get("phase") in SCORING_PHASES])
        timings = [row for row in timings if row.get("phase") not in SCORING_PHASES]
        if timings:
            write_rows(cell.dir / "timings.csv", list(timings[0]), timings)
    for path in (cell.dir / "images.csv", cell.dir / "timings.csv", folder / "metrics.csv", folder / "timings.csv"):
        relabel(path, run_id)
    if status.get("state") == "done" and not damaged:
        facts = {k: v for k, v in status.items() if k not in ("state", "files")}
        cell.set_status("done", **facts)
        if (folder / "metrics.csv").is_file():
            cell.set_step(sid, "done", **facts)


def relabel(path: Path, run_id: str) -> None:
    rows = read_rows(path)
    if rows and "run_id" in rows[0]:
        write_rows(path, list(rows[0]), [{**row, "run_id": run_id} for row in rows])


def merge_into(run: RunStore, target: RunStore) -> None:
    """Move into `target` the cells and score folders it lacks; keep the rest aside."""
    for cell_dir in sorted((run.dir / "cells").glob("*")):
        there = target.dir / "cells" / cell_dir.name
        if not there.exists():
            there.parent.mkdir(parents=True, exist_ok=True)
            os.replace(cell_dir, there)
            continue
        for score in sorted((cell_dir / "scores").glob("*")):
            if not (there / "scores" / score.name).exists():
                (there / "scores").mkdir(exist_ok=True)
                os.replace(score, there / "scores" / score.name)
    aside = run.root / run.protocol / ".migrated" / run.run_id
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run.dir), str(aside))
