"""The fused-kernel path computes what the eager path computes, and a failing compiler
falls back to eager instead of failing a run."""
from __future__ import annotations

import pytest
import torch

from varbench.models.infinity import fusion
from varbench.models.infinity.rope import rope_table
from varbench.models.infinity.schedule import get_schedule


def test_real_valued_rotation_equals_complex_eager():
    generator = torch.Generator().manual_seed(0)
    schedule = get_schedule(5)
    table = rope_table(schedule, head_dim=16)
    x = torch.randn(2, 4, schedule.num_tokens, 16, generator=generator).to(torch.bfloat16)
    scale = torch.rand(1, 4, 1, 1, generator=generator) + 0.5
    cos, sin = torch.view_as_real(table).unbind(-1)
    for s in (scale, None):
        eager = fusion.normalize_and_rotate(x, table, s, torch.float32)
        real = fusion._rotate_real(x, cos, sin, torch.ones(()) if s is None else s, torch.float32)
        torch.testing.assert_close(real, eager, rtol=1e-6, atol=1e-6)
    # unit norm per head vector (times the scale): the cosine-attention invariant
    norms = fusion.normalize_and_rotate(x, table, None, torch.float32).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-5, atol=1e-5)


def test_context_manager_restores_the_previous_setting(monkeypatch):
    monkeypatch.delenv("VARBENCH_COMPILE", raising=False)
    with fusion.fused_kernels(True):
        assert fusion._state["enabled"]
        with fusion.fused_kernels(False):
            assert not fusion._state["enabled"]
        assert fusion._state["enabled"]
    assert not fusion._state["enabled"]
    monkeypatch.setenv("VARBENCH_COMPILE", "0")
    with fusion.fused_kernels(True):
        assert not fusion._state["enabled"]


def test_compile_failure_warns_and_runs_eager(monkeypatch):
    def broken_compile(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(fusion, "_use_compiled", lambda x: fusion._state["enabled"])
    fusion.reset_compiled()
    x = torch.randn(3, 5, 8)
    scale, shift = torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    expected = fusion.modulate.__wrapped__(x, scale, shift, 1e-6, torch.float32)
    with fusion.fused_kernels(True), pytest.warns(UserWarning, match="torch.compile of modulate failed"):
        out = fusion.modulate(x, scale, shift, 1e-6, torch.float32)
        assert not fusion._state["enabled"]  # the rest of the run stays eager
    torch.testing.assert_close(out, expected)
    fusion.reset_compiled()  # drop the broken stand-in
