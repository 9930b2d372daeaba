"""The sampling benchmark runs end to end at tiny size on the CPU (so GPU time is not wasted)."""
from __future__ import annotations

import json

import pytest

from varbench.models.infinity.bench import count_flops, format_table, main
from varbench.models.infinity.architecture import get_size
from varbench.models.infinity.schedule import get_schedule


def test_flop_count_of_the_2b_at_1024():
    flops = count_flops(get_size("infinity-2b").transformer, get_schedule("1M"), text_tokens=0, cfg=False)
    per_token = 32 * (12 * 2048**2 + 4 * 2048 * 8192) + 2 * 2048 * (32 + 64)
    assert flops["matmul"] == 10_521 * per_token  # ~39.6 TFLOP
    block_causal = sum(4 * n * end * 2048 for n, (_, end) in zip(get_schedule("1M").tokens_per_scale,
                                                                  get_schedule("1M").bounds()))
    assert flops["attention"] == 32 * block_causal  # ~18 TFLOP
    with_cfg = count_flops(get_size("infinity-2b").transformer, get_schedule("1M"), text_tokens=0, cfg=True)
    assert with_cfg["total"] == 2 * flops["total"]
    assert 110e12 < with_cfg["total"] < 120e12


@pytest.mark.slow
def test_tiny_benchmark_on_cpu(tmp_path, capsys):
    report = main(["--size", "infinity-tiny", "--device", "cpu", "--batch", "1", "2", "--repeats", "1",
                   "--warmup", "0", "--variants", "eager", "graphs", "--json", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report))
    assert report["note"].startswith("random-init")
    runs = [(r["variant"], r["batch"]) for r in report["results"]]
    assert runs == [("eager", 1), ("eager", 2), ("graphs", 1), ("graphs", 2)]
    for row in report["results"]:
        assert "error" not in row, row
        assert row["transformer_s_per_image"] > 0 and row["vae_decode_s_per_image"] > 0
        assert row["total_s_per_image"] == pytest.approx(row["transformer_s_per_image"] + row["vae_decode_s_per_image"])
    assert report["pixels"] == [64, 64] and report["tokens"] == 121
    assert report["flop_floor_s_per_image"] > 0
    printed = capsys.readouterr().out
    assert format_table(report) in printed and "random-init weights: timing only" in printed
