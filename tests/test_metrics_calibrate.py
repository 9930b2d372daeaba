"""Calibration (real-vs-real within subjects) and the scoring throughput benchmark."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from varbench.data import Dataset
from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.metrics.bench import measure_throughput
from varbench.metrics.calibrate import COLUMNS, calibrate, calibration_table, run_calibration
from varbench.metrics.settings import MetricsConfig
from varbench.metrics.scoring import Scorer
from varbench.metrics.similarity import mean_offdiagonal_cosine


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(0)
    subjects = []
    for name, live, count in [("cat", True, 3), ("mug", False, 4), ("lonely", False, 1)]:
        paths = []
        for index in range(count):
            path = folder / f"{name}{index}.png"
            Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(path)
            paths.append(path)
        subjects.append(Subject(name, name, live, tuple(paths)))
    return Dataset("toyset", tuple(subjects), ("a {}",), ("a {}",))


@pytest.fixture(scope="module")
def scorer():
    built = Scorer(MetricsConfig(backbones="tiny", div=False), "cpu", threads=2)
    yield built
    built.close()


def render(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_calibration_is_the_mean_over_distinct_pairs(dataset, scorer):
    frame = calibrate(dataset, scorer.config, "cpu", scorer=scorer)
    assert list(frame.columns) == COLUMNS and list(frame["subject"]) == ["cat", "mug", "lonely"]
    assert list(frame["pairs"]) == [3, 6, 0]
    for subject, row in zip(dataset.subjects[:2], frame.itertuples()):
        embedded = scorer.embed(list(subject.image_paths))
        unit = embedded.dino.double().numpy()
        pairs = [unit[i] @ unit[j] for i in range(len(unit)) for j in range(len(unit)) if i != j]
        assert row.dino == pytest.approx(float(np.mean(pairs)), abs=1e-6)
        assert row.clip_i == pytest.approx(float(mean_offdiagonal_cosine(embedded.clip)), abs=1e-6)
    assert math.isnan(frame["dino"].iloc[2])  # a single image has no pair
    assert frame.attrs["random_init"] is True


def test_table_shows_published_numbers_and_the_random_init_warning(dataset, scorer):
    text = render(calibration_table(calibrate(dataset, scorer.config, "cpu", scorer=scorer)))
    assert "0.774" in text and "0.885" in text
    assert "random-init backbones" in text and "meaningless" in text
    assert "canonical mode" in text


def test_x100_modes_show_published_numbers_x100(dataset):
    frame = calibrate(dataset, MetricsConfig(mode="kosmosg", backbones="tiny"), "cpu")
    assert frame["dino"].dropna().between(-100, 100).all() and frame["dino"].abs().max() > 1
    text = render(calibration_table(frame))
    assert "77.4" in text and "88.5" in text and "kosmosg mode (x100 scale)" in text


def test_run_calibration_prints_the_table(isolated_cache):
    console = Console(record=True, width=200)
    frame = run_calibration("smoke", backbones="tiny", device="cpu", console=console)
    assert len(frame) == 3 and frame["dino"].notna().all()
    assert "Real-vs-real calibration (smoke)" in console.export_text()
    with pytest.raises(UserError, match="backbones"):
        run_calibration("smoke", backbones="huge", device="cpu")


def test_throughput_benchmark_output_is_well_formed():
    result = measure_throughput("cpu", "tiny", images=8, image_size=64, batch_size=4, threads=2)
    assert result["random_init"] is True and result["rows"] == 3 * 8
    for key in ("images_per_second", "decode_images_per_second", "encode_images_per_second",
                "encoder_gflops_per_image", "encoder_floor_images_per_second"):
        assert result[key] > 0 and math.isfinite(result[key])
    assert {"device", "size", "mode", "images", "image_size", "batch_size", "threads", "seconds"} <= set(result)
