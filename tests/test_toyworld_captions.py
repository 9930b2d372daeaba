"""The toy SD's variant captions (captions.py): instance names and photo wordings, so the
words the diffusion methods put before a class noun mean something to the toy SD."""
import re

import numpy as np
import pytest

from varbench.toyworld.captions import NAMES, variant_caption, variant_captions
from varbench.toyworld.diffusion import toyworld_tokenizer, world_words
from varbench.toyworld.world import HELD_OUT_START, PRETRAINING_INSTANCES, Pose, Scene, caption, pretraining_scenes


def test_every_pretraining_instance_has_its_own_name_and_sks_is_the_first():
    assert len(NAMES) == PRETRAINING_INSTANCES == len(set(NAMES))
    assert NAMES[0] == "sks"  # DreamBooth's identifier, a rare word with a weak meaning of its own
    assert not set(NAMES[1:]) & set(world_words())


def test_a_variant_names_the_instance_and_keeps_what_the_plain_caption_says():
    rng = np.random.default_rng(0)
    scene = Scene("cat", 5, "in the jungle", "wearing a red hat", Pose())
    assert variant_caption(scene, rng) == f"a {NAMES[5]} cat wearing a red hat in the jungle"
    assert caption(scene) == "a cat wearing a red hat in the jungle"
    red = Scene("teapot", 7, None, "red", Pose())
    assert variant_caption(red, rng) == f"a red {NAMES[7]} teapot"
    plain = [variant_caption(Scene("dog", 3), rng) for _ in range(200)]
    assert all(text.endswith(f" {NAMES[3]} dog") for text in plain)
    assert len(set(plain)) > 10  # worded many ways, as Textual Inversion's templates word a photo


def test_held_out_subjects_have_no_name():
    with pytest.raises(ValueError, match="no name"):
        variant_caption(Scene("dog", HELD_OUT_START), np.random.default_rng(0))


def test_every_variant_word_is_one_token_and_every_variant_fits_untruncated():
    tokenizer = toyworld_tokenizer()
    texts = variant_captions(pretraining_scenes(3000, seed=5), seed=0)
    for text in texts:
        assert all(len(tokenizer.tokenize(word)) == 1 for word in text.split() if "-" not in word), text
    assert max(len(tokenizer(text).input_ids) for text in texts) <= tokenizer.model_max_length


def test_the_words_of_textual_inversions_templates_are_words_the_toy_sd_was_pretrained_on():
    """Textual Inversion trains on its release's templates; a template word the toy SD never
    saw would have an untrained embedding in every one of its prompts."""
    from baselines.train_textual_inversion import OBJECT_TEMPLATES

    seen = {word for text in variant_captions(pretraining_scenes(20000, seed=1), seed=1)
            for word in re.findall(r"[a-z]+", text)}
    template_words = {word for template in OBJECT_TEMPLATES for word in re.findall(r"[a-z]+", template)}
    assert template_words <= seen, template_words - seen
