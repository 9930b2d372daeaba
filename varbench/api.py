"""The Python API, for notebooks and other harnesses; the CLI's `run` and `score` are thin
layers over the same code.

    import varbench
    scores = varbench.score_images("my_images", dataset="dreambench", backbones="tiny")
    scores.rows      # one row per (image, metric): subject, prompt_index, metric, value, ...
    scores.summary   # per metric: mean over subjects with a 95% bootstrap CI (all/live/object)

A user error raises `varbench.errors.UserError` (what, where, fix), as the CLI prints it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pandas as pd

    from varbench.cell import Cell


class Scores(NamedTuple):
    rows: pd.DataFrame  # the store's metric rows (METRIC_COLUMNS) plus `live`, done cells only
    summary: pd.DataFrame  # varbench.metrics.stats.summarize: run_id, metric, mode, group, mean, ci_low, ...


def score_images(images: str | Path, dataset: str = "dreambench", *, manifest: str | Path | None = None,
                 identifier: str | None = None, mode: str = "canonical", backbones: str = "real",
                 name: str = "external", results: str | Path = "results", data_root: str | None = None,
                 protocol: str | None = None, device: str = "auto", div: bool = True,
                 extra: list[str] | None = None, execution: dict[str, Any] | None = None) -> Scores:
    """Score images made anywhere (varbench.score: layouts, manifests, what is checked)."""
    from varbench.score import ScoreRequest, score_external

    request = ScoreRequest(images=Path(images), dataset=dataset, data_root=data_root,
                           manifest=Path(manifest) if manifest else None, identifier=identifier, mode=mode,
                           backbones=backbones, name=name, results=Path(results), protocol=protocol,
                           device=device, div=div, extra=list(extra or []), execution=dict(execution or {}))
    return results_of(Path(results), score_external(request))


def run_protocol(protocol: str | Path, *, results: str | Path = "results", device: str = "auto",
                 methods: list[str] | None = None, subjects: list[str] | None = None,
                 data_root: str | None = None, overrides: list[str] | None = None,
                 random_weights: bool = False, retry_failed: bool = False) -> Scores:
    """Run a protocol (name or YAML path) like `varbench run`, and return its scores."""
    from varbench.plan import RunOptions, prepare
    from varbench.runner import run_protocol as run

    options = RunOptions(results=Path(results), device=device, methods=methods, subjects=subjects,
                         data_root=data_root, overrides=list(overrides or []), random_weights=random_weights,
                         retry_failed=retry_failed)
    run(str(protocol), options)
    return results_of(Path(results), prepare(str(protocol), options)[1])


def results_of(root: Path, cells: list[Cell]) -> Scores:
    """The metric rows of `cells` that are done, and their summary over subjects."""
    import pandas as pd

    from varbench.metrics.stats import subject_means, summarize
    from varbench.plan import cell_store
    from varbench.store import METRIC_COLUMNS

    parts = []
    for cell in cells:
        store = cell_store(root, cell)
        if store.state(cell.arm.score_id).state == "done":
            frame = pd.read_csv(store.score_dir(cell.arm.score_id) / "metrics.csv")
            parts.append(frame.assign(live=cell.subject.live))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*METRIC_COLUMNS, "live"])
    return Scores(rows, summarize(subject_means(rows)))
