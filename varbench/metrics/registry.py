"""The metric registry: entry points of group `varbench.metrics`, plus `@register_metric`.

Works like the method registry (varbench.registry): the built-in metrics are declared as
entry points in pyproject.toml, exactly as a third-party package declares its own (README
"Adding a metric"); code inside this repository can use the decorator instead, in a module
named in $VARBENCH_PLUGINS. Classes load on first use; none imports torch on import.

The five standard metrics (varbench.metrics.standard) are computed in every protocol; the
others only when a protocol names them in `metrics.extra`.
"""
from __future__ import annotations

from typing import Any

from varbench.errors import UserError, did_you_mean
from varbench.metrics.plugin import BETTER, KINDS, NEEDS, PIXELS, Encoder, Metric
from varbench.metrics.standard import STANDARD, standard_metrics
from varbench.registry import Registry

GROUP = "varbench.metrics"


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register a Metric subclass under `cls.name`."""
    return METRICS.register(cls)


def available() -> dict[str, str]:
    """Metric name -> where it comes from ('module:Class'); imports only $VARBENCH_PLUGINS."""
    return METRICS.available()


def get_metric(name: str, where: str = "") -> type[Metric]:
    """The Metric class registered as `name`; unknown names fail with close matches."""
    return METRICS.get(name, where)


def check_extra(names: list[str], where: str = "metrics.extra") -> None:
    """Every name in `metrics.extra` is an installed metric outside the standard five, once."""
    for name in names:
        if name in STANDARD:
            fix = "Set 'div: true' instead." if name == "div" else "Remove it from metrics.extra."
            raise UserError(f"{name!r} is a standard metric, computed in every protocol", where, fix)
        if names.count(name) > 1:
            raise UserError(f"metric {name!r} listed twice", where, "List each extra metric once.")
        if name not in available():
            raise UserError(f"unknown metric {name!r}", where, "Run 'varbench list metrics' to see the installed "
                            "ones." + did_you_mean(name, [n for n in available() if n not in STANDARD]))


def metrics_for(div: bool, extra: list[str]) -> list[type[Metric]]:
    """The metrics one config computes, in row order: the standard ones, then the extras by name."""
    return standard_metrics(div) + [get_metric(name, "metrics.extra") for name in sorted(extra)]


def extra_identity(extra: list[str], with_weights: bool) -> dict[str, Any]:
    """What the extras add to a score identity: each one's version, and with real backbones
    the pinned weight files of the encoders it reads."""
    identity: dict[str, Any] = {}
    for name in sorted(extra):
        cls = get_metric(name, "metrics.extra")
        identity[name] = {"version": cls.version}
        if with_weights:
            identity[name]["weights"] = sorted({pin for encoder in cls.encoders for pin in encoder.weights})
    return identity


def row_directions(names: list[str]) -> dict[str, str]:
    """Row name -> "higher" or "lower" (which is better) for the metrics `names` (for
    tables: e.g. the copy guard's rows copy_dino, copy_clip_i and copy are all "lower")."""
    return {row: cls.better for cls in map(get_metric, names) for row in cls.row_names()}


def describe() -> list[str]:
    """`varbench list metrics`: one line per metric (name, standard or extra, which direction
    is better, what it needs, which images it scores, where it comes from), then its rows
    when they are named otherwise."""
    lines = []
    for name, source in available().items():
        role = "standard" if name in STANDARD else "extra"
        try:
            cls = get_metric(name)
        except UserError as err:  # a plugin that cannot be imported is listed with why
            lines.append(f"{name:<16} {role:<9} (cannot be loaded: {err.what})  {source}")
            continue
        needs = ",".join(need for need in NEEDS if need in cls.needs) or "-"
        lines.append(f"{name:<16} {role:<9} {cls.better + ' is better':<17} needs {needs:<15} "
                     f"{cls.kind + ' images':<12} {source}")
        if cls.row_names() != (name,):
            lines.append(f"{'':<16} rows: {', '.join(cls.row_names())}")
    return lines


def check_metric_class(cls: object, where: str) -> None:
    """A one-line UserError when a registered class breaks the interface (varbench.metrics.plugin)."""
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise UserError("registered object is not a varbench Metric subclass", where,
                        "Subclass varbench.metrics.plugin.Metric.")
    for attribute in ("name", "version"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise UserError(f"metric class lacks the string class attribute {attribute!r}", where,
                            "Set name and version on the class.")
    problems = []
    if not set(cls.needs) <= set(NEEDS):
        problems.append(f"need {sorted(set(cls.needs) - set(NEEDS))}")
    if cls.kind not in KINDS:
        problems.append(f"kind {cls.kind!r}")
    if cls.better not in BETTER:
        problems.append(f"direction better={cls.better!r}")
    problems += [f"encoder {encoder!r}" for encoder in cls.encoders
                 if not isinstance(encoder, Encoder) or encoder.pixels not in PIXELS]
    if problems:
        raise UserError(f"metric {cls.name!r} declares an unknown {problems[0]}", where,
                        f"Use needs from {NEEDS}, kind from {KINDS}, better from {BETTER}, "
                        f"and Encoder objects reading pixels from {PIXELS}.")


METRICS = Registry("metric", GROUP, check_metric_class)  # the shared plugin mechanism (varbench.registry)
