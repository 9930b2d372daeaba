"""The method registry: entry points of group `varbench.methods`, plus `@register_method`.

Built-in methods and the baselines are declared as entry points in pyproject.toml,
exactly as a third-party package would declare its own; in-tree experiments can use the
decorator instead, in a module named in $VARBENCH_PLUGINS (comma-separated module names,
imported on first lookup so their decorators run). Classes load lazily, on first use,
so `varbench --help` stays fast.
"""
from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from varbench.errors import UserError, did_you_mean
from varbench.method import Method

GROUP = "varbench.methods"
_decorated: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a Method subclass under `cls.name`."""
    _check_method_class(cls, f"{cls.__module__}.{cls.__qualname__}")
    other = _decorated.get(cls.name)
    if other is not None and other is not cls:
        raise UserError(f"method name {cls.name!r} registered twice",
                        f"{other.__module__} and {cls.__module__}", "Rename one of them.")
    _decorated[cls.name] = cls
    return cls


def import_plugin_modules() -> None:
    """Import the modules listed in $VARBENCH_PLUGINS (their @register_method calls run)."""
    for module in filter(None, (m.strip() for m in os.environ.get("VARBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"cannot import plugin module {module!r}: {err}", "VARBENCH_PLUGINS",
                            "Fix the module name or make it importable (PYTHONPATH).") from None


def available() -> dict[str, str]:
    """Method name -> where it comes from ('module:Class'); imports only $VARBENCH_PLUGINS."""
    import_plugin_modules()
    names = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    for name, cls in _decorated.items():
        names.setdefault(name, f"{cls.__module__}:{cls.__qualname__}")
    return dict(sorted(names.items()))


def get_method(name: str, where: str = "") -> type[Method]:
    """The Method class registered as `name`; unknown names fail with close matches."""
    import_plugin_modules()
    if name in _decorated:
        return _decorated[name]
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise UserError(
            f"unknown method {name!r}",
            where or None,
            "Run 'varbench list methods' to see the installed ones." + did_you_mean(name, available()),
        )
    if len({ep.value for ep in matches}) > 1:
        sources = ", ".join(sorted({ep.value for ep in matches}))
        raise UserError(f"method {name!r} is provided by several packages", sources,
                        "Uninstall one of them.")
    try:
        cls = matches[0].load()
    except ImportError as err:
        raise UserError(f"method {name!r} cannot be imported: {err}", matches[0].value,
                        "Install the package that provides it (and its dependencies).") from None
    _check_method_class(cls, matches[0].value)
    if cls.name != name:
        raise UserError(f"entry point {name!r} points to a method named {cls.name!r}",
                        matches[0].value, "Make the entry-point name equal the class's name.")
    return cls


def _check_method_class(cls: object, where: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError("registered object is not a varbench Method subclass", where,
                        "Subclass varbench.method.Method.")
    for attribute in ("name", "version", "Config"):
        if not hasattr(cls, attribute):
            raise UserError(f"method class lacks the class attribute {attribute!r}", where,
                            "Set name, version and Config on the class.")
