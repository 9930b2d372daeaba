"""Light when nothing is to be done: planning, status and a rerun of a finished run import
no model library (diffusers, transformers, open_clip, timm, torchvision).
"""
from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import TESTS_DIR
from runner_helpers import write_protocol
from varbench.migrate import migrate_results

HEAVY = ("diffusers", "transformers", "open_clip", "timm", "torchvision")
SCRIPT = """
import sys
from pathlib import Path
from varbench.runner import RunOptions, run_protocol
from varbench.status import print_status
code = run_protocol({protocol!r}, RunOptions(results=Path({results!r}), subjects={subjects!r}, dry_run={dry_run}))
print_status(Path({results!r}))
print("LOADED", sorted(m for m in {heavy!r} if m in sys.modules), "EXIT", code)
"""


def loaded_after(protocol: str, results: str, subjects: list[str] | None, dry_run: bool) -> str:
    script = SCRIPT.format(protocol=protocol, results=results, subjects=subjects, dry_run=dry_run, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return out[out.index("LOADED"):].strip()


def test_planning_the_smoke_protocol_loads_no_model_library(tmp_path):
    """Every built-in method resolved, its config checked, its cells planned: no model library."""
    assert loaded_after("smoke", str(tmp_path / "r"), None, dry_run=True) == "LOADED [] EXIT 0"


def test_a_rerun_of_a_finished_run_loads_no_model_library(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(TESTS_DIR / "data" / "results-layout-1", results)
    migrate_results(results)  # a finished run, as the toy protocol below would write it
    protocol = write_protocol(tmp_path, arm_config="{steps: 3}")
    assert loaded_after(str(protocol), str(results), ["red_robot", "spotted_dog"], dry_run=False) == "LOADED [] EXIT 0"
