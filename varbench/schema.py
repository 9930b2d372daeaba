"""Typed configuration from plain YAML/JSON data.

Protocol sections and method configs are dataclasses. `from_dict` builds one from the
parsed YAML, checking every key and type against the dataclass's type hints, so a typo
or a wrong type is one clear error naming the file and the key path ("arms[1].config.lr")
with a "did you mean" for near misses. `to_dict` turns a config back into plain data
(for hashing into run ids and for manifests).

Numbers are checked too: every float must be finite (a NaN never equals itself, so it
would poison run ids and run.json) and every int must fit in 64 bits (torch, NumPy and
the seeding code take int64). A field may narrow that with a range in its metadata,
`field(default=4, metadata={"range": (1, 1000)})`, and a string field (or the strings of
a list or dict field) with a regular expression that must match in full,
`metadata={"pattern": r"[a-z]+"}`; a dict field's keys with `"key_pattern"`.

A field marked `metadata={"execution": KEY}` is an execution option (a speed switch: the
same result, computed faster): in a protocol (within `execution_apart()`) it cannot be set
in the section itself, only through an `execution:` mapping (varbench.execution), and
`identity_dict` leaves it out of ids.

A field marked `metadata={"added": True}` was added after ids were published:
`identity_dict` hashes it only when its value differs from the field's default, so every
run made before the field existed keeps its id (and its finished results).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
import re
import reprlib
import types
import typing
from typing import Any, Literal, TypeVar, Union

from varbench.errors import UserError, did_you_mean

T = TypeVar("T")
EXECUTION = "execution"  # field metadata key: the field is an execution option of this name
ADDED = "added"  # field metadata key: hashed into ids only when set to a non-default value

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what torch, NumPy and the seeding code accept
PLAIN_DEPTH = 64  # nesting limit of untyped (Any) values; YAML loading allows less


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
                f"unknown key {excerpt(key)} at {path or 'top level'}",
                source,
                "Remove it or fix the spelling." + (did_you_mean(key, fields) if isinstance(key, str) else ""),
            )
    kwargs = {}
    for name, field in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in data and EXECUTION in field.metadata and _execution_apart.get():
            key = field.metadata[EXECUTION]
            raise UserError(f"{key_path} is an execution option (speed only, never part of a result)", source,
                            f"Set it under 'execution:' as {key}: ..., for the protocol or for one arm "
                            f"(or 'varbench run --set execution.{key}=...').")
        if name in data:
            kwargs[name] = check_field(field, convert(hints[name], data[name], source, key_path), source, key_path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserError(f"missing required key {key_path!r}", source, f"Add '{name}:' to it.")
    return cls(**kwargs)


def convert_field(cls: type, name: str, value: Any, where: str) -> Any:
    """Check one value for field `name` of dataclass `cls` as from_dict would (type, range,
    pattern); for values that do not come from a file, e.g. command-line flags (`where`)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return check_field(field, convert(typing.get_type_hints(cls)[name], value, where, name), where, name)


def check_field(field: dataclasses.Field, value: Any, source: str, path: str) -> Any:
    """Apply a field's metadata: "range" (lo, hi) to a number, "pattern" to strings,
    "key_pattern" to a dict's keys. None (an unset optional) is never checked."""
    if value is None:
        return value
    bounds = field.metadata.get("range")
    if bounds is not None:
        check_range(value, bounds, source, path)
    pattern = field.metadata.get("pattern")
    if pattern is not None:
        for key, text in _strings(value, path):
            check_pattern(text, pattern, source, key)
    key_pattern = field.metadata.get("key_pattern")
    if key_pattern is not None and isinstance(value, dict):
        for key in value:
            check_pattern(key, key_pattern, source, f"{path} key")
    return value


def check_range(value: int | float, bounds: tuple[float, float], source: str, path: str) -> None:
    low, high = bounds
    if value < low:
        raise UserError(f"{path} must be at least {low}, got {excerpt(value)}", source)
    if value > high:
        raise UserError(f"{path} must be at most {high}, got {excerpt(value)}", source)


