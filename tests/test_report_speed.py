"""The report's "Speed and cost" section appears when the results root holds bench output."""
from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from varbench.bench.harness import row
from varbench.fileio import write_json
from varbench.report import render_report
from varbench.report.synthetic_results import SyntheticArm, SyntheticSubject, write_synthetic_run

pytestmark = pytest.mark.slow


def test_speed_and_cost_tables_render(tmp_path, monkeypatch):
    monkeypatch.setenv("VARBENCH_DREAMBENCH_DIR", str(SHARED_DATA / "dreambench"))
    results = tmp_path / "results"
    arm = SyntheticArm("toy", "toy", {"dino": 0.4, "clip_i": 0.6, "clip_t": 0.2})
    write_synthetic_run(results, "smoke", arm, [SyntheticSubject("red_robot", "toy robot", live=False)])
    rows = [row("arbooth", "arbooth iteration", 3.3, "s/iteration", 1.0e15, 7.8e14, 37.7),
            row("infinity", "infinity sampling@4", 0.36, "s/image", 1.15e14, 7.8e14, 35.0),
            row("metrics", "scoring", 1000.0, "images/s", 1.8e10, 7.8e14)]
    write_json(results / "bench" / "bench.json", {"device": "NVIDIA H100 80GB HBM3", "note": "random-init weights",
                                                  "rows": rows})
    index = render_report(results, tmp_path / "out", None)
    speed = (tmp_path / "out" / "tables" / "speed.md").read_text()
    assert "| arbooth iteration | 3.3 | s/iteration | 1.28 | 39% | 37.7 | 3 | no |" in speed
    cost = (tmp_path / "out" / "tables" / "cost.md").read_text()
    arbooth_hours = 30 * 500 * 3.3 / 3600 + 30 * 104 * 0.36 / 3600 + 30 * 104 / 1000 / 3600
    assert f"| dreambench | arbooth | 13.75 | 0.31 | 0.00 | {arbooth_hours:.2f} |" in cost
    page = index.read_text()
    assert 'id="speed"' in page and "Projected cost of whole protocols" in page
