"""Synthetic results roots for testing the report without running any model.

`write_synthetic_run` writes one run exactly as the runner lays it out (varbench.store:
run.json, scores/<score id>.json, manifest.json, and per cell status.json, cell.json,
images.csv + PNGs, timings.csv, losses.csv, scores/<score id>/metrics.csv), with metric
values chosen by the caller, so
tests know the right answer of every table entry. The numbers come from no model: the
manifest marks such runs random-init by default, and every report of them says so.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from varbench.fileio import write_png
from varbench.hashing import content_hash
from varbench.metrics.settings import MetricsConfig, random_init_backbones, score_id, score_identity
from varbench.store import IMAGE_COLUMNS, METRIC_COLUMNS, STORE_LAYOUT, TIMING_COLUMNS, RunStore, write_rows

PER_IMAGE_METRICS = ("dino", "clip_i", "clip_t")
TEMPLATES = ("a {} in the jungle", "a {} on the beach", "a {} in the snow", "a {} on a wooden table")


@dataclass
class SyntheticSubject:
    name: str
    class_noun: str
    live: bool
    offset: float = 0.0  # added to every metric value of this subject


@dataclass
class SyntheticArm:
    arm: str
    method: str
    # metric -> value of every row (plus the subject's offset); "copy": the share of each
    # subject's images flagged as near-copies (the first ones get 1, the rest 0)
    quality: dict[str, float]
    fit_seconds: float = 60.0
    seconds_per_image: float = 1.0
    trainable_parameters: int = 1000
    artifact_bytes: int = 4000
    config: dict[str, Any] = field(default_factory=dict)
    # subject -> "failed" | "running" | "pending" | "absent" (no cell folder); default done
    states: dict[str, str] = field(default_factory=dict)
    method_version: str = "1"


def write_synthetic_run(root: Path, protocol: str, arm: SyntheticArm, subjects: list[SyntheticSubject], *,
                        mode: str = "canonical", prompts: int = 2, samples: int = 2, random_init: bool = True,
                        device: str = "cpu", dataset: str = "smoke", protocol_version: int = 1,
                        backbones: str | None = None) -> RunStore:
    identity = {"layout": STORE_LAYOUT, "protocol": protocol, "protocol_version": protocol_version, "arm": arm.arm,
                "method": arm.method, "method_version": arm.method_version, "config": arm.config, "dataset": dataset,
                "prompts": {"source": "custom", "limit": prompts}, "images_per_prompt": samples,
                "pres_images": samples if "pres" in arm.quality else 0, "seeds": {"base": 0, "scheme": "derived"}}
    backbones = backbones or ("tiny" if random_init else "real")
    metrics = MetricsConfig(mode=mode, backbones=backbones)  # type: ignore[arg-type]
    run = RunStore(Path(root), protocol, f"{arm.arm}-{content_hash(identity, length=10)}")
    run.write_identity(identity)
    run.write_score_identity(score_id(metrics), score_identity(metrics))
    session = f"20260101T000000-{run.run_id[-6:]}"
    run.add_session({"session": session, "started": "2026-01-01T00:00:00+00:00",
                     "finished": "2026-01-01T01:00:00+00:00", "git_sha": "0123456789abcdef0123", "git_dirty": False,
                     "varbench_version": "0.1.0", "python": "3.12.0", "packages": {"torch": "2.11.0"},
                     "device": device, "host": "synthetic-host", "launcher": "inprocess",
                     "random_init_method": random_init,
                     "random_init_metrics": random_init_backbones(backbones),
                     "dtype": "fp32" if device == "cpu" else "bf16"})
    for subject in subjects:
        state = arm.states.get(subject.name, "done")
        if state != "absent":
            _write_cell(run, arm, subject, state, score_id(metrics), mode, prompts, samples, session, device)
    return run


def _write_cell(run: RunStore, arm: SyntheticArm, subject: SyntheticSubject, state: str, score: str, mode: str,
                prompts: int, samples: int, session: str, device: str) -> None:
    cell = run.cell(subject.name)
    error = "RuntimeError: synthetic failure" if state == "failed" else None
    facts = {"error": error, "started": "2026-01-01T00:00:00+00:00", "finished": None, "device": device,
             "host": "synthetic-host", "pid": 1, "session": session}
    cell.set_status("running" if state == "done" else state, **facts)
    if state == "pending":
        return
    cell.update_facts(subject=subject.name, class_noun=subject.class_noun, live=subject.live, fit_seed=1,
                      trainable_parameters=arm.trainable_parameters, artifact_bytes=arm.artifact_bytes,
                      device=device)
    images, metrics = [], []
    phrase = f"sks {subject.class_noun}"
    copied = round(arm.quality.get("copy", 0.0) * prompts * samples)
    for prompt_index in range(prompts):
        template = TEMPLATES[prompt_index % len(TEMPLATES)]
        for sample_index in range(samples):
            path = f"images/p{prompt_index:03d}_s{sample_index:02d}.png"
            write_png(cell.dir / path, synthetic_image(arm.arm, subject.name, prompt_index, sample_index))
            images.append({"run_id": run.run_id, "subject": subject.name, "kind": "eval",
                           "prompt_index": prompt_index, "sample_index": sample_index, "seed": sample_index,
                           "prompt": template.format(phrase), "clip_text": template.format(subject.class_noun),
                           "template": template, "path": path})
            metrics += [_metric_row(run, subject, "eval", prompt_index, sample_index, path, name, mode,
                                    arm.quality[name]) for name in PER_IMAGE_METRICS if name in arm.quality]
            if "copy" in arm.quality:  # 0/1, never offset by the subject
                flag = float(len(images) <= copied)
                metrics.append({**_metric_row(run, subject, "eval", prompt_index, sample_index, path, "copy",
                                              mode, 0.0), "value": flag})
        if "div" in arm.quality:
            metrics.append(_metric_row(run, subject, "eval", prompt_index, -1, "", "div", mode, arm.quality["div"]))
    for sample_index in range(samples if "pres" in arm.quality else 0):
        path = f"pres/s{sample_index:02d}.png"
        metrics.append(_metric_row(run, subject, "pres", -1, sample_index, path, "pres", mode, arm.quality["pres"]))
    cell.replace_rows("images", IMAGE_COLUMNS, images)
    timings = _timing_rows(run, arm, subject, prompts * samples, session, device)
    cell.replace_rows("timings", TIMING_COLUMNS, timings[:-1])
    losses = [{"step": step, "loss": round(2.0 / step, 6)} for step in range(1, 11)]
    cell.replace_rows("losses", ["step", "loss"], losses)
    if state == "done":  # sealed as the runner seals: generation, then the scores of one mode
        cell.set_status("done", **facts)
        write_rows(cell.score_dir(score) / "metrics.csv", METRIC_COLUMNS, metrics)
        write_rows(cell.score_dir(score) / "timings.csv", TIMING_COLUMNS, timings[-1:])
        cell.set_step(score, "done", **facts)


def _metric_row(run: RunStore, subject: SyntheticSubject, kind: str, prompt_index: int, sample_index: int,
                image: str, metric: str, mode: str, value: float) -> dict[str, Any]:
    return {"run_id": run.run_id, "subject": subject.name, "kind": kind, "prompt_index": prompt_index,
            "sample_index": sample_index, "image": image, "metric": metric, "mode": mode,
            "value": round(value + subject.offset, 9)}


def _timing_rows(run: RunStore, arm: SyntheticArm, subject: SyntheticSubject, images: int, session: str,
                 device: str) -> list[dict[str, Any]]:
    """load, fit, a warm-up batch (slower, excluded), then the timed batches, then scoring."""
    def row(phase: str, seconds: float, items: int) -> dict[str, Any]:
        return {"run_id": run.run_id, "subject": subject.name, "phase": phase, "seconds": seconds, "items": items,
                "seconds_per_item": seconds / items if items else "", "peak_memory_bytes": 1000,
                "device": device, "warmup": phase.endswith("_warmup"), "session": session}

    timed = max(images - 1, 1)
    return [row("load", 5.0, 0), row("fit", arm.fit_seconds, 10),
            row("generate_warmup", 10 * arm.seconds_per_image, 1),
            row("generate", arm.seconds_per_image * timed, timed), row("score", 0.5, images)]


def synthetic_image(*parts: object, size: int = 48) -> Image.Image:
    """A deterministic, visibly non-blank picture (two colours and a disc) from `parts`."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    background, foreground = tuple(digest[0:3]), tuple(255 - b for b in digest[0:3])
    image = Image.new("RGB", (size, size), background)
    x, y, radius = digest[3] % (size // 2) + size // 4, digest[4] % (size // 2) + size // 4, size // 5
    ImageDraw.Draw(image).ellipse((x - radius, y - radius, x + radius, y + radius), fill=foreground)
    return image
