"""Calibration: real-vs-real DINO and CLIP-I, to confirm an install in one command.

Within each subject, every pair of distinct reference photos is compared; the subject
value is the mean cosine over those pairs, the summary the mean over subjects. On
DreamBench with the published encoders the DreamBooth paper reports DINO 0.774 and
CLIP-I 0.885 for real images (Table 1, "Real Images"); values near those say the weights
and the preprocessing are the canonical ones. The mode's preprocessing and scale apply
(x100 modes show the published numbers x100); pairs are always all distinct pairs, as
the calibration is about encoders and pixels, not about a mode's pairing rule.

With tiny (random-init) backbones the numbers are meaningless, and the table says so.
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from varbench.data import Dataset, open_dataset
from varbench.devices import resolve_device
from varbench.errors import UserError
from varbench.metrics.settings import MetricsConfig
from varbench.metrics.modes import mode_spec
from varbench.metrics.scoring import Scorer
from varbench.metrics.similarity import mean_offdiagonal_cosine

PUBLISHED_REAL_IMAGES = {"dino": 0.774, "clip_i": 0.885}  # DreamBooth paper, Table 1
RANDOM_INIT_NOTE = ("random-init backbones: these values are meaningless; they check the "
                    "pipeline, not the install")
COLUMNS = ["subject", "class_noun", "live", "images", "pairs", "dino", "clip_i", "mode", "backbones"]


def calibrate(dataset: Dataset, config: MetricsConfig, device: torch.device | str,
              scorer: Scorer | None = None) -> pd.DataFrame:
    """Per-subject real-vs-real DINO and CLIP-I (mean over pairs of distinct images).

    One row per subject (COLUMNS); a subject with fewer than two images has NaN values.
    `frame.attrs["random_init"]` is True when the values come from random-init encoders.
    """
    scorer = scorer or Scorer(dataclasses.replace(config, div=False), device)
    scale = scorer.mode.scale
    rows = []
    for subject in dataset.subjects:
        count = len(subject.image_paths)
        dino = clip_i = float("nan")
        if count >= 2:
            embedded = scorer.reference_embeddings(subject)
            dino = float(mean_offdiagonal_cosine(embedded.dino)) * scale
            clip_i = float(mean_offdiagonal_cosine(embedded.clip)) * scale
        rows.append({"subject": subject.name, "class_noun": subject.class_noun, "live": subject.live,
                     "images": count, "pairs": count * (count - 1) // 2, "dino": dino, "clip_i": clip_i,
                     "mode": config.mode, "backbones": config.backbones})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["random_init"] = scorer.random_init
    frame.attrs["dataset"] = dataset.name
    return frame


def calibration_table(frame: pd.DataFrame) -> Table:
    """Subject means (all / live / object) beside the published real-image numbers."""
    mode = mode_spec(str(frame["mode"].iloc[0])) if len(frame) else mode_spec("canonical")
    digits = 1 if mode.scale == 100 else 3
    caption = f"{mode.label}; backbones: {frame['backbones'].iloc[0] if len(frame) else '?'}"
    if frame.attrs.get("random_init", False):
        caption += f"; {RANDOM_INIT_NOTE}"
    title = f"Real-vs-real calibration ({frame.attrs.get('dataset', 'dataset')})"
    if frame.attrs.get("random_init", False):
        title += " [RANDOM-INIT BACKBONES]"
    table = Table(title=title, caption=caption)
    for column in ("group", "subjects", "DINO", "CLIP-I"):
        table.add_column(column, justify="left" if column == "group" else "right")
    groups = {"all": frame, "live": frame[frame["live"]], "object": frame[~frame["live"]]}
    for name, part in groups.items():
        table.add_row(name, str(len(part)), _fmt(part["dino"].mean(), digits),
                      _fmt(part["clip_i"].mean(), digits))
    published = {key: value * mode.scale for key, value in PUBLISHED_REAL_IMAGES.items()}
    table.add_row("published (DreamBench real images)", "30", _fmt(published["dino"], digits),
                  _fmt(published["clip_i"], digits))
    table.add_row("difference (all - published)", "",
                  _fmt(frame["dino"].mean() - published["dino"], digits, signed=True),
                  _fmt(frame["clip_i"].mean() - published["clip_i"], digits, signed=True))
    return table


def subject_table(frame: pd.DataFrame) -> Table:
    """One row per subject, for a closer look at outliers."""
    table = Table(title="Real-vs-real per subject")
    for column in ("subject", "class", "images", "DINO", "CLIP-I"):
        table.add_column(column)
    for row in frame.itertuples():
        table.add_row(row.subject, row.class_noun, str(row.images), _fmt(row.dino, 3), _fmt(row.clip_i, 3))
    return table


def run_calibration(name: str, root: str | None = None, backbones: str = "real", device: str = "auto",
                    mode: str = "canonical", console: Console | None = None,
                    per_subject: bool = False) -> pd.DataFrame:
    """`varbench calibrate NAME`: open the dataset, calibrate, print the tables."""
    if backbones not in ("real", "tiny"):
        raise UserError(f"backbones is {backbones!r}", "--backbones", "Use 'real' or 'tiny'.")
    mode_spec(mode)
    config = MetricsConfig(mode=mode, backbones=backbones, div=False)  # type: ignore[arg-type]
    frame = calibrate(open_dataset(name, root), config, resolve_device(device))
    console = console or Console()
    if per_subject:
        console.print(subject_table(frame))
    console.print(calibration_table(frame))
    return frame


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
