"""Scale-wise weights per schedule, the weighted CE and the distillation losses, against
reference computations written out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from varbench.errors import UserError
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.losses import (
    bitwise_ce,
    distillation_loss,
    hard_distillation,
    soft_distillation,
    weighted_ce,
)
from varbench.methods.arbooth.scale_weights import loss_normalizer, scale_weights, token_weights
from varbench.models.infinity.schedule import get_schedule

FULL = get_schedule("1M")  # 13 scales, 10,521 tokens


def weights_of(num_scales: int, **overrides) -> list[float]:
    return scale_weights(ARBoothConfig(**overrides), num_scales)


def test_released_step_at_1024_px():
    weights = token_weights(weights_of(13), FULL)
    assert weights.shape == (10_521,)
    assert torch.equal(weights[:921], torch.ones(921)) and torch.equal(weights[921:], torch.full((9_600,), 0.5))
    assert loss_normalizer(weights, "tokens") == 10_521
    assert loss_normalizer(weights, "weights") == 921 + 0.5 * 9_600


@pytest.mark.parametrize("overrides, expected", [
    ({"scale_weights": "uniform"}, [1.0] * 13),
    ({"scale_weights": "released"}, [1.0] * 8 + [0.5] * 5),
    ({"scale_weights": "step", "weight_cutoff_scale": 6, "fine_scale_weight": 0.25}, [1.0] * 6 + [0.25] * 7),
    ({"scale_weights": "step", "weight_cutoff_scale": 13, "fine_scale_weight": 0.0}, [1.0] * 13),
    ({"scale_weights": "geometric", "scale_weight_decay": 0.5}, [0.5 ** k for k in range(13)]),
])
def test_weight_vector_of_every_schedule_kind(overrides, expected):
    assert weights_of(13, **overrides) == pytest.approx(expected)


def test_cut_offs_beyond_the_last_scale_mean_uniform():
    assert weights_of(5) == [1.0] * 5  # the tiny model's 5 scales: the released step is uniform
    assert weights_of(10) == [1.0] * 8 + [0.5] * 2  # 512 px
    assert weights_of(5, scale_weights="step", weight_cutoff_scale=10, fine_scale_weight=0.5) == [1.0] * 5


def test_all_zero_weights_cannot_be_normalised_by_their_sum():
    weights = token_weights([0.0] * 5, get_schedule(5))
    with pytest.raises(UserError, match="every scale weight is 0"):
        loss_normalizer(weights, "weights")


def reference_bit_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per token: mean over bits of -log softmax([l0, l1])[label], element by element."""
    batch, length, bits = labels.shape
    out = torch.zeros(batch, length, dtype=torch.float64)
    for b in range(batch):
        for t in range(length):
            total = 0.0
            for i in range(bits):
                l0, l1 = float(logits[b, t, 2 * i]), float(logits[b, t, 2 * i + 1])
                chosen = l1 if labels[b, t, i] else l0
                total += math.log(math.exp(l0) + math.exp(l1)) - chosen
            out[b, t] = total / bits
    return out


def test_bitwise_and_weighted_ce_match_a_reference():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, generator=generator)  # 4 bits per token
    labels = torch.randint(0, 2, (2, 5, 4), generator=generator)
    reference = reference_bit_ce(logits, labels)
    torch.testing.assert_close(bitwise_ce(logits, labels), reference.float())
    weights = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.25])
    expected = ((reference * weights.double()).sum(1) / 7.0).mean()
    torch.testing.assert_close(weighted_ce(logits, labels, weights, 7.0), expected.float())


def test_soft_distillation_is_zero_for_equal_logits_and_positive_otherwise():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 6, 64, generator=generator)
    for per_bit in (False, True):
        assert distillation_loss(teacher.clone(), teacher, "soft", 1.0, per_bit).abs() < 1e-6
        student = teacher + 0.3 * torch.randn(teacher.shape, generator=generator)
        assert distillation_loss(student, teacher, "soft", 1.0, per_bit) > 1e-3


def test_soft_distillation_matches_the_kl_formula_over_64_logits_and_per_bit():
    generator = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(1, 3, 64, generator=generator), torch.randn(1, 3, 64, generator=generator)
    temperature = 2.0

    def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
        p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
        return (p * (p.log() - q.log())).sum(-1)

    whole = kl(teacher / temperature, student / temperature)  # (1, 3): one softmax over 64 logits
    per_bit = kl((teacher / temperature).view(1, 3, 32, 2), (student / temperature).view(1, 3, 32, 2)).mean(-1)
    torch.testing.assert_close(soft_distillation(student, teacher, temperature, per_bit=False), whole.float())
    torch.testing.assert_close(soft_distillation(student, teacher, temperature, per_bit=True), per_bit.float())
    assert not torch.allclose(whole, per_bit)  # quirk 4 changes the loss
    torch.testing.assert_close(distillation_loss(student, teacher, "soft", temperature), whole.mean().float())


def test_hard_distillation_is_the_bitwise_ce_against_the_teacher_argmax():
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 4, 64, generator=generator), torch.randn(2, 4, 64, generator=generator)
    targets = (teacher.view(2, 4, 32, 2)[..., 1] > teacher.view(2, 4, 32, 2)[..., 0]).long()
    torch.testing.assert_close(hard_distillation(student, teacher), bitwise_ce(student, targets))
    confident = torch.where(targets.bool(), 1.0, -1.0).repeat_interleave(2, -1) * torch.tensor([-20.0, 20.0]).repeat(32)
    assert distillation_loss(confident, teacher, "hard") < 1e-6  # the student already says the argmax
    assert distillation_loss(-confident, teacher, "hard") > 10
