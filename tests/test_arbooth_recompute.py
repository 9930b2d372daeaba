"""checkpoint_blocks "auto": the keep-count arithmetic and the measuring sequence on a
(simulated) GPU. That recomputing or keeping activations trains the same weights is in
test_arbooth_training.py."""
from __future__ import annotations

import pytest
import torch

from varbench.methods.arbooth import recompute
from varbench.methods.arbooth.recompute import Recompute, blocks_to_keep

GIB = 2**30


def test_keeps_as_many_blocks_as_the_measured_cost_allows():
    # the H100 figures: ~36.4 GiB with one kept block, +2.0 GiB per further one, 79 GiB usable
    assert blocks_to_keep(int(36.4 * GIB), int(38.4 * GIB), 79 * GIB, 32) == 16
    assert blocks_to_keep(int(36.4 * GIB), int(38.4 * GIB), 79 * GIB, 32, fraction=0.95) == 20
    assert blocks_to_keep(int(36.4 * GIB), int(38.4 * GIB), 44 * GIB, 32) == 1  # a 40 GB card
    assert blocks_to_keep(int(36.4 * GIB), int(38.4 * GIB), 40 * GIB, 32) == 0
    assert blocks_to_keep(10 * GIB, 10 * GIB, 80 * GIB, 32) == 32  # keeping costs nothing measurable
    assert blocks_to_keep(10 * GIB, 11 * GIB, 800 * GIB, 32) == 32  # never more than the model has


@pytest.mark.parametrize(("setting", "recomputed"), [(-1, 4), (0, 0), (3, 3), (9, 4), ("auto", 4)])
def test_fixed_settings_and_auto_on_the_cpu(setting, recomputed):
    plan = Recompute(setting, depth=4, device=torch.device("cpu"))
    for _ in range(3):
        assert plan.before() == recomputed
        plan.after()
    assert plan.peaks == []


def fake_gpu(monkeypatch, peaks: list[int], free: int, reserved: int) -> list:
    resets: list = []
    readings = iter(peaks)
    monkeypatch.setattr(recompute.torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device))
    monkeypatch.setattr(recompute.torch.cuda, "max_memory_allocated", lambda device: next(readings))
    monkeypatch.setattr(recompute.torch.cuda, "mem_get_info", lambda device: (free, 80 * GIB))
    monkeypatch.setattr(recompute.torch.cuda, "memory_reserved", lambda device: reserved)
    return resets


def test_auto_measures_two_iterations_then_keeps_what_fits(monkeypatch):
    resets = fake_gpu(monkeypatch, [20 * GIB, 22 * GIB], free=40 * GIB, reserved=30 * GIB)
    plan = Recompute("auto", depth=32, device=torch.device("cuda"))
    assert plan.before() == 31  # the last block keeps its activations
    plan.after()
    assert plan.before() == 30  # the last two
    plan.after()
    # budget 0.85 * (40 + 30) = 59.5 GiB; 2 GiB per block: 2 + (59.5 - 22) // 2 = 20 kept
    assert plan.before() == 32 - 20
    plan.after()
    assert plan.before() == 12 and len(resets) == 2  # decided once; no more measuring


def test_auto_recomputes_everything_when_one_kept_block_already_nearly_fills_the_gpu(monkeypatch):
    fake_gpu(monkeypatch, [75 * GIB], free=1 * GIB, reserved=78 * GIB)
    plan = Recompute("auto", depth=32, device=torch.device("cuda"))
    plan.before()
    plan.after()
    assert [plan.before(), plan.before()] == [32, 32]  # no second, riskier measurement
