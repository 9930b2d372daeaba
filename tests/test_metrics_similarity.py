"""Metric math on hand-made embeddings with known cosines, and against loop references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from varbench.metrics.diversity import Diversity, build_lpips, pairwise_lpips
from varbench.metrics.similarity import ImageSimilarity, TextAlignment, mean_offdiagonal_cosine

E1, E2, E3 = torch.eye(3)


def test_image_similarity_all_references_known_cosines():
    references = torch.stack([E1, E2])
    images = torch.stack([E1, 3 * (E1 + E2), -E2, E3])  # norms differ on purpose
    metric = ImageSimilarity()
    metric.update(images, references)
    expected = torch.tensor([0.5, math.sqrt(0.5), -0.5, 0.0])
    assert torch.allclose(metric.compute(), expected, atol=1e-6)


def test_image_similarity_paired_reference_and_scale():
    references = torch.stack([E1, E2])
    images = torch.stack([E1, E1 + E2, -E2])
    metric = ImageSimilarity(scale=100)
    metric.update(images, references, paired_reference=torch.tensor([1, 0, 1]))
    assert torch.allclose(metric.compute(), torch.tensor([0.0, 100 * math.sqrt(0.5), -100.0]), atol=1e-4)


def test_values_accumulate_in_update_order_and_reset_clears():
    metric = ImageSimilarity()
    metric.update(torch.stack([E1]), torch.stack([E1]))
    metric.update(torch.stack([E2, -E1]), torch.stack([E1]))
    assert metric.compute().tolist() == [1.0, 0.0, -1.0]
    metric.reset()
    metric.update(torch.stack([E2]), torch.stack([E2]))
    assert metric.compute().reshape(-1).tolist() == [1.0]  # one value: torchmetrics squeezes it


def test_all_reference_mean_over_images_is_the_all_pairs_mean():
    generator = torch.Generator().manual_seed(0)
    images, references = torch.randn(7, 16, generator=generator), torch.randn(5, 16, generator=generator)
    metric = ImageSimilarity()
    metric.update(images, references)
    per_image = metric.compute().double().numpy()
    pairs = []
    for image in images.double().numpy():  # reference: explicit loops in float64
        row = [float(image @ ref / (np.linalg.norm(image) * np.linalg.norm(ref))) for ref in references.double().numpy()]
        pairs.extend(row)
        assert math.isclose(per_image[len(pairs) // 5 - 1], np.mean(row), abs_tol=1e-6)
    assert math.isclose(per_image.mean(), np.mean(pairs), abs_tol=1e-6)


def test_text_alignment_is_the_raw_cosine_of_each_pair():
    images = torch.stack([E1, E1 + E2, -E3])
    texts = torch.stack([E1, E2, E3])
    metric = TextAlignment()
    metric.update(images, texts)
    assert torch.allclose(metric.compute(), torch.tensor([1.0, math.sqrt(0.5), -1.0]), atol=1e-6)  # no clamp
    scaled = TextAlignment(scale=100)
    scaled.update(images, texts)
    assert torch.allclose(scaled.compute(), 100 * metric.compute())
    with pytest.raises(ValueError):
        metric.update(images, texts[:2])


def test_offdiagonal_mean_counts_distinct_pairs_only():
    embeddings = torch.stack([E1, 2 * E1, E2])  # pair cosines: 1, 0, 0 (each ordered pair twice)
    assert math.isclose(float(mean_offdiagonal_cosine(embeddings)), 1 / 3, abs_tol=1e-6)
    with pytest.raises(ValueError):
        mean_offdiagonal_cosine(embeddings[:1])


@pytest.fixture(scope="module")
def lpips_net():
    return build_lpips(pretrained=False)


def test_div_of_identical_images_is_zero_and_positive_otherwise(lpips_net):
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    same = image.repeat(4, 1, 1, 1)
    different = torch.rand(4, 3, 64, 64, generator=generator) * 2 - 1
    metric = Diversity(lpips_net)
    metric.update(same)
    metric.update(different)
    metric.update(image)  # one image: no pair, no value
    values = metric.compute()
    assert values.shape == (2,) and values[0] == 0 and values[1] > 0


def test_div_is_the_mean_over_unordered_pairs(lpips_net):
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 64, 64, generator=generator) * 2 - 1
    distances = pairwise_lpips(lpips_net, images)
    assert distances.shape == (6,)
    reference = [float(lpips_net(images[i:i + 1], images[j:j + 1])) for i in range(4) for j in range(i + 1, 4)]
    assert torch.allclose(distances, torch.tensor(reference), atol=1e-6)
    metric = Diversity(lpips_net)
    metric.update(images)
    assert math.isclose(float(metric.compute()), float(np.mean(reference)), abs_tol=1e-6)
