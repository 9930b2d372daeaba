"""Typed configuration from plain YAML/JSON data.

Protocol sections and method configs are dataclasses. `from_dict` builds one from the
parsed YAML, checking every key and type against the dataclass's type hints, so a typo
or a wrong type is one clear error naming the file and the key path ("arms[1].config.lr")
with a "did you mean" for near misses. `to_dict` turns a config back into plain data
(for hashing into run ids and for manifests).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from varbench.errors import UserError, did_you_mean

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, source: str, path: str = "") -> T:
    """Build dataclass `cls` from `data`; `source` names the file for error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _type_error(source, path, "a mapping", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            raise UserError(
                f"unknown key {key!r} at {path or 'top level'}",
                source,
                "Remove it or fix the spelling." + did_you_mean(str(key), fields),
            )
    kwargs = {}
    for name, field in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = convert(hints[name], data[name], source, key_path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserError(f"missing required key {key_path!r}", source, f"Add '{name}:' to it.")
    return cls(**kwargs)


def convert(hint: Any, value: Any, source: str, path: str) -> Any:
    """Check `value` against type `hint`, converting containers and nested dataclasses."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, path)
    if origin in (Union, types.UnionType):
        return _convert_union(args, value, source, path)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            hint_text = did_you_mean(str(value), [str(a) for a in args])
            raise UserError(f"{path} is {value!r}, expected one of {choices}", source, hint_text.strip() or None)
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        return _convert_sequence(hint, origin or hint, args, value, source, path)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _type_error(source, path, "a mapping", value)
        key_t, val_t = args if args else (Any, Any)
        return {
            convert(key_t, k, source, f"{path}.{k}"): convert(val_t, v, source, f"{path}.{k}")
            for k, v in value.items()
        }
    return _convert_scalar(hint, value, source, path)


def _convert_union(args: tuple, value: Any, source: str, path: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for option in args:
        if option is type(None):
            continue
        try:
            return convert(option, value, source, path)
        except UserError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    names = " or ".join(_type_name(a) for a in args if a is not type(None))
    raise _type_error(source, path, names, value)


def _convert_sequence(hint, container, args, value, source, path):
    if not isinstance(value, (list, tuple)):
        raise _type_error(source, path, "a list", value)
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _type_error(source, path, f"a list of {len(args)} items", value)
        items = [convert(a, v, source, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
    else:
        item_t = args[0] if args else Any
        items = [convert(item_t, v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if container is tuple else items


def _convert_scalar(hint: Any, value: Any, source: str, path: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise _type_error(source, path, _type_name(hint), value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _type_error(source, path, _type_name(hint), value)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _type_error(source: str, path: str, expected: str, value: Any) -> UserError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return UserError(
        f"{path or 'top level'} should be {expected}, got {type(value).__name__} {shown}",
        source,
    )


def to_dict(config: Any) -> Any:
    """Plain, JSON-ready data of a (nested) dataclass config."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {str(k): to_dict(v) for k, v in config.items()}
    return config
