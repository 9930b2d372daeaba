"""The iteration FLOP count equals torch's FlopCounterMode on the tiny model, and the GPU
feasibility benchmark runs end to end at tiny size on the CPU with a well-formed report."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from varbench.methods.arbooth.base import model_overrides
from varbench.methods.arbooth.bench import VARIANTS, PRIOR_TOKENS, PROMPT_TOKENS, format_table, main, synthetic_data
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.fit import make_trainer
from varbench.methods.arbooth.flops import iteration_flops
from varbench.methods.arbooth.model import tuned_tensor_names
from varbench.methods.arbooth.training import prepare_storage
from varbench.models.infinity.architecture import get_size
from varbench.models.infinity.factory import build_infinity
from varbench.models.infinity.schedule import get_schedule

SCHEDULE = get_schedule(5)


def counted_iteration(config: ARBoothConfig, tmp_path) -> int:
    """FlopCounterMode's count of one real Trainer iteration (teacher sampling included)."""
    device = torch.device("cpu")
    model = build_infinity("infinity-tiny", **model_overrides(config))
    tuned = tuned_tensor_names(model, config)
    prepare_storage(model, tuned, config, device)
    data = synthetic_data(config, model, tuned, SCHEDULE, device, tmp_path)
    trainer = make_trainer(model, tuned, config, SCHEDULE, data, device, fit_seed=0)
    model.train()
    with FlopCounterMode(display=False) as counter:
        trainer.iteration(1)
    return counter.get_total_flops()


@pytest.mark.parametrize("overrides", [
    {},  # released: two steps, on-the-fly teacher
    {"quirk_optimizer_steps": "fixed"},  # one joint batch (text padded to the longer prompt)
    {"quirk_optimizer_steps": "fixed", "teacher_source": "pool", "teacher_pool_size": 2},
    {"quirk_teacher_attention": "faithful", "layers": ["sa", "identifier"]},
    {"layers": ["ffn"], "block_range": [1, 2], "checkpoint_blocks": 1},
    {"layers": ["identifier"]},  # the distillation pass has nothing to train: no backward
    {"distill": "off", "layers": ["all", "identifier"], "checkpoint_blocks": 0},
])
def test_iteration_flops_equal_torchs_flop_counter(overrides, tmp_path):
    config = ARBoothConfig(model="infinity-tiny", resolution=64, **overrides)
    expected = iteration_flops(config, get_size("infinity-tiny").transformer, SCHEDULE,
                               PROMPT_TOKENS + config.identifier_vectors - 1, PRIOR_TOKENS)
    assert counted_iteration(config, tmp_path) == expected.total
    assert (expected.teacher_sampling > 0) == (config.teacher_source == "on_the_fly" and config.distill != "off")


def test_released_iteration_at_2b_is_about_1000_tflop():
    config = ARBoothConfig()
    flops = iteration_flops(config, get_size("infinity-2b").transformer, get_schedule("1M"), 10, 6)
    # Each pass: forward 2 x ~57 TFLOP, backward ~2 x 105, recomputation 2 x ~57 (batch 2).
    assert 440e12 < flops.ce_pass < 470e12 and 440e12 < flops.distill_pass < 470e12
    assert 110e12 < flops.teacher_sampling < 120e12  # 2 samples, one forward each, no guidance
    assert 1000e12 < flops.total < 1050e12
    joint = iteration_flops(ARBoothConfig(quirk_optimizer_steps="fixed"), get_size("infinity-2b").transformer,
                            get_schedule("1M"), 10, 6)
    assert joint.total == pytest.approx(flops.total, rel=0.01)  # same work, batched


@pytest.mark.slow
def test_tiny_benchmark_on_cpu_writes_a_well_formed_report(tmp_path, capsys):
    report = main(["--size", "infinity-tiny", "--device", "cpu", "--warmup", "1", "--iterations", "2",
                   "--json", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report))
    assert report["note"].startswith("random-init") and report["pixels"] == 64 and report["tokens"] == 121
    assert [row["variant"] for row in report["results"]] == list(VARIANTS)
    for row in report["results"]:
        assert "error" not in row, row
        assert row["losses_finite"] and row["seconds_per_iteration"] > 0
        assert row["projected_minutes"] == pytest.approx(row["seconds_per_iteration"] * 500 / 60)
        assert row["floor_fraction"] == pytest.approx(row["flop_floor_seconds"] / row["seconds_per_iteration"])
        assert row["flops"]["total"] == pytest.approx(sum(row["flops"][k] for k in
                                                          ("teacher_sampling", "ce_pass", "distill_pass")))
        assert sum(row["split_seconds"].values()) <= row["seconds_per_iteration"] * 1.05
        assert row["meets_target"] is None  # targets apply to the 2B on a GPU only
    sections = {row["variant"]: set(row["split_seconds"]) for row in report["results"]}
    assert sections["default"] == {"teacher", "ce pass", "distill pass", "optimizer"}
    assert sections["joint"] == {"teacher", "joint pass", "optimizer"}
    pool = next(row for row in report["results"] if row["variant"] == "joint-pool")
    assert pool["flops"]["teacher_sampling"] == 0  # the pool is sampled before timing
    printed = capsys.readouterr().out
    assert format_table(report) in printed and "random-init weights" in printed
