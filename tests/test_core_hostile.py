"""Hostile input: malformed and adversarial protocol files never crash the loader.

Every input either loads or raises one UserError (a single line naming the file);
through the CLI that is one line on stderr, exit code 2, no traceback.
"""
from __future__ import annotations

import subprocess
import sys

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from varbench.errors import UserError
from varbench.protocol import load_protocol

VALID = {
    "name": "hostile", "version": 1, "data": {"dataset": "smoke", "subjects": "all"},
    "prompts": {"source": "custom", "object": ["a {} here"], "live": ["a {} there"]},
    "images_per_prompt": 2, "arms": [{"method": "toy", "config": {"steps": 3}}],
    "metrics": {"mode": "canonical", "backbones": "tiny"},
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["..", "/etc/passwd", "../../x", "{}", "a {} b", "toy"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def mutate(data, path, value):
    """Replace the value at `path` (a list of keys/indices) in a copy of `data`."""
    if not path:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    key = path[0]
    copy[key] = mutate(copy[key], path[1:], value)
    return copy


PATHS = [["name"], ["version"], ["data"], ["data", "dataset"], ["data", "subjects"], ["prompts"],
         ["prompts", "object"], ["images_per_prompt"], ["arms"], ["arms", 0], ["arms", 0, "method"],
         ["arms", 0, "config"], ["arms", 0, "config", "steps"], ["metrics"], ["metrics", "mode"]]


def check_loads_or_user_error(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_protocol(path)
    except UserError as err:
        assert "\n" not in err.line()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PATHS), values)
def test_mutated_protocols_load_or_fail_cleanly(tmp_path, path, value):
    check_loads_or_user_error(tmp_path, yaml.safe_dump(mutate(VALID, path, value)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text_loads_or_fails_cleanly(tmp_path, text):
    check_loads_or_user_error(tmp_path, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_load_or_fail_cleanly(tmp_path, data):
    path = tmp_path / "p.yaml"
    path.write_bytes(data)
    try:
        load_protocol(path)
    except UserError as err:
        assert "\n" not in err.line()


def test_cli_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\narms: [{method: toy, config: {stpes: 1}}]\n")
    result = subprocess.run([sys.executable, "-m", "varbench", "validate", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'stpes'" in lines[0] and "Traceback" not in result.stderr
