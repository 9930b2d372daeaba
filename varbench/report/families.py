"""Method families (`Method.family`: "autoregressive", "diffusion", ...) as reports use them.

Sample grids, loss curves and cost-plot markers group runs by family, so a plugin method
is drawn like a built-in one without any list of method names in the report code. The
family comes from the installed method class; a method that is not installed where the
report is rendered (results copied from elsewhere) falls in the family "other".
"""
from __future__ import annotations

from functools import lru_cache

from varbench.errors import UserError

OTHER = "other"
EXTERNAL = "external"  # images scored with `varbench score`: method "external", not a registered plugin
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per family, in order of first appearance
MARKER_NAMES = {"o": "circles", "s": "squares", "^": "triangles", "D": "diamonds", "v": "down triangles",
                "P": "pluses", "X": "crosses", "*": "stars"}


@lru_cache(maxsize=None)
def method_family(method: str) -> str:
    """The family of a method by its registered name; "other" when it is not installed."""
    from varbench.registry import get_method

    if method == EXTERNAL:
        return EXTERNAL
    try:
        family = getattr(get_method(method), "family", OTHER)
    except (UserError, ImportError):
        return OTHER
    return family if isinstance(family, str) and family.strip() else OTHER


def families_in_order(families: list[str]) -> list[str]:
    """Distinct families in order of first appearance (the rows' order decides, not names)."""
    return list(dict.fromkeys(families))


def family_styles(families: list[str]) -> dict[str, tuple[str, str]]:
    """(marker, colour) per family: deterministic, by order of first appearance."""
    ordered = families_in_order(families)
    return {family: (MARKERS[index % len(MARKERS)], f"C{index % 10}") for index, family in enumerate(ordered)}
