from __future__ import annotations

import textwrap

import pytest

from varbench.errors import UserError
from varbench.protocol import load_protocol

BASE = """
name: toyproto
version: 1
data: {dataset: smoke}
prompts: {source: custom, object: ["a {} in the snow", "a {} on a table"], live: ["a {} running"]}
images_per_prompt: 2
arms:
  - {method: toy, config: {steps: 5}}
  - {method: toy, name: toy-slow, config: {steps: 9, lr: 0.1}}
"""


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_arms_with_typed_configs_and_distinct_run_ids(tmp_path):
    protocol = load_protocol(write(tmp_path, BASE))
    assert [a.name for a in protocol.arms] == ["toy", "toy-slow"]
    assert protocol.arms[1].config.steps == 9 and protocol.arms[1].config.lr == 0.1
    assert protocol.arms[0].config.lr == 0.2  # the method's default
    ids = [a.run_id for a in protocol.arms]
    assert ids[0].startswith("toy-") and len(set(ids)) == 2


def test_run_id_changes_with_results_relevant_fields_only(tmp_path):
    base = load_protocol(write(tmp_path, BASE)).arms[0].run_id
    assert load_protocol(write(tmp_path, BASE + "execution: {batch_size: 7}\n", "b.yaml")).arms[0].run_id == base
    assert load_protocol(write(tmp_path, BASE.replace("version: 1", "version: 2"), "c.yaml")).arms[0].run_id != base
    assert load_protocol(write(tmp_path, BASE.replace("steps: 5", "steps: 6"), "d.yaml")).arms[0].run_id != base
    assert load_protocol(write(tmp_path, BASE + "seeds: {base: 3}\n", "e.yaml")).arms[0].run_id != base


def test_include_merges_and_local_keys_win(tmp_path):
    write(tmp_path, "images_per_prompt: 8\nmetrics: {mode: kosmosg, backbones: tiny}\n", "common.yaml")
    protocol = load_protocol(write(tmp_path, "include: [common.yaml]\n" + BASE + "metrics: {backbones: real}\n"))
    assert protocol.spec.images_per_prompt == 2
    assert protocol.spec.metrics.mode == "kosmosg" and protocol.spec.metrics.backbones == "real"


def test_protocol_resolution_overrides_arm_configs(tmp_path):
    protocol = load_protocol(write(tmp_path, BASE + "resolution: 48\n"))
    assert {a.config.resolution for a in protocol.arms} == {48}


@pytest.mark.parametrize("edit, message", [
    (lambda t: t + "imags_per_prompt: 3\n", "unknown key 'imags_per_prompt' at top level"),
    (lambda t: t.replace("steps: 5", "stpes: 5"), "unknown key 'stpes' at arms[0].config"),
    (lambda t: t.replace("steps: 5", "steps: five"), "arms[0].config.steps should be int"),
    (lambda t: t.replace("method: toy,", "method: tyo,"), "unknown method 'tyo'"),
    (lambda t: t.replace("name: toy-slow", "name: toy"), "arm name 'toy' used twice"),
    (lambda t: t.replace("name: toy-slow", "name: ../escape"), "arm name '../escape' is not allowed"),
    (lambda t: t.replace("dataset: smoke", "dataset: dreambenc"), "data.dataset is 'dreambenc'"),
    (lambda t: t.replace("a {} running", "a dog running"), "must contain exactly one '{}'"),
    (lambda t: t.replace("images_per_prompt: 2", "images_per_prompt: 0"), "images_per_prompt must be at least 1"),
    (lambda t: t.replace("version: 1\n", ""), "missing required key 'version'"),
    (lambda t: t + "arms: [\n", "malformed YAML"),
    (lambda t: "- just\n- a list\n", "a protocol must be a YAML mapping"),
    (lambda t: "include: [nope.yaml]\n" + t, "included file 'nope.yaml' not found"),
])
def test_bad_protocols_give_one_clear_line(tmp_path, edit, message):
    path = write(tmp_path, edit(BASE))
    with pytest.raises(UserError) as err:
        load_protocol(path)
    line = err.value.line()
    assert message in line
    assert "\n" not in line and str(path) in line or "unknown method" in line


def test_typo_in_method_suggests(tmp_path):
    with pytest.raises(UserError, match="Did you mean 'toy'"):
        load_protocol(write(tmp_path, BASE.replace("method: toy,", "method: tooy,")))


def test_include_cycle_is_reported(tmp_path):
    write(tmp_path, "include: [b.yaml]\n", "a.yaml")
    write(tmp_path, "include: [a.yaml]\n", "b.yaml")
    with pytest.raises(UserError, match="include cycle"):
        load_protocol(tmp_path / "a.yaml")


def test_unknown_protocol_name_suggests():
    with pytest.raises(UserError, match="unknown protocol 'smok'"):
        load_protocol("smok")
