"""Scorer.score_cell on a tiny subject: the rows, their conventions and their values."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.metrics.settings import MODES, MetricsConfig
from varbench.metrics.scoring import GeneratedImage, Scorer
from varbench.store import METRIC_COLUMNS

ROW_KEYS = {"kind", "prompt_index", "sample_index", "image", "metric", "mode", "value"}
PROMPTS = ["a {} in the jungle", "a {} on the beach", "a red {}"]


def write_png(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A subject with 3 references; prompt 0 and 1 have 3 samples, prompt 1's are one
    image three times, prompt 2 has a single sample; plus 2 PRES images."""
    folder = tmp_path_factory.mktemp("cell")
    references = tuple(write_png(folder / f"ref{i}.png", 100 + i, (52, 44)) for i in range(3))
    subject = Subject("toy", "toy", False, references)
    images = []
    for prompt, samples in enumerate([3, 3, 1]):
        for sample in range(samples):
            name = f"images/p{prompt:03d}_s{sample:02d}.png"
            seed = 7 if prompt == 1 else 10 * prompt + sample  # prompt 1: identical images
            (folder / "images").mkdir(exist_ok=True)
            path = write_png(folder / name, seed)
            images.append(GeneratedImage(path, name, "eval", prompt, sample, PROMPTS[prompt].format("toy"),
                                         PROMPTS[prompt]))
    (folder / "pres").mkdir()
    for sample in range(2):
        name = f"pres/s{sample:02d}.png"
        images.append(GeneratedImage(write_png(folder / name, 50 + sample), name, "pres", -1, sample,
                                     "a photo of toy", "a photo of {}"))
    return subject, images


@pytest.fixture(scope="module")
def scorers():
    built = {mode: Scorer(MetricsConfig(mode=mode, backbones="tiny", batch_size=4), "cpu", threads=2)
             for mode in MODES}
    yield built
    for scorer in built.values():
        scorer.close()


@pytest.fixture(scope="module")
def scored(scorers, cell):
    """Each mode's rows for the cell, scored twice."""
    subject, images = cell
    return {mode: (scorer.score_cell(subject, images), scorer.score_cell(subject, images))
            for mode, scorer in scorers.items()}


def by_metric(rows):
    grouped = {}
    for row in rows:
        grouped.setdefault(row["metric"], []).append(row)
    return grouped


@pytest.mark.parametrize("mode", MODES)
def test_rows_follow_the_conventions(scored, cell, mode):
    images = cell[1]
    rows = scored[mode][0]
    assert all(set(row) == ROW_KEYS for row in rows)
    assert set(METRIC_COLUMNS) == ROW_KEYS | {"run_id", "subject"}
    assert Counter(row["metric"] for row in rows) == {"dino": 7, "clip_i": 7, "clip_t": 7, "div": 2, "pres": 2}
    assert {row["mode"] for row in rows} == {mode}
    grouped = by_metric(rows)
    assert [(r["prompt_index"], r["sample_index"], r["image"]) for r in grouped["div"]] == [(0, -1, ""), (1, -1, "")]
    assert [(r["kind"], r["prompt_index"], r["image"]) for r in grouped["pres"]] == \
        [("pres", -1, "pres/s00.png"), ("pres", -1, "pres/s01.png")]
    evals = [image for image in images if image.kind == "eval"]
    assert [(r["prompt_index"], r["sample_index"], r["image"]) for r in grouped["dino"]] == \
        [(i.prompt_index, i.sample_index, i.name) for i in evals]
    assert all(np.isfinite(row["value"]) and isinstance(row["value"], float) for row in rows)


@pytest.mark.parametrize("mode", MODES)
def test_scoring_twice_gives_identical_rows(scored, mode):
    first, second = scored[mode]
    assert first == second


def test_div_is_zero_for_identical_images_and_positive_otherwise(scored):
    div = {row["prompt_index"]: row["value"] for row in by_metric(scored["canonical"][0])["div"]}
    assert div[1] == 0.0 and div[0] > 0  # prompt 2 has one image: no pair, no row


def test_canonical_values_are_mean_cosines_to_all_references(scorers, scored, cell):
    subject, images = cell
    scorer = scorers["canonical"]
    grouped = by_metric(scored["canonical"][0])
    refs = scorer.embed(list(subject.image_paths))
    first = scorer.embed([images[0].path])
    assert grouped["dino"][0]["value"] == pytest.approx(float((first.dino @ refs.dino.T).mean()), abs=1e-6)
    assert grouped["clip_i"][0]["value"] == pytest.approx(float((first.clip @ refs.clip.T).mean()), abs=1e-6)
    text = scorer.clip.encode_text(["a toy in the jungle"])
    assert grouped["clip_t"][0]["value"] == pytest.approx(float(first.clip @ text.T), abs=1e-6)
    pres = scorer.embed([images[-1].path])
    assert grouped["pres"][-1]["value"] == pytest.approx(float((pres.dino @ refs.dino.T).mean()), abs=1e-6)


def test_dreammatcher_reads_the_raw_template_for_clip_t(scorers, scored, cell):
    images = cell[1]
    scorer = scorers["dreammatcher"]
    value = by_metric(scored["dreammatcher"][0])["clip_t"][0]["value"]
    image = scorer.embed([images[0].path]).clip
    template, plain = scorer.clip.encode_text(["a {} in the jungle", "a toy in the jungle"])
    assert value == pytest.approx(float(image[0] @ template), abs=1e-6)
    assert value != pytest.approx(float(image[0] @ plain), abs=1e-6)


