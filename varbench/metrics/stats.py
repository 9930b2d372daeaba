"""Statistics over subjects: per-subject means, macro means, bootstrap CIs, paired tests.

The unit of evaluation is the subject (DESIGN.md section 4): every image row of a
subject is first averaged into one number per (run, subject, metric, mode), then runs
are compared through those per-subject numbers. Images of one subject are not
independent samples (they share one fine-tuned model), so confidence intervals and
tests resample and pair subjects, never images.

Conventions
- `subject_means`: canonical-style modes average all of a subject's rows; the
  `dreammatcher` mode (the ARBooth paper's evaluator) averages per prompt first and then
  over prompts, as that evaluator does. Rows whose value is NaN are ignored.
- `summarize`: macro mean over subjects, for all subjects and for the live / object
  subsets. The confidence interval is a *percentile* bootstrap over subjects
  (scipy.stats.bootstrap, method="percentile"), chosen over BCa because BCa is unstable
  and warns on the very small or constant samples that smoke runs and ablations produce.
  The generator is seeded per group with `seed`, so a result never depends on the
  order in which groups are visited. With fewer than two subjects an interval is not
  defined: `ci_low` and `ci_high` are NaN (the mean is still reported). With identical
  values the interval collapses to that value.
- `paired_test`: two-sided Wilcoxon signed-rank test on the per-subject differences
  run_a - run_b over the subjects both runs have (scipy.stats.wilcoxon, zero_method
  "wilcox": subjects with a zero difference are dropped, as in Wilcoxon's original test;
  scipy picks the exact null distribution for small samples). When every difference is
  zero (or no subject is shared) the test is undefined: statistic and p-value are NaN.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

SUBJECT_KEYS = ["run_id", "subject", "metric", "mode"]
SUMMARY_KEYS = ["run_id", "metric", "mode"]
GROUPS = ("all", "live", "object")
PER_PROMPT_MODES = ("dreammatcher",)  # modes whose subject value is a mean of per-prompt means


@dataclass(frozen=True)
class PairedTest:
    run_a: str
    run_b: str
    metric: str
    mode: str
    n_subjects: int  # subjects both runs have (zero differences included)
    statistic: float  # Wilcoxon W = min(W+, W-) for the two-sided test
    p_value: float
    mean_difference: float  # mean over shared subjects of (run_a - run_b)


def subject_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (run_id, subject, metric, mode) with `value` and `n_rows`.

    `metrics` has the store's METRIC_COLUMNS (values may be strings, as read from CSV);
    a `live` column, when present, is carried through (one value per subject).
    """
    table = metrics.copy()
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    table = table.dropna(subset=["value"])
    per_prompt = table["mode"].isin(PER_PROMPT_MODES)
    parts = []
    if (~per_prompt).any():
        parts.append(_mean_over_rows(table[~per_prompt]))
    if per_prompt.any():
        parts.append(_mean_over_prompt_means(table[per_prompt]))
    if not parts:
        columns = SUBJECT_KEYS + ["value", "n_rows"] + (["live"] if "live" in metrics else [])
        return pd.DataFrame(columns=columns)
    means = pd.concat(parts, ignore_index=True)
    if "live" in metrics.columns:
        live = metrics.groupby(["run_id", "subject"], sort=False)["live"].first().reset_index()
        means = means.merge(live, on=["run_id", "subject"], how="left")
    return means.sort_values(SUBJECT_KEYS, kind="stable").reset_index(drop=True)


def _mean_over_rows(table: pd.DataFrame) -> pd.DataFrame:
    grouped = table.groupby(SUBJECT_KEYS, sort=False)["value"]
    return pd.DataFrame({"value": grouped.mean(), "n_rows": grouped.size()}).reset_index()


def _mean_over_prompt_means(table: pd.DataFrame) -> pd.DataFrame:
    prompt_index = pd.to_numeric(table["prompt_index"], errors="coerce")
    per_prompt = (table.assign(prompt_index=prompt_index)
                  .groupby(SUBJECT_KEYS + ["prompt_index"], sort=False)["value"]
                  .agg(["mean", "size"]).reset_index())
    grouped = per_prompt.groupby(SUBJECT_KEYS, sort=False)
    return pd.DataFrame({"value": grouped["mean"].mean(), "n_rows": grouped["size"].sum()}).reset_index()


