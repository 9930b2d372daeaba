"""Shared test setup: the toy method plugin is importable (tests/ is on sys.path) and
registered through $VARBENCH_PLUGINS, also in CLI subprocesses."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
SHARED_DATA = REPO_DIR.parent / "shared" / "data"

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only add contention
os.environ["VARBENCH_PLUGINS"] = "toy_method"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private varbench cache, so tests never share or pollute ~/.cache/varbench."""
    cache = tmp_path / "varbench-cache"
    monkeypatch.setenv("VARBENCH_CACHE", str(cache))
    return cache