@pytest.mark.parametrize("mode", ["kosmosg", "dreambench++"])
def test_fixed_pairing_modes_compare_with_one_reference_at_x100(scorers, scored, cell, mode):
    subject, images = cell
    scorer = scorers[mode]
    grouped = by_metric(scored[mode][0])
    refs, first = scorer.embed(list(subject.image_paths)), scorer.embed([images[0].path])
    assert grouped["dino"][0]["value"] == pytest.approx(100 * float(first.dino[0] @ refs.dino[0]), abs=1e-4)
    assert grouped["clip_i"][0]["value"] == pytest.approx(100 * float(first.clip[0] @ refs.clip[0]), abs=1e-4)
    second = dataclasses.replace(scorer.config, reference_index=2)
    scorer.config = second
    try:
        moved = by_metric(scorer.score_cell(subject, images[:1]))["dino"][0]["value"]
        assert moved == pytest.approx(100 * float(first.dino[0] @ refs.dino[2]), abs=1e-4)
        scorer.config = dataclasses.replace(second, reference_index=3)
        with pytest.raises(UserError, match="reference_index"):
            scorer.score_cell(subject, images[:1])
    finally:
        scorer.config = dataclasses.replace(second, reference_index=0)


def test_dreambench_plus_uses_dino_vit_s8(scorers):
    assert scorers["dreambench++"].dino.vit.patch_embed.proj.kernel_size == (8, 8)
    assert scorers["canonical"].dino.vit.patch_embed.proj.kernel_size == (16, 16)


def test_without_div_or_pres_images_those_rows_are_absent(cell):
    subject, images = cell
    scorer = Scorer(MetricsConfig(backbones="tiny", div=False), "cpu", threads=1)
    rows = scorer.score_cell(subject, [image for image in images if image.kind == "eval"])
    assert set(row["metric"] for row in rows) == {"dino", "clip_i", "clip_t"}
    assert scorer.score_cell(subject, []) == []
    scorer.close()


def test_reference_embeddings_are_computed_once_per_subject(scorers, cell):
    subject, images = cell
    scorer = scorers["canonical"]
    first = scorer.reference_embeddings(subject)
    assert scorer.reference_embeddings(subject) is first


def test_bad_inputs(scorers, cell, tmp_path):
    subject, images = cell
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image"):
        scorers["canonical"].score_cell(subject, [dataclasses.replace(images[0], path=broken)])
    with pytest.raises(ValueError, match="kind"):
        scorers["canonical"].score_cell(subject, [dataclasses.replace(images[0], kind="other")])
    with pytest.raises(UserError, match="batch_size"):
        Scorer(MetricsConfig(backbones="tiny", batch_size=0), "cpu")


def test_batch_size_does_not_change_values(scorers, scored, cell):
    subject, images = cell
    scorer = scorers["canonical"]
    config = scorer.config
    scorer.config = dataclasses.replace(config, batch_size=1)
    scorer._references.clear()  # re-embed the references one by one too
    try:
        one_by_one = scorer.score_cell(subject, images)
    finally:
        scorer.config = config
    assert [row["value"] for row in one_by_one] == pytest.approx([row["value"] for row in scored["canonical"][0]],
                                                                 abs=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_warming_up_the_encoders_changes_no_value(scored, cell, mode):
    """The Scorer warms its kernels up on a GPU (`warm_up`); the warm-up keeps nothing, so
    a fresh Scorer warmed up first scores a cell exactly as one that was not (run on the
    CPU, where the same code runs when called)."""
    subject, images = cell
    scorer = Scorer(MetricsConfig(mode=mode, backbones="tiny", batch_size=4), "cpu", threads=2)
    try:
        scorer.warm_up(source_size=64)
        assert scorer.score_cell(subject, images) == scored[mode][0]
    finally:
        scorer.close()


SCORING_IMPORTS = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from varbench.data.subject import Subject
from varbench.metrics.settings import MetricsConfig
from varbench.metrics.scoring import GeneratedImage, Scorer

folder = Path(sys.argv[1])
paths = []
for i in range(4):
    pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f"{i}.png")
    paths.append(folder / f"{i}.png")
subject = Subject("toy", "toy", False, tuple(paths[:2]))
images = [GeneratedImage(p, p.name, "eval", 0, i, "a toy", "a {}") for i, p in enumerate(paths[2:])]
scorer = Scorer(MetricsConfig(backbones="tiny", batch_size=4, div=False), "cpu", threads=1)
loaded = set(sys.modules)
scorer.score_cell(subject, images)
scorer.close()
print(",".join(sorted(name for name in set(sys.modules) - loaded if "." not in name)))  # new packages
"""


def test_scoring_a_first_cell_imports_nothing_the_load_did_not(tmp_path):
    """A fresh process's first cell must not pay for imports (torchmetrics and the
    matplotlib and scipy it pulls in took ~2 s inside the timed scoring phase)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", SCORING_IMPORTS, str(tmp_path)], capture_output=True, text=True,
                            check=True, timeout=300)
    assert result.stdout.strip() == ""
