"""The conformance kit (varbench.conformance, varbench.testing, `varbench check-method`):
the built-in methods and the example plugin keep every rule, and each rule is shown
failing, with a one-line fix, on a method that breaks it (tests/broken_methods.py)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import broken_methods
from broken_methods import BROKEN, Tidy
from conftest import REPO_DIR
from runner_helpers import run_cli
from varbench.cli import app
from varbench.conformance import RULES, parse_config_pairs
from varbench.errors import UserError
from varbench.testing import assert_conforms, check_method, failed_rules


@pytest.mark.parametrize("name", ["arbooth", "dreambooth", "custom_diffusion", "textual_inversion",
                                  "dreambooth_lora", "ip_adapter", "copy_references", "no_fit"])
def test_builtin_methods_keep_every_rule(name):
    results = assert_conforms(name)  # each on its tiny_config: a few seconds on a CPU
    assert [result.rule for result in results] == list(RULES)


def test_example_plugin_keeps_every_rule(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_DIR / "examples" / "varbench-example-method"))
    from varbench_example import ReferenceCopy

    results = {result.rule: result for result in assert_conforms(ReferenceCopy)}
    # It trains nothing: 0 parameters pass because its artifact holds no tensors.
    assert "0 trainable parameters" in results["parameters"].detail


def test_a_tidy_method_keeps_every_rule():
    results = check_method(Tidy)
    assert failed_rules(results) == set(), [r.line() for r in results]
    assert all(result.passed and result.line().startswith("pass  ") for result in results)


@pytest.mark.parametrize("method", list(BROKEN), ids=lambda cls: cls.name)
def test_a_broken_method_fails_exactly_the_rules_it_breaks(method):
    results = check_method(method)
    assert failed_rules(results) == BROKEN[method], [r.line() for r in results]
    for result in results:
        line = result.line()
        assert "\n" not in line and line.split()[1] == result.rule
        if not result.passed:
            assert line.startswith("FAIL  ") and ";" in line  # what broke; how to fix it


def test_every_rule_is_shown_failing():
    assert set().union(*BROKEN.values()) == set(RULES)


def test_failure_lines_say_how_to_fix():
    lines = {cls: {r.rule: r.line() for r in check_method(cls) if not r.passed}
             for cls in (broken_methods.SharedNoise, broken_methods.GoesOnAfterNaN, broken_methods.WrapsNaN)}
    assert "own torch.Generator seeded with seeds[i]" in lines[broken_methods.SharedNoise]["batch"]
    assert "called ctx.fit_step again" in lines[broken_methods.GoesOnAfterNaN]["nan-loss"]  # stopped, never hangs
    assert "let it propagate unchanged" in lines[broken_methods.WrapsNaN]["nan-loss"]


def test_assert_conforms_names_each_broken_rule_and_keeps_the_cause():
    with pytest.raises(AssertionError) as caught:
        assert_conforms(broken_methods.Silent)
    message = str(caught.value)
    assert message.splitlines()[0] == "broken_silent breaks 2 of 6 rules:"
    assert [line.split()[1] for line in message.splitlines()[1:]] == ["fit-steps", "nan-loss"]


def test_config_overrides_the_tiny_config():
    results = {r.rule: r for r in check_method(Tidy, {"resolution": 24, "steps": 2})}
    assert "24x24" in results["images"].detail and "2 steps" in results["fit-steps"].detail
    with pytest.raises(UserError, match="unknown key 'stpes'.*Did you mean 'steps'"):
        check_method(Tidy, {"stpes": 2})
    with pytest.raises(UserError, match="not a varbench Method subclass"):
        check_method(object)


def test_config_pairs_are_read_as_yaml_values():
    assert parse_config_pairs(["steps=2", "revision=null", "layers=[ca, ffn]", "name=x=y"]) == {
        "steps": 2, "revision": None, "layers": ["ca", "ffn"], "name": "x=y"}
    for bad in (["steps"], ["=2"], ["steps=1", "steps=2"]):
        with pytest.raises(UserError, match="--config"):
            parse_config_pairs(bad)


def test_cli_prints_one_line_per_rule_and_exits_by_the_verdict():
    runner = CliRunner()  # in-process: a second interpreter would import torch again
    good = runner.invoke(app, ["check-method", "tidy", "--config", "steps=2"])
    assert good.exit_code == 0, good.output
    lines = good.output.splitlines()
    assert [line.split()[:2] for line in lines[:6]] == [["pass", rule] for rule in RULES]
    assert lines[6].startswith("tidy: all 6 rules pass in ")
    bad = runner.invoke(app, ["check-method", "broken_batch"])
    assert bad.exit_code == 1, bad.output
    assert [line.split()[0] for line in bad.output.splitlines()[:6]] == ["FAIL", "pass", "pass", "pass", "pass", "pass"]
    assert "broken_batch: 1 of 6 rules fail (batch)" in bad.output


def test_cli_unknown_method_is_one_line_with_a_suggestion():
    result = run_cli("check-method", "dreambooht", env_extra={"VARBENCH_PLUGINS": ""})  # no torch to import
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown method 'dreambooht'" in lines[0] and "Did you mean 'dreambooth'" in lines[0]


def test_copy_references_returns_the_subjects_photos_whatever_the_prompt(tmp_path):
    import numpy as np
    import torch

    from baselines.synthetic import synthetic_subject
    from varbench.method import CellContext
    from varbench.methods.copy_references import CopyReferences, CopyReferencesConfig, square

    subject = synthetic_subject(tmp_path / "subject", count=3, size=80)
    ctx = CellContext(device=torch.device("cpu"), fit_seed=0, workdir=tmp_path, cache_dir=tmp_path)
    model = CopyReferences(CopyReferencesConfig(resolution=32)).fit(None, subject, ctx)
    images = model.generate(["a dog in the snow", "a dog on the moon", "x"], [0, 4, 2])
    expected = [square(image, 32) for image in subject.load_images()]
    assert [np.asarray(i).tolist() for i in images] == [np.asarray(expected[k]).tolist() for k in (0, 1, 2)]
