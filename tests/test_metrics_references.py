"""The single reference of the fixed-pairing modes: the evaluator release's own per-subject
photo where it names one (Kosmos-G on DreamBench), else reference_index."""
from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from varbench.data import open_dataset
from varbench.metrics.references import KOSMOSG_DREAMBENCH, paired_reference
from varbench.metrics.settings import MetricsConfig, score_id, score_identity

DREAMBENCH = SHARED_DATA / "dreambench"


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="no shared DreamBench copy")
def test_kosmosg_pairs_every_dreambench_subject_with_the_photo_its_release_keeps():
    dataset = open_dataset("dreambench", str(DREAMBENCH))
    assert sorted(KOSMOSG_DREAMBENCH) == sorted(s.name for s in dataset.subjects)
    not_first = 0
    for subject in dataset.subjects:
        index = paired_reference("kosmosg", "release", 0, subject)
        assert subject.image_paths[index].name == KOSMOSG_DREAMBENCH[subject.name]
        not_first += index != 0
        assert paired_reference("kosmosg", "index", 0, subject) == 0  # the old behaviour, on request
        assert paired_reference("dreambench++", "release", 1, subject) == 1  # its release names none
    assert not_first == 26  # index 0 was the wrong photo for 26 of the 30 subjects
    assert paired_reference("kosmosg", "release", 0, dataset.subject("dog")) == 2  # dog/02.jpg


def test_mode_options_enter_only_their_modes_ids():
    assert score_id(MetricsConfig()) == score_id(MetricsConfig(reference="index", clip_resize="legacy"))
    kosmos = MetricsConfig(mode="kosmosg")
    assert score_identity(kosmos)["reference"] == "release"
    assert score_id(kosmos) != score_id(MetricsConfig(mode="kosmosg", reference="index"))
    matcher = MetricsConfig(mode="dreammatcher")
    assert score_id(matcher) != score_id(MetricsConfig(mode="dreammatcher", clip_resize="legacy"))
