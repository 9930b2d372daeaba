"""Statistics on synthetic per-subject data with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from varbench.metrics.stats import bootstrap_ci, paired_test, subject_means, summarize


def metric_rows(run_id: str, subject: str, values_by_prompt: dict[int, list[float]], metric: str = "dino",
                mode: str = "canonical", live: bool | None = None) -> list[dict]:
    rows = []
    for prompt_index, values in values_by_prompt.items():
        for sample_index, value in enumerate(values):
            row = {"run_id": run_id, "subject": subject, "kind": "eval", "prompt_index": prompt_index,
                   "sample_index": sample_index, "image": f"images/p{prompt_index:03d}_s{sample_index:02d}.png",
                   "metric": metric, "mode": mode, "value": str(value)}
            if live is not None:
                row["live"] = live
            rows.append(row)
    return rows


def subject_table(values: dict[str, list[float]], live: dict[str, bool] | None = None,
                  metric: str = "dino", mode: str = "canonical") -> pd.DataFrame:
    rows = []
    for run_id, run_values in values.items():
        for index, value in enumerate(run_values):
            subject = f"s{index}"
            row = {"run_id": run_id, "subject": subject, "metric": metric, "mode": mode, "value": value}
            if live is not None:
                row["live"] = live[subject]
            rows.append(row)
    return pd.DataFrame(rows)


def test_subject_means_canonical_averages_every_row_and_keeps_live():
    rows = metric_rows("a", "dog", {0: [0.1, 0.2, 0.3], 1: [0.9]}, live=True)
    rows += metric_rows("a", "can", {0: [0.5, 0.7]}, live=False)
    means = subject_means(pd.DataFrame(rows)).set_index("subject")
    assert means.loc["dog", "value"] == pytest.approx(0.375)  # (0.1+0.2+0.3+0.9)/4
    assert means.loc["dog", "n_rows"] == 4
    assert means.loc["can", "value"] == pytest.approx(0.6)
    assert bool(means.loc["dog", "live"]) is True and bool(means.loc["can", "live"]) is False


def test_subject_means_dreammatcher_is_mean_of_prompt_means():
    rows = metric_rows("a", "dog", {0: [0.1, 0.2, 0.3], 1: [0.9]}, mode="dreammatcher")
    means = subject_means(pd.DataFrame(rows))
    # prompt 0 mean 0.2, prompt 1 mean 0.9 -> 0.55, not the row mean 0.375
    assert means["value"].item() == pytest.approx(0.55)
    assert means["n_rows"].item() == 4


def test_subject_means_keeps_modes_and_metrics_apart():
    rows = metric_rows("a", "dog", {0: [0.2]}, metric="dino") + metric_rows("a", "dog", {0: [0.8]}, metric="clip_t")
    rows += metric_rows("a", "dog", {0: [40.0]}, metric="dino", mode="kosmosg")
    means = subject_means(pd.DataFrame(rows)).set_index(["metric", "mode"])["value"]
    assert means[("dino", "canonical")] == pytest.approx(0.2)
    assert means[("clip_t", "canonical")] == pytest.approx(0.8)
    assert means[("dino", "kosmosg")] == pytest.approx(40.0)


def test_two_subject_percentile_interval_is_min_to_max():
    # The bootstrap mean of two values is a (p=1/4), the midpoint (1/2) or b (1/4), so
    # the 2.5% and 97.5% percentiles of 10,000 resamples are exactly a and b.
    assert bootstrap_ci(np.array([0.2, 0.6])) == (pytest.approx(0.2), pytest.approx(0.6))


def test_constant_sample_interval_collapses_and_single_subject_is_nan():
    assert bootstrap_ci(np.array([0.5, 0.5, 0.5])) == (0.5, 0.5)
    low, high = bootstrap_ci(np.array([0.5]))
    assert math.isnan(low) and math.isnan(high)


def test_large_sample_interval_matches_normal_theory():
    sample = np.random.default_rng(1).normal(0.7, 0.1, size=400)
    low, high = bootstrap_ci(sample, n_resamples=20_000, seed=3)
    half_width = 1.96 * sample.std(ddof=1) / math.sqrt(sample.size)
    assert (low + high) / 2 == pytest.approx(sample.mean(), abs=0.15 * half_width)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.08)


def test_bootstrap_is_deterministic_given_the_seed():
    sample = np.array([0.61, 0.72, 0.55, 0.68, 0.74, 0.59])
    assert bootstrap_ci(sample, seed=7) == bootstrap_ci(sample, seed=7)
    assert bootstrap_ci(sample, seed=7) != bootstrap_ci(sample, seed=8)
    low, high = bootstrap_ci(sample, seed=7)
    assert sample.min() <= low < sample.mean() < high <= sample.max()


def test_summarize_macro_mean_and_live_object_split():
    live = {"s0": True, "s1": True, "s2": False, "s3": False}
    table = subject_table({"a": [0.2, 0.4, 0.6, 1.0]}, live=live)
    summary = summarize(table).set_index("group")
    assert summary.loc["all", "mean"] == pytest.approx(0.55)
    assert summary.loc["live", "mean"] == pytest.approx(0.3)
    assert summary.loc["object", "mean"] == pytest.approx(0.8)
    assert summary.loc["live", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.2, 0.4])
    assert summary.loc["object", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.6, 1.0])
    assert summary["n_subjects"].tolist() == [4, 2, 2]


def test_summarize_reports_empty_groups_and_single_subjects():
    table = subject_table({"a": [0.3, 0.5]}, live={"s0": True, "s1": True})
    summary = summarize(table).set_index("group")
    assert summary.loc["object", "n_subjects"] == 0 and math.isnan(summary.loc["object", "mean"])
    single = summarize(subject_table({"b": [0.9]})).iloc[0]
    assert single["group"] == "all" and single["mean"] == 0.9 and math.isnan(single["ci_low"])


def test_summarize_does_not_depend_on_group_order():
    values = [0.61, 0.72, 0.55, 0.68, 0.74]
    both = summarize(subject_table({"a": values, "b": [v + 0.01 for v in values]}))
    alone = summarize(subject_table({"b": [v + 0.01 for v in values]}))
    assert both[both["run_id"] == "b"][["ci_low", "ci_high"]].to_numpy() == pytest.approx(
        alone[["ci_low", "ci_high"]].to_numpy())


def test_wilcoxon_exact_known_answers():
    base = [0.5, 0.5, 0.5, 0.5, 0.5]
    # differences 1..5, all positive: W = 0, exact two-sided p = 2 / 2**5
    result = paired_test(subject_table({"a": [b + d for b, d in zip(base, [1, 2, 3, 4, 5])], "b": base}),
                         "a", "b", "dino", "canonical")
    assert (result.n_subjects, result.statistic) == (5, 0.0)
    assert result.p_value == pytest.approx(0.0625)
    assert result.mean_difference == pytest.approx(3.0)
    # differences 1, 2, -3, 4, 5: W- = 3; five of the 32 sign patterns have W- <= 3
    result = paired_test(subject_table({"a": [b + d for b, d in zip(base, [1, 2, -3, 4, 5])], "b": base}),
                         "a", "b", "dino", "canonical")
    assert result.statistic == 3.0
    assert result.p_value == pytest.approx(10 / 32)
    assert result.mean_difference == pytest.approx(1.8)


def test_wilcoxon_uses_only_shared_subjects_and_handles_no_difference():
    table = subject_table({"a": [0.9, 0.8, 0.7], "b": [0.1, 0.2]})
    result = paired_test(table, "a", "b", "dino", "canonical")
    assert result.n_subjects == 2
    assert result.mean_difference == pytest.approx(0.7)
    same = paired_test(subject_table({"a": [0.3, 0.4], "b": [0.3, 0.4]}), "a", "b", "dino", "canonical")
    assert same.n_subjects == 2 and math.isnan(same.p_value) and same.mean_difference == 0.0
    none = paired_test(table, "a", "missing", "dino", "canonical")
    assert none.n_subjects == 0 and math.isnan(none.statistic)
