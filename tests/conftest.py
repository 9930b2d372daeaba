"""Shared test setup: the toy method plugin is importable (tests/ is on sys.path) and
registered through $VARBENCH_PLUGINS, also in CLI subprocesses."""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
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


# The runner calls gc.collect() after every step of every cell (worker._free_memory). In the
# pytest process that is a full traversal of every tracked object of every module imported
# so far (torch, diffusers, transformers...: ~0.4 s a call, ~300 calls in the suite). Before
# each test, once the long-lived objects outnumber _FREEZE_ABOVE, they are collected once
# and frozen (gc.freeze: still alive and refcounted, only no longer traversed), so a
# test's collections traverse what it made. What a test creates itself is never frozen
# while it runs, so tests that check an object is freed (weakref + gc.collect) still can.
_FREEZE_ABOVE = 50_000


def pytest_runtest_setup(item):
    if len(gc.get_objects(generation=2)) > _FREEZE_ABOVE:
        gc.collect()
        gc.freeze()


def pytest_unconfigure(config):
    gc.unfreeze()  # interpreter shutdown collects everything, as without the freeze


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private varbench cache, so tests never share or pollute ~/.cache/varbench."""
    cache = tmp_path / "varbench-cache"
    monkeypatch.setenv("VARBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """The README's route for a plugin package: both example packages (examples/: a method,
    a metric), each declaring its entry point, pip-installed once (with uv, offline) into a
    site folder of their own, shared by the tests that put it on a subprocess's PYTHONPATH."""
    uv = shutil.which("uv")
    assert uv, "uv must be on PATH (the README's test command runs through uv)"
    target = tmp_path_factory.mktemp("example-site") / "site"
    subprocess.run([uv, "pip", "install", "--offline", "--no-deps", "--target", str(target),
                    str(REPO_DIR / "examples" / "varbench-example-method"),
                    str(REPO_DIR / "examples" / "varbench-example-metric")], check=True, capture_output=True, text=True)
    return target
