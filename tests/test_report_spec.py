"""Report specs: the shipped YAMLs load, typos and bad values are one clear UserError."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from varbench.errors import UserError
from varbench.report.spec import available_specs, find_spec, load_spec

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_specs_load_and_cover_main_ablations_and_smoke():
    assert {"paper", "smoke"} <= set(available_specs())
    paper = load_spec(None)  # the default is report/paper.yaml
    assert find_spec(None) == REPO / "report" / "paper.yaml"
    protocols = {name for section in paper.sections for name in section.protocols}
    for name in ("dreambench", "vico", "smoke", "ablation_layers", "ablation_distill", "ablation_scale_weights",
                 "ablation_layers_tiny", "ablation_distill_tiny", "ablation_scale_weights_tiny"):
        assert name in protocols
    smoke = next(s for s in paper.sections if s.name == "smoke")
    assert smoke.columns == ["dino", "clip_i", "clip_t", "fit_seconds", "seconds_per_image", "trainable_parameters"]
    assert smoke.figures and smoke.tables[0] == "comparison"
    assert [s.name for s in load_spec("smoke").sections] == ["smoke"]


def test_unknown_key_names_the_path_and_suggests_the_fix(tmp_path: Path):
    path = write(tmp_path, "sections:\n  - name: main\n    protocols: [dreambench]\n    colums: [dino]\n")
    with pytest.raises(UserError) as caught:
        load_spec(path)
    assert "unknown key 'colums' at sections[0]" in caught.value.line()
    assert "Did you mean 'columns'?" in caught.value.line() and str(path) in caught.value.line()


def test_bad_values_are_clear_errors(tmp_path: Path):
    cases = {
        "sections:\n  - {name: main, protocols: [x], tables: [comparision]}\n":
            "sections[0].tables[0] is 'comparision'",
        "sections:\n  - {name: main, protocols: [x], columns: [dino, speed]}\n": "sections[0].columns[1] is 'speed'",
        "sections:\n  - {name: a, protocols: [x]}\n  - {name: a, protocols: [y]}\n": "section name 'a' used twice",
        "sections:\n  - {name: ../up, protocols: [x]}\n": "section name '../up' is not allowed",
        "sections:\n  - {name: a, protocols: []}\n": "section names no protocols",
        "statistics: {confidence: 95}\nsections:\n  - {name: a, protocols: [x]}\n":
            "confidence must be between 0 and 1",
        "sections:\n  - {name: a, protocols: [x], grids: {prompts: []}}\n": "grids.prompts is empty",
        "sections:\n  - {name: a, protocols: [x], arms: [{arm: b}, {arm: b}]}\n": "arm 'b' listed twice",
        "sections: [\n": "malformed YAML",
    }
    for text, expected in cases.items():
        with pytest.raises(UserError) as caught:
            load_spec(write(tmp_path, text))
        assert expected in caught.value.line(), (text, caught.value.line())


def test_unknown_spec_name_lists_the_available_ones():
    with pytest.raises(UserError) as caught:
        find_spec("papr")
    assert "unknown report spec 'papr'" in caught.value.line() and "Did you mean 'paper'?" in caught.value.line()
    with pytest.raises(UserError, match="report spec not found"):
        find_spec("nowhere/spec.yaml")


def test_importing_the_report_package_loads_no_heavy_modules():
    code = ("import sys, varbench.report as r; heavy = {'pandas', 'matplotlib', 'scipy', 'PIL', 'torch'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
