"""Projected GPU-hours of whole protocols, from the figures `varbench bench` measured.

For each arm of a protocol: fit = its optimizer steps (or iterations) at the measured
rate; generation = its images (prompts x images per prompt + PRES images) at the
measured seconds per image of its backbone at the arm's batch (`execution.batch_size`);
scoring = the images at the measured scoring throughput; summed over subjects. DreamBooth-LoRA and
IP-Adapter arms use the rows of the arm's model family (baselines.family_bench);
IP-Adapter trains nothing, so its fit is 0 (encoding a reference photo takes about a
second). Class images for prior preservation (DreamBooth, Custom Diffusion: generated
once per class and shared between them when their settings match, as the cache does) are
a separate row. Model loading is not included (it depends on the disk). Cells are
independent, so N GPUs divide the wall-clock time (while cells >= N).

The rates are the bench's default rows, each at one setting of compiling, while a protocol
worker decides `compile: auto` by how many cells of the arm it runs: DreamBooth-LoRA's rows
are settled as for a worker running a whole DreamBench arm
(`baselines.family_bench.WORKER_CELLS`), so a worker with fewer cells may run slower than
projected; the diffusion baselines' rows are uncompiled, so a worker that compiles them
runs faster. The one-time compile (minutes per worker) is not included.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("dreambench", "vico", "vico_live")
OPTIONAL_PROTOCOLS = ("vico_live",)  # projected where its file is installed, else left out
DIFFUSION = ("dreambooth", "custom_diffusion", "textual_inversion")


@dataclass
class Workload:
    subjects: int
    classes: int  # distinct class nouns (class-image pools)
    images_per_subject: int  # evaluation + PRES images


def workload(protocol: Any) -> Workload:
    """Cell count and sizes of a protocol, from its dataset's local copy (never downloads:
    a projection must not start a multi-GB fetch)."""
    from varbench.plan import dataset_of, plan_cells

    saved = os.environ.get("VARBENCH_OFFLINE")
    os.environ["VARBENCH_OFFLINE"] = "1"
    try:
        dataset = dataset_of(protocol)
    finally:
        if saved is None:
            del os.environ["VARBENCH_OFFLINE"]
        else:
            os.environ["VARBENCH_OFFLINE"] = saved
    cells = plan_cells(protocol, dataset, [protocol.arms[0].name])
    return Workload(subjects=len(cells), classes=len({c.subject.class_noun for c in cells}),
                    images_per_subject=round(sum(len(c.images) for c in cells) / len(cells)))


def load_bench(bench: Any = None) -> dict[str, Any] | None:
    """A bench.json of `varbench bench`: `bench`, else $VARBENCH_BENCH, else the one committed
    in the checkout's benchmarks/ (an H100's); None when there is none."""
    from pathlib import Path

    from varbench.errors import UserError
    from varbench.fileio import read_json_or_none

    committed = Path(__file__).resolve().parents[2] / "benchmarks" / "bench-h100.json"
    for candidate in (bench, os.environ.get("VARBENCH_BENCH"), committed):
        if candidate and Path(candidate).is_file():
            data = read_json_or_none(Path(candidate))
            if isinstance(data, dict) and isinstance(data.get("rows"), list):
                return data
            raise UserError("not a bench.json written by 'varbench bench'", str(Path(candidate).resolve()),
                            "Pass the bench.json from 'varbench bench --out DIR'.")
    return None


def planned_hours(cells: list[Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Projected GPU-hours per arm of planned `cells` (fit, generate, score), None where
    the bench does not measure the arm's method."""
    by_arm: dict[str, list[Any]] = {}
    for cell in cells:
        by_arm.setdefault(cell.arm.name, []).append(cell)
    hours = {}
    for name, arm_cells in by_arm.items():
        work = Workload(subjects=len(arm_cells), classes=len({c.subject.class_noun for c in arm_cells}),
                        images_per_subject=round(sum(len(c.images) for c in arm_cells) / len(arm_cells)))
        arm = arm_cells[0].arm
        # the bench measures the real sizes: a random-init stand-in or a toyworld model has no projection
        method = arm.make_method()
        not_real_size = method.uses_random_init() or method.toy_backbone() is not None
        hours[name] = None if not_real_size else arm_hours(arm, rows, work, arm.batch_size)
    return hours


def figure(rows: list[dict[str, Any]], name: str) -> float | None:
    for r in rows:
        if r["name"] == name:
            return r["value"]
    return None


def sampling_seconds(rows: list[dict[str, Any]], prefix: str, batch: int) -> float | None:
    """Seconds per image at the largest measured batch not above `batch`, with the default
    options (rows such as "sd15 sampling@4 (compiled)" measure an opt-in variant)."""
    pattern = re.compile(re.escape(prefix) + r"@(\d+)")
    matches = [(pattern.fullmatch(r["name"]), r["value"]) for r in rows]
    measured = sorted((int(match.group(1)), value) for match, value in matches if match)
    usable = [value for size, value in measured if size <= batch] or [value for _, value in measured[:1]]
    return usable[-1] if usable else None


def phase_rows(arm: Any) -> tuple[str, str]:
    """How the bench names an arm's fit row (step or iteration) and its sampling rows (a
    prefix of `@batch`): DreamBooth-LoRA and IP-Adapter per model family, the SD 1.5
    baselines' sampling under "sd15 sampling"."""
    method = arm.method_name
    if method == "arbooth":
        return "arbooth iteration", "infinity sampling"
    if method in ("dreambooth_lora", "ip_adapter"):
        family = arm.config.model_family().name
        return f"{method} {family} step", f"{method} {family} sampling"
    return f"{method} step", "sd15 sampling"


