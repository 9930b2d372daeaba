"""The toy SD's pretraining captions (sd_captions.py): colour words name the pictured
instance's own colours, about half of the time, before any modifier, never contradicting a
recolouring one; every caption fits the text encoder."""
from __future__ import annotations

from varbench.toyworld.modifiers import PROPERTIES
from varbench.toyworld.sd_captions import (COLOUR_NAMES, DESCRIBED_SHARE, RECOLOURING, colour_name,
                                          described_caption, described_captions)
from varbench.toyworld.instances import draw_instance
from varbench.toyworld.world import CLASSES, Scene, caption, class_spec, pretraining_scenes


def always(text: str) -> bool:
    return True


def test_every_palette_entry_has_a_name():
    assert all(entry in COLOUR_NAMES for spec in CLASSES for entry in spec.palette)


def test_a_described_caption_names_the_instance_body_and_pattern_colours():
    spec = class_spec("can")
    # the first patterned can
    instance = next(i for i in (draw_instance(spec, n) for n in range(50)) if i.pattern != "plain")
    body, pattern = (COLOUR_NAMES[min(spec.palette, key=lambda e: sum((a - b) ** 2 for a, b in zip(e, c)))]
                     for c in (instance.body, instance.secondary))
    scene = Scene("can", instance.instance_id, context="in the snow")
    assert described_caption(scene, always) == f"a {body} and {pattern} can in the snow"
    photo = Scene("can", instance.instance_id)
    assert described_caption(photo, always) == f"a photo of a {body} and {pattern} can"


def test_the_body_colour_alone_when_both_do_not_fit_and_the_plain_caption_when_nothing_fits():
    spec = class_spec("dog")
    instance = next(i for i in (draw_instance(spec, n) for n in range(50)) if i.pattern != "plain")
    scene = Scene("dog", instance.instance_id, context="on the beach")
    plain, body = caption(scene), colour_name(instance.body, class_spec("dog").palette)
    short = described_caption(scene, lambda text: len(text.split()) <= len(plain.split()) + len(body.split()))
    assert short == f"a {body} dog on the beach"
    assert described_caption(scene, lambda text: False) == plain


def test_the_recolouring_modifiers_are_those_that_paint_every_instance_one_colour():
    """A new modifier that paints the body one colour must join RECOLOURING, or the
    captions would name a colour the picture does not show."""
    spec = class_spec("vase")
    first, second = draw_instance(spec, 1), draw_instance(spec, 2)
    assert first.body != second.body
    painting = {m.name for m in PROPERTIES if m.recolour is not None
                and m.recolour(first).body == m.recolour(second).body}
    assert painting == set(RECOLOURING)


def test_recolouring_modifiers_keep_the_plain_caption():
    for modifier in RECOLOURING:
        scene = Scene("vase", 3, context="in the snow", modifier=modifier)
        assert described_caption(scene, always) == caption(scene)


def test_the_colours_come_after_the_article_and_before_a_modifier():
    spec = class_spec("can")
    instance = draw_instance(spec, 3)
    body = colour_name(instance.body, spec.palette)
    text = described_caption(Scene("can", 3, context="in the snow", modifier="shiny"), always)
    assert text.startswith(f"a {body} ") and text.endswith(" shiny can in the snow")


def test_a_seeded_share_of_the_captions_is_described_and_the_same_every_time():
    scenes = pretraining_scenes(1500, seed=11)
    first, again = described_captions(scenes, 0, always), described_captions(scenes, 0, always)
    assert first == again
    share = sum(text != caption(scene) for text, scene in zip(first, scenes)) / len(scenes)
    # recolouring modifiers are never described, so a little under the share
    assert DESCRIBED_SHARE - 0.1 < share <= DESCRIBED_SHARE + 0.03
    assert described_captions(scenes, 1, always) != first


def test_the_sd_pretraining_captions_fit_its_tokenizer():
    from varbench.models.diffusion import load_components
    from varbench.toyworld.train_sd import stage2_captions

    components = load_components("toyworld", None, "cpu")
    scenes = pretraining_scenes(1000, seed=5)
    texts = stage2_captions(components, scenes, 0)
    lengths = [len(components.tokenizer(text).input_ids) for text in texts]
    assert max(lengths) <= components.tokenizer.model_max_length
    assert sum(text != caption(scene) for text, scene in zip(texts, scenes)) > 300
