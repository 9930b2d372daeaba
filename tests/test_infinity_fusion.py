"""The compiled-decoder switch: off on the CPU, restorable, and a failing compiler falls
back to the eager module instead of failing a run."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varbench.models.infinity import fusion


def test_cpu_inputs_always_run_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module: calls.append(module) or module)
    layer = nn.Linear(4, 4)
    with fusion.compiled_decoder(True):
        layer_out = fusion.run_module(layer, torch.ones(2, 4))
    assert calls == [] and torch.equal(layer_out, layer(torch.ones(2, 4)))


def test_context_manager_restores_and_env_var_wins(monkeypatch):
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    with fusion.compiled_decoder(True):
        assert fusion._state["enabled"]
        with fusion.compiled_decoder(False):
            assert not fusion._state["enabled"]
        assert fusion._state["enabled"]
    assert not fusion._state["enabled"]
    monkeypatch.setenv("VARBENCH_COMPILE", "0")
    with fusion.compiled_decoder(True):
        assert not fusion._state["enabled"]


def test_compile_failure_warns_and_runs_eager(monkeypatch):
    class FakeCuda(torch.Tensor):
        is_cuda = True  # takes the compiled branch on a CPU-only machine

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda module: broken)
    layer = nn.Linear(4, 4)
    x = torch.ones(2, 4).as_subclass(FakeCuda)
    with fusion.compiled_decoder(True), pytest.warns(UserWarning, match="torch.compile of Linear failed"):
        out = fusion.run_module(layer, x)
        assert not fusion._state["enabled"]  # the rest of the run stays eager
    torch.testing.assert_close(out.as_subclass(torch.Tensor), layer(torch.ones(2, 4)))
    fusion.reset_compiled()