def arm_hours(arm: Any, rows: list[dict[str, Any]], work: Workload, batch: int) -> dict[str, float] | None:
    config, method = arm.config, arm.method_name
    fit_row, sampling_prefix = phase_rows(arm)
    if method == "arbooth":
        step_seconds, steps = figure(rows, fit_row), config.iterations
    elif method in DIFFUSION:
        rate, steps = figure(rows, fit_row), config.steps
        step_seconds = 1 / rate if rate else None
    elif method == "dreambooth_lora":
        rate = lora_step_rate(rows, config.model_family().name, config.gradient_checkpointing)
        # the row times one micro-batch per step (the default); accumulating k runs k of them
        steps = config.steps * config.grad_accumulation
        step_seconds = 1 / rate if rate else None
    elif method == "ip_adapter":
        step_seconds, steps = 0.0, 0  # tuning-free: the fit only encodes the reference photos
    else:
        return None
    image_seconds = sampling_seconds(rows, sampling_prefix, batch)
    scoring = figure(rows, "scoring")
    if step_seconds is None or image_seconds is None or scoring is None:
        return None
    images = work.subjects * work.images_per_subject
    return {"fit": work.subjects * steps * step_seconds / 3600, "generate": images * image_seconds / 3600,
            "score": images / scoring / 3600}


def lora_step_rate(rows: list[dict[str, Any]], family: str, checkpointing: bool) -> float | None:
    """DreamBooth-LoRA steps/s of `family` as the arm trains (with or without gradient
    checkpointing); the other measurement where only that one exists (e.g. the default ran
    out of memory on the benchmarked GPU, so it was measured with checkpointing only)."""
    plain, checkpointed = f"dreambooth_lora {family} step", f"dreambooth_lora {family} step (gradient checkpointing)"
    first, second = (checkpointed, plain) if checkpointing else (plain, checkpointed)
    found = figure(rows, first)
    return found if found is not None else figure(rows, second)


def class_image_hours(protocol: Any, rows: list[dict[str, Any]], work: Workload) -> float | None:
    """One pool per (class, settings); arms with equal settings share it (the cache key)."""
    seconds = sampling_seconds(rows, "sd15 sampling", 4)
    if seconds is None:
        return None
    pools = {(a.config.num_class_images, a.config.class_image_seed, a.config.resolution)
             for a in protocol.arms if getattr(a.config, "prior_preservation", False)}
    return sum(count for count, _, _ in pools) * work.classes * seconds / 3600


def project(rows: list[dict[str, Any]], gpus: int = 8) -> list[dict[str, Any]]:
    """Projected hours per (protocol, arm): fit, generate, score, total GPU-hours and
    wall-clock hours on `gpus` GPUs; `note` says why a row has no numbers."""
    from varbench.errors import UserError
    from varbench.protocol import available_protocols, load_protocol

    projected = []
    for name in PROTOCOLS:
        if name in OPTIONAL_PROTOCOLS and name not in available_protocols():
            continue
        protocol = load_protocol(name)
        try:
            work = workload(protocol)
        except UserError as err:
            projected.append({"protocol": name, "arm": "", "note": f"not projected: {err.line()}"})
            continue
        # each arm generates at its own batch (the protocol's execution.batch_size, or the arm's)
        batches = "/".join(str(b) for b in sorted({arm.batch_size for arm in protocol.arms}))
        size = f"{work.subjects} subjects x {work.images_per_subject} images, batch {batches}"
        for arm in protocol.arms:
            hours = arm_hours(arm, rows, work, arm.batch_size)
            entry = {"protocol": name, "size": size, "arm": arm.name, "note": "" if hours else "not measured"}
            if hours:
                total = sum(hours.values())
                entry.update(hours, total=total, wall=total / min(gpus, work.subjects))
            projected.append(entry)
        class_hours = class_image_hours(protocol, rows, work)
        if class_hours is not None:
            projected.append({"protocol": name, "size": size, "arm": "class images (shared)", "note": "",
                              "fit": class_hours, "total": class_hours})
    return projected


def cost_report(bench: dict[str, Any], gpus: int = 8) -> str:
    """The projection as Markdown, one table per protocol."""
    lines = [f"### Projected cost on {bench['device']} (hours; from `varbench bench`, {bench['note']})", ""]
    columns = ("fit", "generate", "score", "total", "wall")
    current = None
    for entry in project(bench["rows"], gpus):
        if entry["protocol"] != current:
            current = entry["protocol"]
            lines += ["", f"#### {current}" + (f": {entry['size']}" if "size" in entry else ""), ""]
            if not entry["arm"]:
                lines.append(entry["note"])
                continue
            lines += [f"| arm | fit | generation | scoring | GPU-hours | wall h on {gpus} GPUs |",
                      "| :--- | ---: | ---: | ---: | ---: | ---: |"]
        cells = [f"{entry[c]:.2f}" if c in entry else "" for c in columns]
        lines.append(f"| {entry['arm']} | " + (entry["note"] or " | ".join(cells)) + " |")
    lines += ["", "Model loading is not included. Wall-clock on N GPUs assumes cells spread evenly "
              "(the local and Slurm launchers hand out cells as workers free up)."]
    return "\n".join(lines) + "\n"
