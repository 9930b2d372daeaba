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
from collections.abc import Callable
from importlib.metadata import entry_points

from varbench.errors import UserError, did_you_mean
from varbench.method import Method


class Registry:
    """Plugins of one kind (methods, metrics): the entry points of `group`, plus classes
    registered with a decorator in a module named in $VARBENCH_PLUGINS. `check(cls, where)`
    raises a UserError for a class that is not a valid plugin of this kind."""

    def __init__(self, kind: str, group: str, check: Callable[[object, str], None]):
        self.kind, self.group, self.check = kind, group, check
        self.decorated: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: register `cls` under `cls.name`."""
        self.check(cls, f"{cls.__module__}.{cls.__qualname__}")
        other = self.decorated.get(cls.name)
        if other is not None and other is not cls:
            raise UserError(f"{self.kind} name {cls.name!r} registered twice",
                            f"{other.__module__} and {cls.__module__}", "Rename one of them.")
        self.decorated[cls.name] = cls
        return cls

    def available(self) -> dict[str, str]:
        """Name -> where it comes from ('module:Class'); imports only $VARBENCH_PLUGINS."""
        import_plugin_modules()
        names = {ep.name: ep.value for ep in entry_points(group=self.group)}
        for name, cls in self.decorated.items():
            names.setdefault(name, f"{cls.__module__}:{cls.__qualname__}")
        return dict(sorted(names.items()))

    def get(self, name: str, where: str = "") -> type:
        """The class registered as `name`; unknown names fail with close matches."""
        import_plugin_modules()
        if name in self.decorated:
            return self.decorated[name]
        matches = [ep for ep in entry_points(group=self.group) if ep.name == name]
        if not matches:
            raise UserError(f"unknown {self.kind} {name!r}", where or None,
                            f"Run 'varbench list {self.kind}s' to see the installed ones."
                            + did_you_mean(name, self.available()))
        if len({ep.value for ep in matches}) > 1:
            raise UserError(f"{self.kind} {name!r} is provided by several packages",
                            ", ".join(sorted({ep.value for ep in matches})), "Uninstall one of them.")
        try:
            cls = matches[0].load()
        except ImportError as err:
            raise UserError(f"{self.kind} {name!r} cannot be imported: {err}", matches[0].value,
                            "Install the package that provides it (and its dependencies).") from None
        self.check(cls, matches[0].value)
        if cls.name != name:
            raise UserError(f"entry point {name!r} points to a {self.kind} named {cls.name!r}",
                            matches[0].value, "Make the entry-point name equal the class's name.")
        return cls


def import_plugin_modules() -> None:
    """Import the modules listed in $VARBENCH_PLUGINS (their decorators run)."""
    for module in filter(None, (m.strip() for m in os.environ.get("VARBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"cannot import plugin module {module!r}: {err}", "VARBENCH_PLUGINS",
                            "Fix the module name or make it importable (PYTHONPATH).") from None


def _check_method_class(cls: object, where: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError("registered object is not a varbench Method subclass", where,
                        "Subclass varbench.method.Method.")
    for attribute in ("name", "version", "Config"):
        if not hasattr(cls, attribute):
            raise UserError(f"method class lacks the class attribute {attribute!r}", where,
                            "Set name, version and Config on the class.")


GROUP = "varbench.methods"
METHODS = Registry("method", GROUP, _check_method_class)
_decorated = METHODS.decorated  # the decorated methods, by name (tests add to it)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a Method subclass under `cls.name`."""
    return METHODS.register(cls)


def available() -> dict[str, str]:
    """Method name -> where it comes from ('module:Class'); imports only $VARBENCH_PLUGINS."""
    return METHODS.available()


def get_method(name: str, where: str = "") -> type[Method]:
    """The Method class registered as `name`; unknown names fail with close matches."""
    return METHODS.get(name, where)
