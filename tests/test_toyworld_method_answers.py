"""The method-level known answers (varbench.toyworld.method_answers) on hand-made scores:
each verdict follows from the numbers, and a missing arm is "not measured", never "holds"."""
from __future__ import annotations

import pandas as pd

from varbench.toyworld.method_answers import method_answers, to_markdown

SUBJECTS = [f"s{k}" for k in range(8)]


def rows(run_id: str, metric: str, values: list[float]) -> list[dict]:
    return [{"run_id": run_id, "subject": subject, "kind": "eval", "prompt_index": 0, "sample_index": 0,
             "image": "x.png", "metric": metric, "mode": "canonical", "value": value}
            for subject, value in zip(SUBJECTS, values)]


def scores(tuned_dino: list[float], with_prior: list[float], without_prior: list[float]) -> pd.DataFrame:
    spread = [0.0, 0.01, -0.01, 0.02, -0.02, 0.005, -0.005, 0.0]
    table = (rows("floor", "dino", [0.2 + d for d in spread]) + rows("ceiling", "dino", [0.95 + d for d in spread])
             + rows("db", "dino", tuned_dino) + rows("db", "pres", with_prior) + rows("dbnp", "dino", tuned_dino)
             + rows("dbnp", "pres", without_prior))
    return pd.DataFrame(table)


ARMS = {"no_fit": "floor", "reference_copy": "ceiling", "dreambooth": "db", "dreambooth-no-prior": "dbnp"}


def test_a_tuned_arm_clearly_above_the_floor_holds_and_one_inside_its_interval_does_not():
    clear = method_answers(scores([0.5] * 8, [0.3] * 8, [0.5] * 8), ARMS)
    assert [a.holds for a in clear] == [True, True, True]
    inside = method_answers(scores([0.2, 0.21, 0.19, 0.2, 0.2, 0.6, 0.2, 0.2], [0.3] * 8, [0.5] * 8), ARMS)
    assert inside[0].holds is False and "does not hold" in to_markdown(inside)


def test_a_tuned_arm_at_the_ceiling_does_not_hold():
    answers = method_answers(scores([0.99] * 8, [0.3] * 8, [0.5] * 8), ARMS)
    assert answers[0].holds is False


def test_the_prior_effect_needs_the_lower_pres_on_the_same_subjects():
    answers = method_answers(scores([0.5] * 8, [0.6] * 8, [0.5] * 8), ARMS)
    effect = [a for a in answers if a.claim.startswith("prior preservation")][0]
    assert effect.holds is False and "on 8 subjects" in effect.measured


def test_an_effect_with_a_missing_arm_is_not_measured():
    arms = {key: value for key, value in ARMS.items() if key != "dreambooth-no-prior"}
    answers = method_answers(scores([0.5] * 8, [0.3] * 8, [0.5] * 8), arms)
    effect = [a for a in answers if a.claim.startswith("prior preservation")][0]
    assert effect.holds is None and "not measured" in to_markdown(answers)


def test_an_arm_without_finished_cells_is_not_measured():
    table = scores([0.5] * 8, [0.3] * 8, [0.5] * 8)
    answers = method_answers(table[table["run_id"] != "ceiling"], ARMS)
    assert answers[0].holds is None and "no finished cells of reference_copy" in answers[0].measured


def test_answers_of_an_empty_results_root_is_one_clear_line(tmp_path):
    from runner_helpers import run_cli

    done = run_cli("toyworld", "answers", "--results", str(tmp_path))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no finished cells of 'toyworld'" in done.stderr and "varbench run --protocol toyworld" in done.stderr


def test_retrained_generator_weights_make_another_run(tmp_path, monkeypatch):
    """The arm config says only "toyworld"; the run id must still change with the toy
    generator's weights, and only for the arms that use them."""
    import shutil
    from pathlib import Path

    from varbench.plan import RunOptions, prepare
    from varbench.toyworld.backbones import ENV_VAR, MANIFEST, WEIGHTS_DIR

    def run_ids() -> dict[str, str]:
        _, cells = prepare("toyworld", RunOptions(results=Path("unused"), dry_run=True))
        return {cell.arm.name: cell.arm.run_id for cell in cells}

    shipped = run_ids()
    shutil.copytree(WEIGHTS_DIR, tmp_path, dirs_exist_ok=True)
    manifest = tmp_path / MANIFEST
    lines = [("0" * 64 + line[64:]) if line.split()[-1].startswith("sd/unet/") else line
             for line in manifest.read_text().splitlines()]
    manifest.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    retrained = run_ids()
    changed = {arm for arm in shipped if shipped[arm] != retrained[arm]}
    assert changed == {"dreambooth", "dreambooth-no-prior", "custom_diffusion", "textual_inversion", "no_fit"}


def test_one_subject_is_too_few_for_an_interval_not_a_failure():
    table = scores([0.5] * 8, [0.3] * 8, [0.5] * 8)
    answers = method_answers(table[table["subject"] == "s0"], ARMS)
    assert answers[0].holds is None and "too few subjects" in answers[0].measured


def test_intervals_follow_the_statistics_settings_they_are_given():
    """The report passes its spec's statistics (confidence, resamples, seed): an arm whose
    95% interval overlaps the floor's does not hold at 95% but clears it at 50%."""
    from varbench.report.spec import StatisticsSpec

    close = [0.18, 0.25, 0.19, 0.24, 0.20, 0.23, 0.21, 0.22]  # mean 0.215; the floor is 0.2 +- 0.02
    wide = method_answers(scores(close, [0.3] * 8, [0.5] * 8), ARMS)
    narrow = method_answers(scores(close, [0.3] * 8, [0.5] * 8), ARMS, statistics=StatisticsSpec(confidence=0.5))
    assert "95% intervals" in wide[0].claim and "50% intervals" in narrow[0].claim
    assert wide[0].holds is False and narrow[0].holds is True
