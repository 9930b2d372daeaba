"""Scores in full precision by default: bf16 autocast and TF32 are execution options,
never silent, and labelled where used."""
from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from varbench.metrics.scoring import Scorer
from varbench.metrics.settings import MetricsConfig, score_id
from varbench.report.results import score_arithmetic


def test_fp32_without_tf32_is_the_default_and_neither_changes_the_score_id():
    config = MetricsConfig()
    assert (config.precision, config.tf32) == ("fp32", False)
    assert score_id(config) == score_id(MetricsConfig(precision="bf16", tf32=True))


def test_scoring_turns_tf32_off_unless_asked_and_restores_the_global_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as another library left it
        for tf32 in (False, True):
            scorer = SimpleNamespace(device=torch.device("cuda"), config=MetricsConfig(tf32=tf32))
            with Scorer.autocast(scorer):
                assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_reduced_precision_is_read_back_for_the_report(tmp_path):
    def status(device: str, execution: dict) -> str:
        (tmp_path / "status.json").write_text(json.dumps({"state": "done", "device": device, "execution": execution}))
        return score_arithmetic(tmp_path)

    assert status("cuda:0", {}) == ""
    assert status("cuda:0", {"metric_precision": "bf16"}) == "bf16"
    assert status("cuda", {"metric_precision": "bf16", "metric_tf32": True}) == "bf16+tf32"
    assert status("cpu", {"metric_precision": "bf16"}) == ""  # the CPU always scores in fp32