def check_pattern(text: str, pattern: str, source: str, path: str) -> None:
    if not re.fullmatch(pattern, text):
        raise UserError(f"{path} is {excerpt(text)}, which is not allowed here", source,
                        f"It must match the pattern {pattern} (no spaces, quotes or control characters).")


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    """(key path, text) of a string field's value, a list's items or a dict's values."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [(f"{path}.{key_text(k)}", v) for k, v in value.items() if isinstance(v, str)]
    if isinstance(value, (list, tuple)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def convert(hint: Any, value: Any, source: str, path: str) -> Any:
    """Check `value` against type `hint`, converting containers and nested dataclasses."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        _check_plain(value, source, path, 0)
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, path)
    if origin in (Union, types.UnionType):
        return _convert_union(args, value, source, path)
    if origin is Literal:
        if not isinstance(value, typing.Hashable) or value not in args:
            choices = ", ".join(repr(a) for a in args)
            hint_text = did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else ""
            raise UserError(f"{path} is {excerpt(value)}, expected one of {choices}", source, hint_text.strip() or None)
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        return _convert_sequence(hint, origin or hint, args, value, source, path)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _type_error(source, path, "a mapping", value)
        key_t, val_t = args if args else (Any, Any)
        return {
            convert(key_t, k, source, f"{path}.{key_text(k)}"): convert(val_t, v, source, f"{path}.{key_text(k)}")
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
    if hint in (int, float) and isinstance(value, bool):
        raise _type_error(source, path, _type_name(hint), value)
    if hint in (int, float) and isinstance(value, int):
        check_range(value, (INT_MIN, INT_MAX), source, path)  # before float(): 10**400 overflows
        return float(value) if hint is float else value
    if hint is float and isinstance(value, float):
        _check_finite(value, source, path)
        return value
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _type_error(source, path, _type_name(hint), value)


def _check_finite(value: float, source: str, path: str) -> None:
    if not math.isfinite(value):
        raise UserError(f"{path} must be a finite number, got {value}", source, "Write an ordinary number.")


def _check_plain(value: Any, source: str, path: str, depth: int) -> None:
    """Untyped (Any) values obey the same number rules, at any depth."""
    if depth > PLAIN_DEPTH:
        raise UserError(f"{path} is nested more than {PLAIN_DEPTH} levels deep", source, "Flatten it.")
    if isinstance(value, float):
        _check_finite(value, source, path)
    elif isinstance(value, int) and not isinstance(value, bool):
        check_range(value, (INT_MIN, INT_MAX), source, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, source, f"{path}.{key_text(key)}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, source, f"{path}[{index}]", depth + 1)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _type_error(source: str, path: str, expected: str, value: Any) -> UserError:
    return UserError(
        f"{path or 'top level'} should be {expected}, got {type(value).__name__} {excerpt(value)}",
        source,
    )


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 4, 3, 3


def excerpt(value: Any, limit: int = 40) -> str:
    """A short, one-line, printable repr of any value for error messages: long values are
    cut, control characters escaped, big or nested containers abbreviated."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"<a {value.bit_length()}-bit number>"  # repr() refuses ints over 4300 digits
    text = _SHORT.repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_text(key: Any) -> str:
    """A mapping key as it appears in a key path: as written when short and printable."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 40:
        return key
    return excerpt(key)


_execution_apart: ContextVar[bool] = ContextVar("execution_apart", default=False)


@contextmanager
def execution_apart() -> Iterator[None]:
    """Within this block `from_dict` refuses execution fields (a protocol's sections: there
    they belong under `execution:`); Python callers building a config may set them."""
    token = _execution_apart.set(True)
    try:
        yield
    finally:
        _execution_apart.reset(token)


def execution_fields(cls: type) -> dict[str, str]:
    """{execution key: field name} of the fields of dataclass `cls` marked as execution
    options (`metadata={"execution": KEY}`): how fast a result is computed, never what it
    is. They are set only through `execution:` and left out of `identity_dict`."""
    return {f.metadata[EXECUTION]: f.name for f in dataclasses.fields(cls) if EXECUTION in f.metadata}


def identity_dict(config: Any) -> dict[str, Any]:
    """`to_dict(config)` without its execution fields, and without its added fields where
    they hold their default (module docstring): what is hashed into ids."""
    skipped = set(execution_fields(type(config)).values())
    skipped |= {f.name for f in dataclasses.fields(config)
                if f.metadata.get(ADDED) and getattr(config, f.name) == _default(f)}
    return {name: value for name, value in to_dict(config).items() if name not in skipped}


def _default(spec: dataclasses.Field) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def to_dict(config: Any) -> Any:
    """Plain, JSON-ready data of a (nested) dataclass config."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {str(k): to_dict(v) for k, v in config.items()}
    return config
