"""Hostile protocols: what `varbench validate` accepts, a run can do.

Every value either fails at load with one short UserError line (naming the file, quoting
at most a short sanitized excerpt) or is safe for the whole run: planning never crashes
or explodes, run.json never holds a NaN, and YAML loading stays fast whatever aliases,
nesting and includes the file uses.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from varbench.errors import UserError
from varbench.fileio import write_json
from varbench.plan import dataset_of, plan_cells
from varbench.protocol import load_protocol
from varbench.store import RunStore, check_name

VALID = {
    "name": "hostile", "version": 1, "data": {"dataset": "smoke", "subjects": "all"},
    "prompts": {"source": "custom", "object": ["a {} here"], "live": ["a {} there"]},
    "images_per_prompt": 2, "arms": [{"method": "toy", "config": {"steps": 3}}],
    "metrics": {"mode": "canonical", "backbones": "tiny"},
}
MAX_IMAGES_PER_CELL = 100_000  # the bound the loader promises (varbench.protocol)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def with_value(path: list, value) -> dict:
    """A copy of VALID with `value` at `path` (creating mappings on the way)."""
    data = yaml.safe_load(yaml.safe_dump(VALID))
    target = data
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
    target[path[-1]] = value
    return data


def write(tmp_path, data, name="p.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(path) -> str:
    """The one line of the UserError that loading `path` raises."""
    with pytest.raises(UserError) as err:
        load_protocol(path)
    line = err.value.line()
    assert "\n" not in line and all(c.isprintable() for c in line), line
    return line


def plan_everything(protocol) -> None:
    """Plan every image of every cell, as `varbench run --dry-run` does."""
    cells = plan_cells(protocol, dataset_of(protocol))
    for cell in cells:
        spec = protocol.spec
        planned = len(cell.templates) * spec.images_per_prompt + spec.metrics.pres_images
        assert planned <= MAX_IMAGES_PER_CELL  # checked before planning so that this never hangs
        assert len(cell.images) == planned


def finite_everywhere(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_everywhere(v) for v in value)
    return True


# --- numbers ---------------------------------------------------------------------------------
NUMERIC_PATHS = [["version"], ["images_per_prompt"], ["batch_size"], ["resolution"], ["seeds", "base"],
                 ["prompts", "limit"], ["metrics", "pres_images"], ["metrics", "batch_size"],
                 ["metrics", "reference_index"], ["slurm", "gpus_per_job"], ["slurm", "cpus_per_gpu"],
                 ["slurm", "mem_gb"], ["slurm", "time_minutes"], ["slurm", "max_parallel"],
                 ["arms", 0, "config", "lr"], ["arms", 0, "config", "steps"], ["arms", 0, "config", "step_seconds"]]
numbers = st.one_of(st.integers(-10, 10), st.integers(-2**80, 2**80), st.sampled_from([10**9, 2**63, 2**63 - 1, 10**400]),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf]))


@FAST
@given(st.sampled_from(NUMERIC_PATHS), numbers)
def test_every_number_loads_within_bounds_or_is_one_user_error(tmp_path, path, value):
    """A number either fails at load, or the run can plan it and store its identity."""
    try:
        protocol = load_protocol(write(tmp_path, with_value(path, value)))
    except UserError as err:
        assert "\n" not in err.line() and len(err.line()) < 400
        return
    plan_everything(protocol)
    for arm in protocol.arms:
        assert finite_everywhere(arm.identity())
        RunStore(tmp_path / "results", protocol.name, arm.run_id).write_identity(arm.identity())
        RunStore(tmp_path / "results", protocol.name, arm.run_id).write_identity(arm.identity())


@pytest.mark.parametrize("path, value, message", [
    (["images_per_prompt"], 1_000_000_000, "images_per_prompt must be at most 1000"),
    (["arms", 0, "config", "lr"], math.nan, "arms[0].config.lr must be a finite number"),
    (["arms", 0, "config", "lr"], math.inf, "arms[0].config.lr must be a finite number"),
    (["arms", 0, "config", "lr"], 10**400, "arms[0].config.lr must be at most"),
    (["seeds", "base"], -1, "seeds.base must be at least 0"),
    (["seeds", "base"], 2**63, "seeds.base must be at most"),
    (["execution", "metric_batch_size"], 10**9, "metric_batch_size must be at most"),
    (["slurm", "time_minutes"], -5, "slurm.time_minutes must be at least 1"),
])
def test_out_of_range_numbers_name_the_key_and_file(tmp_path, path, value, message):
    path_file = write(tmp_path, with_value(path, value))
    line = load_error(path_file)
    assert message in line and str(path_file) in line


def test_too_many_planned_images_per_cell_are_refused_at_load(tmp_path):
    prompts = {"source": "custom", "object": [f"a {{}} number {i}" for i in range(500)], "live": ["a {}"]}
    line = load_error(write(tmp_path, {**with_value(["prompts"], prompts), "images_per_prompt": 1000}))
    assert "more than 100000" in line


def test_sample_index_seeds_stay_valid_seeds(tmp_path):
    data = with_value(["seeds"], {"base": 2**63 - 1, "scheme": "sample_index"})
    assert "seeds.base" in load_error(write(tmp_path, data))


def test_legacy_nan_run_json_is_not_a_hash_collision(tmp_path):
    """run.json written before NaN was refused: the same identity must still match it."""
    identity = {"arm": "toy", "config": {"lr": math.nan, "betas": (0.9, 0.99)}}
    store = RunStore(tmp_path, "toy", "toy-0123456789")
    write_json(store.dir / "run.json", identity)
    store.write_identity(identity)  # the old comparison of dicts saw nan != nan: a "collision"
    with pytest.raises(UserError, match="different run"):
        store.write_identity({**identity, "arm": "other"})


# --- templates -------------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["a {} {", "{0}", "{x}", "a {}{}", "{!r}", "a {:>9}", "} {}", "a {0[x]}"])
def test_templates_str_format_would_interpret_are_refused(tmp_path, template):
    path = write(tmp_path, with_value(["prompts", "object"], [template]))
    line = load_error(path)
    assert "exactly one '{}'" in line and "prompts.object[0]" in line


def test_only_escaped_braces_may_join_the_subject_place(tmp_path):
    protocol = load_protocol(write(tmp_path, with_value(["prompts", "object"], ["a {{logo}} on a {}"])))
    cells = [c for c in plan_cells(protocol, dataset_of(protocol)) if not c.subject.live]
    assert cells and cells[0].images[0].clip_text == f"a {{logo}} on a {cells[0].subject.class_noun}"
    load_error(write(tmp_path, with_value(["prompts", "object"], ["a {logo} on a {}"]), "stray.yaml"))


templates = st.builds(lambda before, after: before + "{}" + after, st.text(alphabet="{}a !:r0x[]", max_size=4),
                      st.text(alphabet="{}a !:r0x[]", max_size=4))


@FAST
@given(st.one_of(templates, st.text(alphabet="{}a !:r0x[].", max_size=8)))
def test_generated_templates_fail_at_load_or_plan_cleanly(tmp_path, template):
    try:
        protocol = load_protocol(write(tmp_path, with_value(["prompts", "object"], [template])))
    except UserError as err:
        assert "\n" not in err.line()
        return
    plan_everything(protocol)  # no ValueError/IndexError/KeyError from str.format


# --- names -------------------------------------------------------------------------------------
def test_arm_names_must_match_in_full(tmp_path):
    for name in ["toy\n", "toy\r", "toy\x00", "toy\x1b[31m", "x" * 200]:  # "$" let a final "\n" pass
        with pytest.raises(UserError):
            check_name(name, "arm", "here")
        line = load_error(write(tmp_path, with_value(["arms", 0, "name"], name)))
        assert "arm name" in line and len(line) < 300


@FAST
@given(st.sampled_from([["name"], ["arms", 0, "name"], ["description"], ["data", "dataset"], ["report"],
                        ["arms", 0, "config", "fail_on"], ["prompts", "object"]]),
       st.one_of(st.text(min_size=300, max_size=2000), st.lists(st.text(min_size=100), min_size=5, max_size=8)))
def test_errors_quote_only_a_short_printable_excerpt(tmp_path, path, value):
    try:
        load_protocol(write(tmp_path, with_value(path, value)))
    except UserError as err:
        line = err.line()
        assert len(line) < 400 + len(str(tmp_path)), line
        assert all(c.isprintable() for c in line)


# --- YAML budgets ------------------------------------------------------------------------------
def billion_laughs() -> str:
    """Ten anchors, each nine aliases of the one before: 5 * 9**9 strings once expanded."""
    anchors = ['&a0 ["lol", "lol", "lol", "lol", "lol"]']
    anchors += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "name: laughs\nversion: 1\narms: [{method: toy}]\ndescription: [" + ", ".join(anchors) + "]\n"


def test_billion_laughs_fails_fast_with_one_line(tmp_path):
    path = write(tmp_path, billion_laughs())
    result = subprocess.run([sys.executable, "-m", "varbench", "validate", str(path)], capture_output=True,
                            text=True, timeout=20)  # the old loader never finished
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "aliases are expanded" in result.stderr
    start = time.perf_counter()
    load_error(path)
    assert time.perf_counter() - start < 2


def test_an_anchor_containing_its_own_alias_is_refused(tmp_path):
    assert "alias" in load_error(write(tmp_path, "name: x\nversion: 1\narms: [{method: toy}]\ndescription: &a [*a]\n"))


def test_deep_nesting_is_one_user_error_not_a_recursion_error(tmp_path):
    text = "name: x\nversion: 1\narms: [{method: toy}]\ndescription: " + "[" * 10_000 + "]" * 10_000 + "\n"
    assert "nested more than" in load_error(write(tmp_path, text))


def test_alias_chains_cannot_nest_deeper_than_the_limit(tmp_path):
    lines = ["name: x", "version: 1", "arms: [{method: toy}]", "l0: &l0 " + "[" * 20 + "]" * 20]
    lines += [f"l{i}: &l{i} " + "[" * 20 + f"*l{i - 1}" + "]" * 20 for i in range(1, 6)]
    assert "nested more than" in load_error(write(tmp_path, "\n".join(lines) + "\ndescription: *l5\n"))


def test_include_fan_out_is_bounded(tmp_path):
    for level in range(1, 7):  # each file includes the next one 10 times: 10**6 reads unbounded
        write(tmp_path, "include: [" + ", ".join([f"f{level + 1}.yaml"] * 10) + "]\n", f"f{level}.yaml")
    write(tmp_path, "images_per_prompt: 2\n", "f7.yaml")
    path = write(tmp_path, "include: [f1.yaml]\n" + yaml.safe_dump(VALID), "top.yaml")
    start = time.perf_counter()
    assert "files through its includes" in load_error(path)
    assert time.perf_counter() - start < 2


def test_include_depth_is_bounded(tmp_path):
    for level in range(1, 13):  # a chain of 12 distinct files
        write(tmp_path, f"include: [c{level + 1}.yaml]\n", f"c{level}.yaml")
    write(tmp_path, "images_per_prompt: 2\n", "c13.yaml")
    assert "includes nested more than" in load_error(write(tmp_path, "include: [c1.yaml]\n" + yaml.safe_dump(VALID)))


def test_files_over_one_mib_are_refused(tmp_path):
    path = write(tmp_path, {**VALID, "description": "x" * (2**20 + 10)})
    assert "larger than 1 MiB" in load_error(path)


@pytest.mark.parametrize("content, name", [
    ("name: [SECRET-TOKEN-123]\n", "secret.txt"),  # not YAML by name: never read
    ("SECRET-TOKEN-123: hunter2\napi_key: SECRET-TOKEN-123\n", "secret.yaml"),  # no protocol key
])
def test_included_non_protocol_files_are_not_quoted(tmp_path, content, name):
    (tmp_path / name).write_text(content)
    line = load_error(write(tmp_path, {**VALID, "include": [name]}))
    assert "SECRET" not in line and "hunter2" not in line


@pytest.mark.parametrize("text", ["description: 2020-13-45\n", "description: " + "9" * 5000 + "\n"])
def test_values_yaml_cannot_construct_are_one_user_error(tmp_path, text):
    assert "malformed YAML" in load_error(write(tmp_path, yaml.safe_dump(VALID) + text))
