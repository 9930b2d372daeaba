"""`varbench run --backbones random`: the protocol's full-size rehearsal, every model and
metric encoder at its real architecture with random weights, kept apart from real results."""
from __future__ import annotations

import pytest

from conftest import TESTS_DIR
from varbench.errors import UserError
from varbench.methods.arbooth.base import weight_paths
from varbench.metrics.settings import MetricsConfig, score_identity
from varbench.protocol import load_protocol


def test_a_rehearsal_swaps_every_arm_and_encoder_for_random_weights():
    written = load_protocol("dreambench")
    rehearsal = load_protocol("dreambench", random_weights=True)
    assert rehearsal.name == "dreambench-random"  # its results never mix with real ones
    assert rehearsal.spec.metrics.backbones == "random"
    for real_arm, arm in zip(written.arms, rehearsal.arms):
        method = arm.make_method()
        assert method.uses_random_init() and not real_arm.make_method().uses_random_init()
        assert arm.run_id != real_arm.run_id
        for key, value in arm.method_class.random_weights.items():
            assert getattr(arm.config, key) == value
    arbooth = rehearsal.arm("arbooth").config
    assert arbooth.model == "infinity-2b" and weight_paths(arbooth) == (None, None)  # nothing to download
    assert rehearsal.arm("dreambooth").config.resolution == 512  # the real sizes stay


def test_random_encoders_pin_no_weights_and_score_apart():
    real, random = score_identity(MetricsConfig()), score_identity(MetricsConfig(backbones="random"))
    assert "weights" in real and "weights" not in random and random["backbones"] == "random"


def test_a_method_without_a_stand_in_is_refused_in_one_line():
    with pytest.raises(UserError, match="no random-weights stand-in") as caught:
        load_protocol(TESTS_DIR / "protocols" / "toy.yaml", random_weights=True)
    assert "toy.yaml" in caught.value.where
