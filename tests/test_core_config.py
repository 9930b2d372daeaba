from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from varbench.schema import from_dict, to_dict
from varbench.errors import UserError


@dataclass
class Inner:
    lr: float = 1e-4
    mode: Literal["soft", "hard", "off"] = "soft"


@dataclass
class Outer:
    steps: int = 10
    name: str | None = None
    layers: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float] = field(default_factory=dict)
    pair: tuple[int, int] = (0, 1)


def test_builds_nested_dataclasses_and_converts_ints_to_floats():
    config = from_dict(Outer, {"steps": 3, "inner": {"lr": 1, "mode": "hard"}, "layers": ["ca"],
                               "weights": {"a": 2}, "pair": [2, 5]}, "x.yaml")
    assert config == Outer(steps=3, inner=Inner(lr=1.0, mode="hard"), layers=["ca"], weights={"a": 2.0}, pair=(2, 5))
    assert isinstance(config.inner.lr, float)
    assert to_dict(config) == {"steps": 3, "name": None, "layers": ["ca"], "inner": {"lr": 1.0, "mode": "hard"},
                               "weights": {"a": 2.0}, "pair": [2, 5]}


def test_unknown_key_names_path_file_and_suggests():
    with pytest.raises(UserError) as err:
        from_dict(Outer, {"inner": {"lrr": 0.1}}, "protocols/x.yaml", "arms[0].config")
    line = err.value.line()
    assert "unknown key 'lrr' at arms[0].config.inner" in line
    assert "protocols/x.yaml" in line and "Did you mean 'lr'?" in line


@pytest.mark.parametrize("data, expected", [
    ({"steps": "ten"}, "steps should be int, got str 'ten'"),
    ({"steps": True}, "steps should be int, got bool True"),
    ({"layers": "ca"}, "layers should be a list, got str 'ca'"),
    ({"layers": [1]}, "layers[0] should be str, got int 1"),
    ({"inner": {"mode": "sofft"}}, "inner.mode is 'sofft', expected one of 'soft', 'hard', 'off'"),
    ({"pair": [1, 2, 3]}, "pair should be a list of 2 items"),
    ({"inner": 5}, "inner should be a mapping, got int 5"),
])
def test_wrong_types_are_clear_errors(data, expected):
    with pytest.raises(UserError) as err:
        from_dict(Outer, data, "f.yaml")
    assert expected in err.value.line()


def test_optional_accepts_none_and_value():
    assert from_dict(Outer, {"name": None}, "f").name is None
    assert from_dict(Outer, {"name": "a"}, "f").name == "a"
