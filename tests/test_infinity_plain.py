"""The plain Infinity model code stays plain: no compiler, CUDA-graph, fused-epilogue or
custom-kernel code, and no import of the speed layer (varbench.models.infinity.fast,
varbench.models.fast), which swaps its pieces in from outside."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import varbench.models.infinity as infinity

PACKAGE = Path(infinity.__file__).parent
TOOLS = {"bench.py"}  # the benchmark drives the speed layer; it is no part of the model
PLAIN = sorted(path for path in PACKAGE.glob("*.py") if path.name not in TOOLS)
SPEED_NAMES = ("torch.compile", "torch.compiler", "CUDAGraph", "torch.cuda.graph", "_addmm_activation",
               "flash_attn", "triton", "load_inline", "_dynamo", "inductor")


def test_the_plain_modules_are_the_ones_the_package_lists():
    names = {path.name for path in PLAIN}
    assert {"transformer.py", "layers.py", "autoencoder.py", "sampler.py", "rope.py", "bsq.py", "pipeline.py",
            "text.py", "schedule.py", "architecture.py", "factory.py", "checkpoint.py"} <= names
    assert {"fusion.py", "graphs.py"}.isdisjoint(names)  # moved into fast/


@pytest.mark.parametrize("path", PLAIN, ids=lambda path: path.name)
def test_plain_module_has_no_speed_code(path):
    source = path.read_text()
    found = [name for name in SPEED_NAMES if name in source]
    assert not found, f"{path.name} mentions {found}: that belongs in varbench/models/infinity/fast/"


@pytest.mark.parametrize("path", PLAIN, ids=lambda path: path.name)
def test_plain_module_imports_nothing_from_the_speed_layer(path):
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            imported += [base] + [f"{base}.{alias.name}" for alias in node.names]
    fast = [name for name in imported if re.search(r"(^|\.)fast($|\.)", name)]
    assert not fast, f"{path.name} imports {fast}"
    assert not re.search(r"import_module\([^)]*fast", path.read_text())  # nor lazily
