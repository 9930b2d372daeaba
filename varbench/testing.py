"""Test helpers for method packages: check a method against the rules the runner relies on.

    from varbench.testing import assert_conforms

    def test_my_method_keeps_the_runners_rules():
        assert_conforms(MyMethod)                          # on MyMethod.tiny_config
        assert_conforms("my_method", config={"steps": 2})  # a registered name, a config change

`check_method` returns one `varbench.conformance.RuleResult` per rule (batch, images,
artifact, parameters, fit-steps, nan-loss; see that module for what each checks), for
tests that expect a rule to fail. Both run on the CPU unless given `device`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from varbench.conformance import RULES, RuleResult, check_method
from varbench.method import Method

__all__ = ["RULES", "RuleResult", "assert_conforms", "check_method", "failed_rules"]


def assert_conforms(method: str | type[Method], config: dict[str, Any] | None = None,
                    device: Any = "cpu") -> list[RuleResult]:
    """Fail (AssertionError, one line per broken rule) unless `method` keeps every rule."""
    results = check_method(method, config, device)
    failed = [result for result in results if not result.passed]
    if failed:
        name = method if isinstance(method, str) else method.name
        message = f"{name} breaks {len(failed)} of {len(results)} rules:\n" + "\n".join(r.line() for r in failed)
        # the method's own exception, when there is one, keeps its traceback for debugging
        raise AssertionError(message) from next((r.error for r in failed if r.error is not None), None)
    return results


def failed_rules(results: Sequence[RuleResult]) -> set[str]:
    """The names of the rules that failed, e.g. {"batch", "nan-loss"}."""
    return {result.rule for result in results if not result.passed}
