"""Preflight: everything a run needs, found or missing, before any work (`varbench check`,
and the start of every `varbench run` that has cells to run).

One row per requirement: the dataset (its files checked against the shipped manifest),
every arm's weights (config path, environment variable, hub cache), the metric
encoders' weights, free disk for the images, and on a GPU each arm's projected peak
memory (from a `varbench bench` bench.json) against the card. Nothing is downloaded and
the network is never waited on: the hub's reachability is one connection attempt with a
short timeout, made only when something is missing.
"""
from __future__ import annotations

import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varbench.cell import Cell
from varbench.data import DRAWN_DATASETS
from varbench.errors import UserError
from varbench.protocol import Protocol

HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 3.0
PNG_BYTES_PER_PIXEL = 1.6  # measured on generated 512-1024 px PNGs (3 bytes raw, ~55% after zlib)


@dataclass(frozen=True)
class Requirement:
    item: str
    looked: str  # where it looked
    found: bool
    how: str = ""  # how to get it: an exact command or the variable to set ("" when found)
    note: str = ""  # found, with a remark (sizes, memory)


def preflight(protocol: Protocol, arms: list[Any], cells: list[Cell] | None, results: Path,
              data_root: str | None, bench: Path | None = None) -> list[Requirement]:
    """Every requirement of running `arms` on `cells` (see the module docstring); `cells`
    None: the dataset is not here, so the images' disk space is not projected."""
    rows = [dataset_requirement(protocol, data_root)]
    for arm in arms:
        rows += weight_requirements(arm.name, arm.make_method().weights_needed())
    rows += metric_requirements(protocol)
    if cells is not None:
        rows.append(disk_requirement(results, cells))
    rows += gpu_requirements(arms, bench)
    if any(not row.found for row in rows):
        rows.append(hub_requirement())
    return rows


# --- the items --------------------------------------------------------------------------
def dataset_requirement(protocol: Protocol, data_root: str | None) -> Requirement:
    name, root = protocol.spec.data.dataset, data_root or protocol.spec.data.root
    item = f"dataset {name}"
    try:
        if name in DRAWN_DATASETS:
            if root is None:
                return Requirement(item, "drawn on first use into the varbench cache", True)
            from varbench.data import open_dataset

            open_dataset(name, root)  # a given copy must match the shipped manifest
            return Requirement(item, str(Path(root).resolve()), True)
        if name == "folder":
            from varbench.data.folder import folder_dataset

            folder_dataset(root)
            return Requirement(item, str(Path(root or "").resolve()), True)
        from varbench.data.fetch import open_checked

        folder, _, absent = open_checked(name, root, fetch_missing=False)
    except UserError as err:
        return Requirement(item, str(err.where or ""), False, _dataset_fix(name))
    note = f"{len(absent)} subject(s) absent: {', '.join(absent)}" if absent else ""
    return Requirement(item, str(folder), True, note=note)


def _dataset_fix(name: str) -> str:
    if name == "folder":
        return "Pass your subjects' folder with --data-root (README 'Your own subjects')."
    if name in DRAWN_DATASETS:
        return "Leave out --data-root (varbench draws its own copy), or point it at an unchanged copy."
    return f"varbench data fetch {name}  (or --data-root DIR for a local copy)"


def weight_requirements(owner: str, needs: list[tuple[str, Any, Any]]) -> list[Requirement]:
    from varbench.weights import WeightFile, locate

    rows = []
    for label, need, local in needs:
        path, looked = locate(need, local)
        found = path is not None
        note = ""
        if found and isinstance(need, WeightFile) and need.size is not None and path.stat().st_size != need.size:
            found, note = False, f"{path.stat().st_size:,} bytes, expected {need.size:,}"
        how = "" if found else need.download_command() + (
            f"  (or set {need.env_var} to its folder)" if getattr(need, "env_var", None) else "")
        rows.append(Requirement(f"{owner}: {label}", str(path) if found else looked, found, how, note))
    return rows


def metric_requirements(protocol: Protocol) -> list[Requirement]:
    metrics = protocol.spec.metrics
    if metrics.backbones != "real":
        return [Requirement("metric encoders", f"backbones: {metrics.backbones} (random-init)", True)]
    from varbench.metrics.encoder_weights import CLIP_FILE, DINO_FILES
    from varbench.metrics.modes import mode_spec

    needs = [(f"DINO ViT-S/{mode_spec(metrics.mode).dino_patch}", DINO_FILES[mode_spec(metrics.mode).dino_patch],
              None), ("CLIP ViT-B/32", CLIP_FILE, None)]
    rows = weight_requirements("metrics", needs)
    if metrics.div:
        from varbench.metrics.diversity import ALEXNET_URL, alexnet_weights_path

        path = alexnet_weights_path()
        how = f"curl -L {ALEXNET_URL} -o {path}  (or set VARBENCH_ALEXNET_WEIGHTS)"
        rows.append(Requirement("metrics: LPIPS AlexNet (DIV)", str(path), path.is_file(),
                                "" if path.is_file() else how))
    return rows


