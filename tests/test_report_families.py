"""Method families: read from the installed method classes (plugins included), used to
group sample-grid rows, never from a list of method names in the report code."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import varbench.registry as registry
from varbench.method import Method
from varbench.report.families import family_styles, method_family
from varbench.report.grids import by_family
from varbench.report.results import load_results
from varbench.report.section import build_views
from varbench.report.spec import ReportSpec
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run
from varbench.schema import from_dict

REPO = Path(__file__).resolve().parent.parent


@dataclass
class FlowConfig:
    steps: int = 1


class FlowPlugin(Method):
    """A plugin of a family no built-in method has (never instantiated here)."""

    name, version, Config, family = "report_test_flow", "1", FlowConfig, "flow matching"


def test_families_come_from_the_method_classes():
    assert method_family("arbooth") == "autoregressive"
    assert {method_family(name) for name in ("dreambooth", "custom_diffusion", "textual_inversion")} == {"diffusion"}
    assert method_family("no_such_method_anywhere") == "other"  # results from elsewhere still render
    assert Method.family == "other"


def test_the_example_plugin_declares_its_family(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "varbench-example-method"))
    monkeypatch.delitem(sys.modules, "varbench_example", raising=False)
    from varbench_example import ReferenceCopy

    assert ReferenceCopy.family == "reference"


def test_grid_rows_are_grouped_by_family_plugins_included(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(registry._decorated, FlowPlugin.name, FlowPlugin)
    subjects = [SyntheticSubject("dog", "dog", live=True)]
    for arm, method in (("a-arbooth", "arbooth"), ("b-dreambooth", "dreambooth"), ("c-flow", FlowPlugin.name),
                        ("d-arbooth", "arbooth"), ("e-ti", "textual_inversion")):
        write_synthetic_run(tmp_path, "smoke", SyntheticArm(arm, method, {"dino": 0.5}), subjects)
    spec = from_dict(ReportSpec, {"sections": [{"name": "s", "protocols": ["smoke"]}]}, "spec")
    view = build_views(spec, load_results(tmp_path))[0][0]
    assert [row.family for row in view.rows] == ["autoregressive", "diffusion", "flow matching", "autoregressive",
                                                 "diffusion"]
    assert [row.arm for row in by_family(view.rows)] == ["a-arbooth", "d-arbooth", "b-dreambooth", "e-ti", "c-flow"]
    styles = family_styles([row.family for row in view.rows])
    assert list(styles) == ["autoregressive", "diffusion", "flow matching"]
    assert len({marker for marker, _ in styles.values()}) == 3
