"""Settings read from a file checked against the types their dataclass declares, before the dataclass is built.

A config's ``__post_init__`` checks ranges (``depth`` in 2..6), not types: given a float depth it passes the range
check and fails later, deep in the code that builds the net (``'float' object cannot be interpreted as an
integer``), and given a tensor its comparisons raise ``RuntimeError``. Model files and session stores are
untrusted input, so every value they hold is checked here against its field's annotation first and refused with
a ``ValueError`` that names it.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python integer (``True`` and ``False`` are not counted)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a Python int or float that a float holds finite (not a bool; not ``10**400``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as a JSON or ``torch.load`` reader gives it: lists for tuples) is of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return isinstance(value, str) and value in args
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    raise TypeError(f"no check for fields of type {hint!r}")  # a new kind of field: add its check here


#: How a type is said, singular and plural.
_NAMES: dict[Any, tuple[str, str]] = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
                                      float: ("a finite number", "finite numbers"), str: ("a string", "strings")}


def _describe(hint: Any) -> str:
    """How a field's type is said in a refusal ("a list of 3 finite numbers")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_NAMES[args[0]][1]}"
        return f"a list of {len(args)} " + " and ".join(sorted({_NAMES[a][1] for a in args}))
    return _NAMES[hint][0]


def check_fields(kind: type, values: dict[str, Any]) -> None:
    """Refuse values of ``values`` (field name -> value, from a file) not of the type ``kind`` declares.

    Parameters
    ----------
    kind : type
        A dataclass whose fields are of the types :func:`_matches` knows (numbers, booleans, strings,
        literals and tuples of them).
    values : dict
        Field values to check; names that are not fields of ``kind`` are left to the caller.

    Raises
    ------
    ValueError
        Naming the first field whose value is not of its type.
    """
    hints = typing.get_type_hints(kind)
    for f in fields(kind):
        if f.name in values and not _matches(values[f.name], hints[f.name]):
            value = values[f.name]
            shown = repr(value) if value is None or isinstance(value, (bool, int, float, str)) else type(value).__name__
            raise ValueError(f"{kind.__name__}.{f.name} must be {_describe(hints[f.name])}, got {shown}"[:200])
