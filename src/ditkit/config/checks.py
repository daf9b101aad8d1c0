"""The config dataclasses' checks: every field against its type (a real type object from the
annotations), whether the config came from TOML, JSON or Python, with messages that name the key
and show a value that would do."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing

from ..errors import ConfigError


def require(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {what}")


KINDS = {
    int: "an integer",
    float: "a finite number",
    str: "a string",
    bool: "true or false",
    type(None): "empty",
    dict: "a table",
}
EXAMPLES = {int: 4, float: 0.5, str: "text", bool: True}


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


CHECKS = {
    int: is_int,
    float: lambda v: is_int(v) or (isinstance(v, float) and math.isfinite(v)),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    type(None): lambda v: v is None,
    dict: lambda v: isinstance(v, dict),
}


def alternatives(tp) -> tuple:
    return typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)


def type_ok(value, tp) -> bool:
    """Whether ``value`` (from TOML, JSON or Python) fits the type ``tp`` (a real type object:
    ``int``, ``float | None``, ``list[str]``, ``dict``)."""
    for alt in alternatives(tp):
        if typing.get_origin(alt) is list:
            (item,) = typing.get_args(alt)
            if isinstance(value, list) and all(type_ok(v, item) for v in value):
                return True
        elif alt in CHECKS:
            if CHECKS[alt](value):
                return True
        elif dataclasses.is_dataclass(alt):  # a section of RunConfig
            if isinstance(value, alt):
                return True
        else:  # a new field with a type this checker cannot test: a bug, found by the tests
            raise TypeError(f"config/checks.py has no check for the type {alt!r}")
    return False


def describe_type(tp) -> str:
    parts = []
    for alt in alternatives(tp):
        if typing.get_origin(alt) is list:
            parts.append(f"a list of {KINDS[typing.get_args(alt)[0]].split(' ', 1)[-1]}s")
        else:
            parts.append(KINDS.get(alt) or f"a {alt.__name__} table")
    return " or ".join(parts)


@functools.cache
def types_of(cls) -> dict:
    """Each field's type as an object (the annotations are strings: ``from __future__``)."""
    return typing.get_type_hints(cls)


def check_types(obj, section: str | None) -> None:
    """Every field of the config dataclass ``obj`` against its type, however it was built."""
    for name, tp in types_of(type(obj)).items():
        value = getattr(obj, name)
        if not type_ok(value, tp):
            dotted = f"{section}.{name}" if section else name
            raise ConfigError(
                f"{dotted} = {value!r} is not {describe_type(tp)}; "
                f"e.g. {dotted} = {example(type(obj), name)}"
            )


def example(cls, name: str) -> str:
    f = fields_of(cls)[name]
    if f.default is not dataclasses.MISSING and f.default is not None:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = EXAMPLES.get(alternatives(types_of(cls)[name])[0], 1)
    if dataclasses.is_dataclass(value):  # a section: its keys, not its repr
        return "{" + ", ".join(f"{k} = ..." for k in list(fields_of(type(value)))[:2]) + "}"
    return json.dumps(value)


def check_value(cls, section: str | None, key: str, value, where: str) -> None:
    """Raise ``ConfigError`` naming ``where`` and the key if ``value`` has the wrong type."""
    tp = types_of(cls)[key]
    if type_ok(value, tp):
        return
    dotted = f"{section}.{key}" if section else key
    if where.startswith("--set"):
        fix = f"e.g. --set {dotted}={example(cls, key)}"
    else:
        fix = f"e.g. {key} = {example(cls, key)}" + (f" under [{section}]" if section else "")
    raise ConfigError(f"{where}: {dotted} = {value!r} is not {describe_type(tp)}; {fix}")
