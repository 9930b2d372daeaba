"""Report figures on synthetic results: files are real PNG/PDF, axes carry the expected
labels, CI bands are drawn, the Pareto front is right, random-init is in the title."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varbench.schema import from_dict
from varbench.report.figures import cost_figure, loss_figure, pareto_front, spread_figure, sweep_figure
from varbench.report.results import RANDOM_INIT_NOTE, load_results
from varbench.report.section import build_views
from varbench.report.spec import ReportSpec
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run

SUBJECTS = [SyntheticSubject("dog", "dog", live=True, offset=0.0),
            SyntheticSubject("can", "can", live=False, offset=0.1),
            SyntheticSubject("cat", "cat", live=True, offset=-0.05)]


@pytest.fixture(scope="module")
def sweep_view(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for weight, dino in ((0.0, 0.50), (0.25, 0.56), (0.5, 0.60), (1.0, 0.58)):
        arm = SyntheticArm(f"scalew-step8-{weight}", "arbooth",
                           {"dino": dino, "clip_i": 0.7, "clip_t": 0.30 - weight / 20},
                           fit_seconds=600 + 100 * weight, seconds_per_image=0.5, config={"fine_scale_weight": weight})
        write_synthetic_run(root, "ablation_scale_weights_tiny", arm, SUBJECTS)
    baseline = SyntheticArm("dreambooth", "dreambooth", {"dino": 0.52, "clip_i": 0.7, "clip_t": 0.29},
                            fit_seconds=300, seconds_per_image=1.4)
    write_synthetic_run(root, "ablation_scale_weights_tiny", baseline, SUBJECTS)
    spec = from_dict(ReportSpec, {"sections": [{
        "name": "scalew", "protocols": ["ablation_scale_weights_tiny"], "row_header": "Fine-scale weight",
        "parameter": {"key": "config.fine_scale_weight", "label": "weight of scales 9-13"},
        "metrics": ["dino", "clip_t"], "figures": ["sweep", "cost", "spread", "loss"]}]}, "test spec")
    views, _ = build_views(spec, load_results(root))
    return views[0]


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def assert_real_files(figure) -> None:
    assert figure.png.startswith(b"\x89PNG\r\n\x1a\n") and figure.pdf.startswith(b"%PDF")
    assert pixels(figure.png).std() > 10  # not a blank canvas


def test_sweep_plot_has_parameter_axis_metric_axes_and_ci_bands(sweep_view):
    figure = sweep_figure(sweep_view)
    assert_real_files(figure)
    assert figure.axes_labels == [("weight of scales 9-13", "DINO"), ("weight of scales 9-13", "CLIP-T")]
    assert figure.name == "scalew-ablation_scale_weights_tiny-sweep"
    assert RANDOM_INIT_NOTE in figure.caption


def test_sweep_plot_draws_the_means_and_bands_it_claims(sweep_view):
    from matplotlib.collections import PolyCollection

    ax = sweep_figure(sweep_view).figure.axes[0]  # the DINO panel
    line = ax.get_lines()[0]
    # per weight: arm value + mean subject offset (0 + 0.1 - 0.05) / 3; the baseline has no
    # parameter and stays out of the sweep
    assert list(line.get_xdata()) == [0.0, 0.25, 0.5, 1.0]
    assert np.round(line.get_ydata(), 6).tolist() == [0.516667, 0.576667, 0.616667, 0.596667]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    band_y = bands[0].get_paths()[0].vertices[:, 1]
    summary = sweep_view.summary
    dino = summary[(summary["metric"] == "dino") & (summary["group"] == "all")]
    scalew = dino[dino["run_id"].str.startswith("scalew")]
    assert band_y.min() == pytest.approx(scalew["ci_low"].min())
    assert band_y.max() == pytest.approx(scalew["ci_high"].max())


def test_cost_plot_axes_are_quality_vs_log_cost(sweep_view):
    figure = cost_figure(sweep_view)
    assert_real_files(figure)
    assert figure.axes_labels == [("seconds per image (log scale)", "DINO"), ("fit minutes (log scale)", "DINO"),
                                  ("seconds per image (log scale)", "CLIP-T"), ("fit minutes (log scale)", "CLIP-T")]


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.4), (2.0, 0.65), (5.0, 0.9)]
    assert pareto_front(points) == [(0.5, 0.4), (1.0, 0.5), (2.0, 0.7), (5.0, 0.9)]


def test_spread_and_loss_plots(sweep_view):
    spread = spread_figure(sweep_view)
    assert_real_files(spread)
    assert spread.axes_labels == [("Fine-scale weight", "DINO per subject"),
                                  ("Fine-scale weight", "CLIP-T per subject")]
    loss = loss_figure(sweep_view)
    assert_real_files(loss)
    # one row of panels per method family, in the rows' order: DreamBooth, then ARBooth's arms
    assert loss.axes_labels == [("fit step", "loss"), ("fit step", "loss")]
    assert [ax.get_title() for ax in loss.figure.axes] == ["diffusion: loss", "autoregressive: loss"]
    assert [len(ax.get_lines()) for ax in loss.figure.axes] == [1, 4]


def test_sweep_without_parameters_says_why(tmp_path: Path):
    write_synthetic_run(tmp_path, "smoke", SyntheticArm("a", "arbooth", {"dino": 0.5}), SUBJECTS)
    spec = from_dict(ReportSpec, {"sections": [{"name": "s", "protocols": ["smoke"]}]}, "test spec")
    views, _ = build_views(spec, load_results(tmp_path))
    assert "no arm has a numeric parameter" in sweep_figure(views[0])
    assert cost_figure(views[0]).axes_labels[0] == ("seconds per image (log scale)", "DINO")


def crowded_view(root: Path, methods: list[str]):
    """Arms of about the same cost and quality: their labels all want the same spot."""
    for index, method in enumerate(methods):
        arm = SyntheticArm(f"arm-{index}-{method}", method, {"dino": 0.5 + 0.001 * index, "clip_t": 0.3},
                           fit_seconds=60 + index, seconds_per_image=1.0 + 0.01 * index)
        write_synthetic_run(root, "smoke", arm, SUBJECTS)
    spec = from_dict(ReportSpec, {"sections": [{"name": "s", "protocols": ["smoke"], "figures": ["cost"]}]}, "spec")
    views, _ = build_views(spec, load_results(root))
    return views[0]


def label_boxes(figure):
    """Pixel boxes of the point labels of every panel, measured by the Agg renderer, and
    the pixel positions of the labelled points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [[text for text in ax.texts if text.get_text()] for ax in figure.axes]
    boxes = [[Text.get_window_extent(text, renderer) for text in texts] for texts in labels]
    points = [[ax.transData.transform(text.xy) for text in texts] for ax, texts in zip(figure.axes, labels)]
    return boxes, points


