"""The brightness gap: a complete, minimal varbench metric plugin.

Per generated image, the absolute difference between its mean brightness and the mean
brightness of the subject's reference photos (0-1, lower = closer). Trivial, but real:
an image far darker or brighter than the photos of its subject shows it at once, and it
exercises everything a metric declares. Its "encoder" has no model: it reads the 256x256
views that LPIPS also reads, so the Scorer decodes each image once for every metric.
Name it in a protocol to compute it: `metrics: {extra: [brightness_gap]}`.
"""
from __future__ import annotations

from varbench.metrics.plugin import Encoder, Metric


def _no_model(setup):
    return None  # a pixel statistic: nothing to build in any size (real, random or tiny)


def _mean_brightness(model, views):
    """uint8 (N, 256, 256, 3) views -> (N,) mean of all pixels, 0-1."""
    return views.float().mean(dim=(1, 2, 3)) / 255


BRIGHTNESS = Encoder("mean_brightness", pixels="square", build=_no_model, encode=_mean_brightness)


class BrightnessGap(Metric):
    name = "brightness_gap"
    version = "1"
    needs = frozenset({"references"})
    better = "lower"
    encoders = (BRIGHTNESS,)
    description = "absolute difference of mean brightness to the references"

    def score(self, cell):
        images, references = cell.embeddings(BRIGHTNESS), cell.references(BRIGHTNESS)
        return [cell.per_image((images - references.mean()).abs())]
