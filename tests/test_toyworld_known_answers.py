"""The toyworld's known answers, measured with the shipped backbones through the metric
pipeline (varbench.toyworld.known_answers): the numbers are what the README and the
closing notes quote, so a retrained backbone that loses a property fails here."""
from __future__ import annotations

import pytest

from varbench.toyworld.known_answers import clip_accuracy, dino_gap, make_scorer
from varbench.toyworld.world import CONTEXT_NAMES


@pytest.fixture(scope="module")
def scorer():
    return make_scorer("cpu")


def test_dino_tells_two_views_of_one_instance_from_two_instances_of_its_class(scorer):
    found = dino_gap(scorer)
    assert found.gap >= 0.2, found
    assert min(found.per_class.values()) > 0, found.per_class  # every class, not only on average


def test_clip_names_the_context_and_the_class_of_real_toyworld_images(scorer):
    found = clip_accuracy(scorer, images=200)
    # the class bar is the ceiling of the generators' asked 0.8 (they are judged by this CLIP)
    assert found.context >= 0.9 and found.class_ >= 0.85, found


def test_the_shipped_weights_are_the_toyworld_architectures_and_match_their_manifest():
    from varbench.toyworld.backbones import FILES, FOLDERS, WEIGHTS_DIR, folder_path, read_manifest, weight_path

    listed = set(read_manifest(WEIGHTS_DIR))
    assert set(FILES.values()) <= listed
    assert {name.split("/")[0] for name in listed - set(FILES.values())} == set(FOLDERS.values())
    total = sum(weight_path(name).stat().st_size for name in FILES)
    total += sum(p.stat().st_size for name in FOLDERS for p in folder_path(name).rglob("*") if p.is_file())
    assert total <= 25 * 2**20  # the budget for every shipped backbone together


@pytest.fixture(scope="module")
def infinity_following(scorer):
    """The toy Infinity's prompt following, on every class and a third of the contexts."""
    from varbench.toyworld.known_answers import prompt_following, toy_infinity_generator

    return prompt_following(scorer, toy_infinity_generator("cpu"), contexts=CONTEXT_NAMES[::3])


def test_the_shipped_infinity_follows_the_context_of_its_prompt(infinity_following):
    assert infinity_following.context_accuracy >= 0.8, infinity_following


def test_the_shipped_infinity_follows_the_class_of_its_prompt(infinity_following):
    assert infinity_following.class_accuracy >= 0.8, infinity_following


def test_the_shipped_sd_follows_the_class_and_the_context_of_its_prompt(scorer):
    """The generator half of the known answers, on every class and a third of the contexts
    (the README quotes all 144 prompts; this keeps the suite's time)."""
    from varbench.toyworld.known_answers import prompt_following, toy_sd_generator

    found = prompt_following(scorer, toy_sd_generator("cpu"), contexts=CONTEXT_NAMES[::3])
    assert found.context_accuracy >= 0.8 and found.class_accuracy >= 0.8, found


def test_missing_or_damaged_toyworld_weights_are_one_clear_error(tmp_path, monkeypatch):
    import shutil

    from varbench.errors import UserError
    from varbench.toyworld.backbones import ENV_VAR, WEIGHTS_DIR, weight_path

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(UserError, match="toyworld dino weights not found"):
        weight_path("dino")
    shutil.copytree(WEIGHTS_DIR, tmp_path, dirs_exist_ok=True)
    assert weight_path("dino") == tmp_path / "dino.safetensors"
    data = bytearray((tmp_path / "dino.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "dino.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="do not match manifest.sha256"):
        weight_path("dino")


def test_toyworld_score_ids_hash_the_metric_encoders_not_the_generators():
    """Shipping or retraining a toy generator must not invalidate every toyworld score."""
    from varbench.metrics.settings import MetricsConfig, score_identity
    from varbench.toyworld.backbones import FILES, shipped_digests

    hashed = score_identity(MetricsConfig(backbones="toyworld"))["weights"]
    assert set(hashed) == set(FILES.values())
    assert {name.split("/")[0] for name in shipped_digests()} - set(hashed) == {"sd", "infinity"}