def test_cost_plot_labels_of_a_crowded_plot_do_not_overlap(tmp_path: Path):
    methods = ["arbooth", "dreambooth", "custom_diffusion", "textual_inversion"] * 2
    figure = cost_figure(crowded_view(tmp_path, methods)).figure
    panels, points = label_boxes(figure)
    assert [len(boxes) for boxes in panels] == [8, 8, 8, 8]
    for boxes, anchors in zip(panels, points):
        for first in range(len(boxes)):
            for second in range(first + 1, len(boxes)):
                assert not boxes[first].overlaps(boxes[second]), (first, second)
        assert not any(box.contains(x, y) for box in boxes for x, y in anchors)  # no label hides a point
    again, _ = label_boxes(cost_figure(crowded_view(tmp_path / "again", methods)).figure)
    assert [[b.bounds for b in boxes] for boxes in again] == [[b.bounds for b in boxes] for boxes in panels]


def test_cost_plot_marks_points_by_method_family_plugins_included(tmp_path: Path):
    figure_file = cost_figure(crowded_view(tmp_path, ["arbooth", "dreambooth", "not_installed_plugin"]))
    legend = figure_file.figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == ["autoregressive", "diffusion", "other"]
    markers = {line.get_label(): line.get_marker() for line in legend.legend_handles}
    assert len(set(markers.values())) == 3
    assert "autoregressive: circles, diffusion: squares, other: triangles" in figure_file.caption
    assert "VAR" not in figure_file.caption