def summarize(subject_table: pd.DataFrame, confidence: float = 0.95, n_resamples: int = 10_000,
              seed: int = 0) -> pd.DataFrame:
    """Macro mean over subjects with a bootstrap CI, per (run_id, metric, mode, group).

    Groups are "all", "live" and "object"; the last two need a `live` column (subjects
    whose `live` is unknown count in "all" only). A group without subjects has
    n_subjects 0 and NaN mean and CI.
    """
    rows = []
    has_live = "live" in subject_table.columns
    for (run_id, metric, mode), part in subject_table.groupby(SUMMARY_KEYS, sort=True):
        values = pd.to_numeric(part["value"], errors="coerce")
        live = part["live"].map(_as_bool) if has_live else pd.Series(None, index=part.index, dtype=object)
        selections = {"all": values.notna(),  # unknown `live` (None) counts in "all" only
                      "live": values.notna() & live.map(lambda flag: flag is True),
                      "object": values.notna() & live.map(lambda flag: flag is False)}
        for group in GROUPS:
            if group != "all" and not has_live:
                continue
            sample = values[selections[group]].to_numpy(dtype=float)
            low, high = bootstrap_ci(sample, confidence, n_resamples, seed)
            rows.append({"run_id": run_id, "metric": metric, "mode": mode, "group": group,
                         "mean": float(sample.mean()) if sample.size else math.nan,
                         "ci_low": low, "ci_high": high, "n_subjects": int(sample.size)})
    columns = SUMMARY_KEYS + ["group", "mean", "ci_low", "ci_high", "n_subjects"]
    return pd.DataFrame(rows, columns=columns)


def bootstrap_ci(sample: np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of `sample`; (nan, nan) below two values."""
    sample = np.asarray(sample, dtype=float)
    if sample.size < 2:
        return math.nan, math.nan
    if np.all(sample == sample[0]):
        return float(sample[0]), float(sample[0])  # every resample has the same mean
    result = scipy_stats.bootstrap(
        (sample,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", vectorized=True, axis=-1, **_generator_argument(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def _generator_argument(seed: int) -> dict[str, np.random.Generator]:
    # scipy >= 1.15 takes `rng`; older releases (down to 1.11, our floor) take
    # `random_state`. Both accept a numpy Generator, which makes the draw deterministic.
    name = "rng" if "rng" in inspect.signature(scipy_stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def paired_test(subject_table: pd.DataFrame, run_a: str, run_b: str, metric: str, mode: str) -> PairedTest:
    """Wilcoxon signed-rank test of run_a vs run_b over the subjects both runs have."""
    part = subject_table[(subject_table["metric"] == metric) & (subject_table["mode"] == mode)]
    values_a = _values_by_subject(part, run_a)
    values_b = _values_by_subject(part, run_b)
    shared = values_a.index.intersection(values_b.index)
    differences = (values_a[shared] - values_b[shared]).to_numpy(dtype=float)
    n_subjects = int(differences.size)
    mean_difference = float(differences.mean()) if n_subjects else math.nan
    if n_subjects == 0 or np.all(differences == 0):
        return PairedTest(run_a, run_b, metric, mode, n_subjects, math.nan, math.nan, mean_difference)
    result = scipy_stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided")
    return PairedTest(run_a, run_b, metric, mode, n_subjects, float(result.statistic),
                      float(result.pvalue), mean_difference)


def _values_by_subject(part: pd.DataFrame, run_id: str) -> pd.Series:
    rows = part[part["run_id"] == run_id]
    values = pd.to_numeric(rows["value"], errors="coerce")
    return pd.Series(values.to_numpy(), index=rows["subject"].to_numpy()).dropna()


def _as_bool(value: object) -> bool | None:
    """`live` as read back from JSON or CSV: True / False / None when unknown."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None
