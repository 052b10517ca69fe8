"""Setting values as YAML, JSON and the command line give them, made into the type a configuration field declares.

PyYAML reads ``1e-3`` as a string and ``yes`` as a bool; JSON has no integers apart from floats' look. So a value is
coerced where the meaning is plain (the string "1e-3" in a float field, 1e4 in an integer field) and refused with the
field named otherwise (a bool or a fraction in an integer field, NaN or infinity anywhere, a number in a text field).
"""

from __future__ import annotations

import math
import types
import typing


def optional_type(hint) -> tuple[object, bool]:
    """(the type a field's values have, None aside; whether None is allowed) from its annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return others[0], len(others) < len(typing.get_args(hint))
    return hint, False


def coerce(name: str, value, hint):
    """``value`` as a value of the annotation ``hint``: int, float, bool, str, dict, list[X], each optionally
    ``| None``. Raises ValueError naming the field ``name`` when the value cannot mean one."""
    kind, nullable = optional_type(hint)
    if value is None:
        if nullable:
            return None
        raise ValueError(f"{name} cannot be null")
    if kind is bool:
        return _bool(name, value)
    if kind in (int, float):
        return _number(name, value, kind)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r} (quote it in a config file)")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping of names to values, got {value!r}")
        return value
    if typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        item = typing.get_args(kind)[0]
        return [coerce(f"{name}[{index}]", element, item) for index, element in enumerate(value)]
    raise TypeError(f"{name}: no coercion to {hint}")


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _number(name: str, value, kind: type) -> int | float:
    """An int or a finite float from a number, or from text that reads as one; bools refused."""
    wanted = "an integer" if kind is int else "a number"
    number = value
    if isinstance(value, str):
        try:
            number = int(value) if kind is int and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise ValueError(f"{name} must be {wanted}, got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if kind is float:
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(number)
