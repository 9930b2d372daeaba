"""Point labels that never overlap: a simple, deterministic placement.

Arms with about the same cost and quality (common in smoke runs, and between the
baselines that share one backbone) would have their labels drawn on top of each other at
one fixed offset. Here every label takes the first of a fixed list of positions around
its point (right above, right below, left above, left below, then further up and down,
one line height at a time) whose box overlaps no label placed before it and no labelled
point's marker, preferring positions inside the axes. Labels are placed from the top of the plot down, so the same
figure always gives the same picture. A label that had to move away from its point gets
a thin leader line back to it.

Boxes are measured with the renderer after the layout is done; labels are kept out of
the layout (`set_in_layout(False)`), so placing them does not move the axes afterwards.
"""
from __future__ import annotations

from collections.abc import Iterator

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

LABEL_GID = "varbench-point-label"  # marks the annotations this module may move
GAP = 4.0  # points between a point and its label
MARKER = 3.0  # points around every labelled point kept free of labels (the marker's radius)
PAD = 1.0  # pixels kept free around every label box
FAR_STEPS = 60  # how many line heights up and down to try before giving up


def add_point_label(ax: Axes, text: str, xy: tuple[float, float], fontsize: float = 7) -> Annotation:
    """A label next to the data point `xy`, to be moved by `separate_labels`."""
    label = ax.annotate(text, xy, textcoords="offset points", xytext=(GAP, GAP / 2), ha="left", va="bottom",
                        fontsize=fontsize, gid=LABEL_GID)
    label.set_in_layout(False)
    return label


def separate_labels(figure: Figure) -> None:
    """Move the point labels of every axes of `figure` apart; call once all are added."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()  # lays the axes out; the labels are outside the layout, so it stays put
    renderer = canvas.get_renderer()
    for ax in figure.axes:
        labels = [text for text in ax.texts if isinstance(text, Annotation) and text.get_gid() == LABEL_GID]
        _place(ax, labels, renderer, figure.dpi / 72)


def _place(ax: Axes, labels: list[Annotation], renderer, pixels_per_point: float) -> None:
    area = ax.get_window_extent(renderer)
    anchors = {id(label): ax.transData.transform(label.xy) for label in labels}
    radius = MARKER * pixels_per_point
    placed = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in anchors.values()]
    for label in sorted(labels, key=lambda item: (-anchors[id(item)][1], anchors[id(item)][0])):
        start = Text.get_window_extent(label, renderer)
        x0, y0 = label.xyann
        width, height = start.width / pixels_per_point, start.height / pixels_per_point
        chosen, chosen_box = None, None
        for inside_only in (True, False):
            for index, (x, y) in enumerate(_candidates(width, height)):
                box = start.translated((x - x0) * pixels_per_point, (y - y0) * pixels_per_point)
                if inside_only and not _contains(area, box):
                    continue
                if not any(box.overlaps(_padded(other)) for other in placed):
                    chosen, chosen_box = (index, (x, y)), box
                    break
            if chosen is not None:
                break
        if chosen is None:  # nowhere free within reach: leave it where it was
            placed.append(start)
            continue
        index, offset = chosen
        label.xyann = offset
        placed.append(chosen_box)
        if index >= 4:  # moved away from its point: draw the way back
            _leader(ax, label, offset, width, height)


def _candidates(width: float, height: float) -> Iterator[tuple[float, float]]:
    """Offsets (points) of the label's lower-left corner from its point, nearest first."""
    right, left = GAP, -GAP - width
    above, below = GAP / 2, -GAP / 2 - height
    yield from ((right, above), (right, below), (left, above), (left, below))
    for step in range(1, FAR_STEPS + 1):
        shift = step * (height + 1)
        yield from ((right, above + shift), (right, below - shift), (left, above + shift), (left, below - shift))


def _leader(ax: Axes, label: Annotation, offset: tuple[float, float], width: float, height: float) -> None:
    """A thin line from the point to the nearest spot of the label's box."""
    x, y = offset
    nearest = (min(max(0.0, x), x + width), min(max(0.0, y), y + height))
    line = ax.annotate("", label.xy, textcoords="offset points", xytext=nearest,
                       arrowprops={"arrowstyle": "-", "color": "0.55", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3})
    line.set_in_layout(False)


def _contains(area: Bbox, box: Bbox) -> bool:
    return area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1


def _padded(box: Bbox) -> Bbox:
    return Bbox.from_extents(box.x0 - PAD, box.y0 - PAD, box.x1 + PAD, box.y1 + PAD)
