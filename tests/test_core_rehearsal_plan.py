"""`varbench rehearse`: what it runs (short fits, few images, random weights) and how it
projects the real protocol from the measured per-step and per-image costs."""
from __future__ import annotations

import yaml

from varbench.plan import RunOptions, prepare
from varbench.protocol import load_protocol
from varbench.rehearsal import ArmFigures, RehearsalOptions, projected_hours, write_rehearsal_protocol


def test_the_rehearsed_protocol_shortens_every_fit_and_keeps_the_rest(tmp_path, isolated_cache):
    path = write_rehearsal_protocol("smoke", RehearsalOptions(results=tmp_path, fit_steps=3, prompts=1,
                                                              images_per_prompt=1))
    assert path == tmp_path / "smoke-random" / "rehearsal.yaml"
    data = yaml.safe_load(path.read_text())
    steps = {arm["method"]: arm["config"].get("iterations", arm["config"].get("steps")) for arm in data["arms"]}
    assert set(steps.values()) == {3} and len(steps) == 4
    dreambooth = next(arm for arm in data["arms"] if arm["method"] == "dreambooth")
    assert dreambooth["config"]["num_class_images"] == 2  # shared per class: kept out of the per-step rate
    rehearsal = load_protocol(path, random_weights=True)
    assert rehearsal.name == "smoke-random" and rehearsal.spec.metrics.backbones == "random"
    _, cells = prepare(str(path), RunOptions(random_weights=True, dry_run=True))
    assert {len(cell.images) for cell in cells} == {1 + rehearsal.spec.metrics.pres_images}


def test_the_projection_scales_the_measured_rates_to_the_real_protocol(isolated_cache):
    real = load_protocol("smoke")
    _, cells = prepare("smoke", RunOptions(dry_run=True))
    arm = real.arm("dreambooth")
    figures = ArmFigures("dreambooth", load_s=10.0, fit_s_per_step=0.5, generate_s_per_image=2.0,
                         score_s_per_image=1.0, peak_gib={})
    mine = [c for c in cells if c.arm.name == "dreambooth"]
    images = sum(len(c.images) for c in mine)
    expected = (len(mine) * (10.0 + arm.config.steps * 0.5) + images * 3.0) / 3600
    assert projected_hours(figures, arm, cells) == expected and arm.config.steps == 30


def test_a_rehearsal_measured_elsewhere_projects_another_protocol(tmp_path, isolated_cache):
    import json

    from varbench.rehearsal import rehearse

    measured = tmp_path / "rehearsal.json"
    measured.write_text(json.dumps([{"arm": "textual_inversion", "load_s": 1.0, "fit_s_per_step": 0.1,
                                     "generate_s_per_image": 0.2, "score_s_per_image": 0.01,
                                     "peak_gib": {"fit": 12.5}}]))
    table = rehearse("smoke", RehearsalOptions(measured=measured))
    assert "| textual_inversion | 1.0 | 0.100 | 0.200 | 0.0100 | 12.5 | nan | nan |" in table
    assert not (tmp_path / "results").exists()  # nothing ran