def disk_requirement(results: Path, cells: list[Cell]) -> Requirement:
    """Free space where results go against the images to be written (artifacts vary by
    method and are deleted per cell unless keep_artifacts; not counted)."""
    folder = Path(results).resolve()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    needed = sum(len(cell.images) * _resolution(cell) ** 2 * PNG_BYTES_PER_PIXEL for cell in cells)
    found = free > needed
    note = f"{free / 1e9:,.1f} GB free, images need ~{needed / 1e9:,.1f} GB (artifacts not counted)"
    return Requirement("free disk", str(folder), found, "" if found else "Free space or pass --results on "
                       "a larger disk.", note)


def _resolution(cell: Cell) -> int:
    return int(getattr(cell.arm.config, "resolution", 512) or 512)


def gpu_requirements(arms: list[Any], bench: Path | None) -> list[Requirement]:
    """On a GPU: each arm's peak memory measured by `varbench bench` against the card."""
    import torch

    if not torch.cuda.is_available():
        return []
    card = torch.cuda.get_device_properties(0)
    total = card.total_memory / 2**30
    from varbench.bench.cost import load_bench

    measured = load_bench(bench)
    if measured is None:
        return [Requirement("GPU memory", card.name, True, note="not projected: no bench.json (run "
                            "'varbench bench' or pass --bench)")]
    out = []
    for arm in arms:
        peak = arm_peak_gib(arm, measured["rows"])
        if peak is None:
            out.append(Requirement(f"{arm.name}: GPU memory", card.name, True, note="not measured"))
            continue
        fits = peak <= total
        out.append(Requirement(f"{arm.name}: GPU memory", card.name, fits,
                               "" if fits else "Lower the batch sizes or checkpoint more blocks (execution options).",
                               f"peak {peak:.1f} GiB of {total:.1f} GiB (measured on {measured.get('device', '?')})"))
    return out


def arm_peak_gib(arm: Any, rows: list[dict[str, Any]]) -> float | None:
    """The largest measured peak of an arm's phases: its fit step and its sampling."""
    from varbench.bench.cost import phase_rows

    names = phase_rows(arm)
    peaks = [r.get("peak_memory_gib") for r in rows if any(r.get("name", "").startswith(n) for n in names)]
    peaks = [p for p in peaks if p]
    return max(peaks) if peaks else None


def hub_requirement() -> Requirement:
    """One connection attempt to the hub, bounded by a thread join (DNS lookups ignore
    socket timeouts): what is missing can be downloaded from here, or not."""
    from varbench.weights import offline

    if offline():
        return Requirement("Hugging Face hub", "HF_HUB_OFFLINE / VARBENCH_OFFLINE", False,
                           "Downloads are off: unset HF_HUB_OFFLINE and VARBENCH_OFFLINE, or copy the files in.")
    reached: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection(HUB_HOST, timeout=HUB_TIMEOUT_S).close()
            reached.append(True)
        except OSError:
            reached.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S)
    ok = bool(reached and reached[0])
    return Requirement("Hugging Face hub", f"{HUB_HOST[0]}:{HUB_HOST[1]}", ok,
                       "" if ok else "Unreachable from here: download on a machine with network and copy the "
                       "hub cache (HF_HOME) or the files over.")


# --- output -----------------------------------------------------------------------------
def print_requirements(rows: list[Requirement]) -> None:
    """The table, then each missing item's fix on a line of its own (commands stay whole,
    to be copied)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    rows = merged(rows)
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    table = Table("item", "where it looked", "status", title="preflight")
    for row in rows:
        status = "[green]found[/]" if row.found else "[red]missing[/]"
        table.add_row(escape(row.item), escape(row.looked), status + escape(f" ({row.note})" if row.note else ""))
    console.print(table)
    fixes = [row for row in rows if row.how]
    if fixes:
        console.print("how to get what is missing:")
    for row in fixes:
        console.print(f"  {escape(row.item)}:\n    {escape(row.how)}", soft_wrap=True, highlight=False)


def merged(rows: list[Requirement]) -> list[Requirement]:
    """One row per distinct file or folder: arms sharing a base model are listed together."""
    out: dict[tuple[str, str, bool], Requirement] = {}
    for row in rows:
        owner, _, label = row.item.partition(": ")
        key = (label or row.item, row.looked, row.found)
        if key in out and label:
            first = out[key]
            owners = first.item.partition(": ")[0]
            out[key] = Requirement(f"{owners}, {owner}: {label}", first.looked, first.found, first.how, first.note)
        else:
            out[key] = row
    return list(out.values())


def missing(rows: list[Requirement]) -> list[Requirement]:
    return [row for row in rows if not row.found]
