"""Published results with their sources, shown beside the measured ones.

`varbench/report/published.yaml` lists numbers quoted from papers (the DreamBooth
paper's Table 1 on DreamBench, canonical metrics). A comparison table shows the entries
whose dataset and metric mode equal its own, as visibly separate "published" rows that
take part in no statistic. An entry of kind "real" (real images against real images of
the same subject) is the dataset's ceiling: a method whose mean DINO exceeds it is more
similar to the references than they are to each other, which hints at copying.

The file is validated on load: a malformed entry is one `UserError` naming the file and
the entry (`entries[2] (DreamBooth (SD))`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from varbench.errors import UserError
from varbench.metrics.settings import MODES
from varbench.schema import from_dict

PUBLISHED_FILE = Path(__file__).resolve().parent / "published.yaml"
PUBLISHED_METRICS = ("dino", "clip_i", "clip_t", "div", "pres")
ARXIV_ID = r"\d{4}\.\d{4,5}"


@dataclass
class Source:
    cite: str  # "Ruiz et al. 2023": shown in the row label
    table: str  # "Table 1"
    title: str = ""
    arxiv: str = field(default="", metadata={"pattern": rf"({ARXIV_ID})?"})


@dataclass
class PublishedEntry:
    dataset: str = field(metadata={"pattern": r"[A-Za-z0-9_.+-]+"})
    mode: str
    method: str  # row label
    source: Source
    metrics: dict[str, float]
    kind: Literal["method", "real"] = "method"  # real: real-vs-real, the dataset's ceiling
    notes: str = ""

    @property
    def label(self) -> str:
        """The row label: "published: DreamBooth (SD), Ruiz et al. 2023, Table 1"."""
        return f"published: {self.method}, {self.source.cite}, {self.source.table}"


def load_published(path: Path = PUBLISHED_FILE) -> list[PublishedEntry]:
    """Every entry of a published-results file, validated."""
    return list(_load(Path(path).resolve()))


@lru_cache(maxsize=4)
def _load(path: Path) -> tuple[PublishedEntry, ...]:
    from varbench.protocol import load_yaml_file  # the protocol loader's budgets and one-line errors

    source = str(path)
    if not path.is_file():
        raise UserError("published results file not found", source, "Restore it from the varbench checkout.")
    data = load_yaml_file(path)
    items = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(items, list) or set(data) != {"entries"}:
        raise UserError("a published results file holds one key, 'entries:', a list", source,
                        "See the comment at the top of varbench/report/published.yaml.")
    entries = [_entry(item, source, index) for index, item in enumerate(items)]
    _check_one_ceiling(entries, source)
    return tuple(entries)


def _entry(item: object, source: str, index: int) -> PublishedEntry:
    method = item.get("method") if isinstance(item, dict) else None
    named = f"{source}, entry {method!r}" if isinstance(method, str) else source
    entry = from_dict(PublishedEntry, item, named, f"entries[{index}]")
    where = f"{source}, entries[{index}] ({entry.method})"
    if entry.mode not in MODES:
        raise UserError(f"unknown metric mode {entry.mode!r}", where, f"Use one of: {', '.join(MODES)}.")
    if not entry.metrics:
        raise UserError("entry gives no metric values", where, "Add 'metrics: {dino: ..., clip_i: ...}'.")
    for name, value in entry.metrics.items():
        if name not in PUBLISHED_METRICS:
            raise UserError(f"unknown metric {name!r}", where, f"Use any of: {', '.join(PUBLISHED_METRICS)}.")
        top = 100.0 if entry.mode in ("kosmosg", "dreambench++") else 1.0  # the x100 modes
        if not (math.isfinite(value) and -top <= value <= top):
            raise UserError(f"metrics.{name} = {value} is outside [-{top:g}, {top:g}] for mode {entry.mode}",
                            where, "Check the scale the source used.")
    return entry


def _check_one_ceiling(entries: list[PublishedEntry], source: str) -> None:
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if entry.kind == "real":
            key = (entry.dataset, entry.mode)
            if key in seen:
                raise UserError(f"two real-vs-real entries for dataset {key[0]}, mode {key[1]}", source,
                                "Keep one: it is the dataset's ceiling.")
            seen.add(key)


def published_for(dataset: str, mode: str, path: Path = PUBLISHED_FILE) -> list[PublishedEntry]:
    """The entries of one dataset in one metric mode, in file order."""
    return [e for e in load_published(path) if e.dataset == dataset and e.mode == mode]


def real_vs_real(dataset: str, mode: str, metric: str = "dino", path: Path = PUBLISHED_FILE) -> float | None:
    """The published real-vs-real value of a dataset and mode (the "ceiling"), or None."""
    for entry in published_for(dataset, mode, path):
        if entry.kind == "real" and metric in entry.metrics:
            return entry.metrics[metric]
    return None
