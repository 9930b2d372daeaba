"""The toyworld's method-level known answers (issue 22), read from a run's scores: facts
about personalization that any honest benchmark world must reproduce.

    personalization   every tuning arm's DINO to the subject's references is above the
                      `no_fit` floor's, with bootstrap intervals over subjects (95% unless
                      a report spec sets its statistics otherwise) that do
                      not overlap, and its mean is below the `reference_copy` ceiling's;
    known effects     an arm with prior preservation (DreamBooth) or prior distillation
                      (ARBooth) has a lower PRES (class images less like the subject: the
                      class prior kept) than the same method without it, on the same
                      subjects; the paired difference is shown with its bootstrap interval.

Arms are named as in `protocols/toyworld.yaml`; an effect whose two arms are not both in
the run is skipped (said so in the table), never counted as holding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FLOOR, CEILING = "no_fit", "reference_copy"
# (arm with the regulariser, the same method without it, what the regulariser is)
EFFECTS = (("dreambooth", "dreambooth-no-prior", "prior preservation"),
           ("arbooth", "arbooth-no-distill", "prior distillation"))


@dataclass(frozen=True)
class Answer:
    claim: str
    measured: str
    holds: bool | None  # None: not measurable in this run (an arm is missing)


def method_answers(rows: pd.DataFrame, run_ids: dict[str, str], mode: str = "canonical",
                   statistics: Any = None) -> list[Answer]:
    """The known answers for the arms `run_ids` names (arm name -> run id) in the store's
    metric `rows` (api.Scores.rows); intervals by `statistics` (confidence, n_resamples,
    seed: a report spec's settings), else the report's defaults."""
    from varbench.metrics.stats import subject_means
    from varbench.report.spec import StatisticsSpec

    stats = statistics if statistics is not None else StatisticsSpec()
    means = subject_means(rows)
    means = means[means["mode"] == mode]
    values = {}  # (arm, metric) -> value per subject, for arms with finished cells only
    for arm, run_id in run_ids.items():
        for metric in ("dino", "pres"):
            found = means[(means["run_id"] == run_id) & (means["metric"] == metric)].set_index("subject")["value"]
            if not found.empty:
                values[(arm, metric)] = found
    answers = [_above_floor(arm, values, stats) for arm in run_ids if arm not in (FLOOR, CEILING)]
    answers += [_effect(with_, without, what, values, stats) for with_, without, what in EFFECTS
                if with_ in run_ids or without in run_ids]
    return answers


def _above_floor(arm: str, values: dict[tuple[str, str], pd.Series], stats: Any) -> Answer:
    claim = f"{arm}: DINO above {FLOOR}'s ({stats.confidence:.0%} intervals apart), below {CEILING}'s"
    missing = [name for name in (arm, FLOOR, CEILING) if (name, "dino") not in values]
    if missing:
        return Answer(claim, f"no finished cells of {', '.join(missing)}", None)
    mine, floor, ceiling = (_interval(values[(name, "dino")], stats) for name in (arm, FLOOR, CEILING))
    if np.isnan([mine[1], floor[2]]).any():  # an interval needs two subjects
        return Answer(claim, f"{_text(mine)} vs floor {_text(floor)}: too few subjects", None)
    holds = mine[1] > floor[2] and mine[0] < ceiling[0]
    return Answer(claim, f"{_text(mine)} vs floor {_text(floor)}, ceiling {_text(ceiling)}", holds)


def _effect(with_: str, without: str, what: str, values: dict[tuple[str, str], pd.Series], stats: Any) -> Answer:
    claim = f"{what}: PRES of {with_} below {without}'s, same subjects"
    if (with_, "pres") not in values or (without, "pres") not in values:
        return Answer(claim, f"needs both {with_} and {without}", None)
    paired = pd.concat([values[(with_, "pres")], values[(without, "pres")]], axis=1, join="inner").dropna()
    if paired.empty:
        return Answer(claim, "no subject has PRES in both arms", None)
    difference = _interval(paired.iloc[:, 0] - paired.iloc[:, 1], stats)
    a, b = float(paired.iloc[:, 0].mean()), float(paired.iloc[:, 1].mean())
    return Answer(claim, f"{a:.3f} vs {b:.3f} on {len(paired)} subjects; paired difference {_text(difference)}",
                  a < b)


def _interval(sample: pd.Series, stats: Any) -> tuple[float, float, float]:
    """(mean, low, high): the mean over subjects and its percentile-bootstrap interval,
    as the report computes it."""
    from varbench.metrics.stats import bootstrap_ci

    data = sample.to_numpy(dtype=float)
    low, high = bootstrap_ci(data, stats.confidence, stats.n_resamples, stats.seed)
    return float(np.mean(data)), low, high


def _text(interval: tuple[float, float, float]) -> str:
    return f"{interval[0]:.3f} [{interval[1]:.3f}, {interval[2]:.3f}]"


VERDICTS = {True: "holds", False: "does not hold", None: "not measured"}


def to_markdown(answers: list[Answer]) -> str:
    lines = ["| known answer | measured | |", "| --- | --- | --- |"]
    lines += [f"| {a.claim} | {a.measured} | {VERDICTS[a.holds]} |" for a in answers]
    return "\n".join(lines)
