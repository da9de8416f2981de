"""JSON-safe values: what a tool returns, turned into JSON once, as it enters the log.

[protocol] Every logged event is valid JSON (RFC 8259: no ``NaN``, no ``Infinity``)
before it enters the log. A value with an obvious JSON form gets it:

======================================  ==============================================
``datetime``, ``date``, ``time``        ISO 8601 string (``isoformat()``)
``set``, ``frozenset``, ``tuple``       list (a set sorted when its items compare)
``bytes``, ``bytearray``, memoryview    ``{"$bytes": "<base64>"}``
``Decimal``, ``UUID``, ``Path``         string
``Enum``                                its value
dataclass, pydantic model               object (a model as ``model_dump(mode="json")``)
``float("nan")``, ``±inf``              the strings ``"NaN"``, ``"Infinity"``,
                                        ``"-Infinity"`` (``null`` would lose the fact)
======================================  ==============================================

Anything else raises :class:`~toolplex.exceptions.UnserializableOutput` naming its type
(a call then ends with ``tool.error`` ``unserializable_output``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import pydantic

from .exceptions import UnserializableOutput

MAX_DEPTH = 64
"""Nesting deeper than this is refused (a cycle would otherwise recurse forever)."""

_SCALARS = (str, int, bool, type(None))


class Sized:
    """A running lower bound of a value's encoded size in bytes (one byte per character;
    the exact UTF-8 and escaping cost is measured only when this gets near a limit)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


def jsonable(value: Any, sized: Sized | None = None) -> Any:
    """``value`` with every part in its JSON form (the same object when it already is).

    Raises:
        UnserializableOutput: A part has no JSON form, or nesting is deeper than
            :data:`MAX_DEPTH`.
    """
    return _safe(value, 0, sized or Sized())


def _safe(value: Any, depth: int, sized: Sized) -> Any:
    kind = type(value)
    if kind is str:
        sized.bytes += len(value) + 2
        return value
    if kind is int or kind is bool or value is None:
        sized.bytes += 4
        return value
    if kind is float:
        sized.bytes += 8
        return value if math.isfinite(value) else _non_finite(value)
    if depth >= MAX_DEPTH:
        raise UnserializableOutput(kind.__name__, f"nested deeper than {MAX_DEPTH} levels")
    if kind is dict:
        return _mapping(value, depth, sized)
    if kind is list:
        return _sequence(value, value, depth, sized)
    return _other(value, depth, sized)


def _mapping(value: Mapping[Any, Any], depth: int, sized: Sized) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for index, (key, item) in enumerate(value.items()):
        safe_key = key if type(key) is str else _key(key)
        sized.bytes += len(safe_key) + 4
        safe = _safe(item, depth + 1, sized)
        if out is None and (safe is not item or safe_key is not key):
            out = dict(list(value.items())[:index])  # the keys before were already safe
        if out is not None:
            out[safe_key] = safe
    if out is None and type(value) is not dict:
        out = dict(value)
    return value if out is None else out  # type: ignore[return-value]


def _sequence(original: Any, items: Any, depth: int, sized: Sized) -> list[Any]:
    out: list[Any] | None = None
    for index, item in enumerate(items):
        sized.bytes += 1
        safe = _safe(item, depth + 1, sized)
        if out is None and safe is not item:
            out = list(items[:index]) if isinstance(items, list) else list(items)[:index]
        if out is not None:
            out.append(safe)
    if out is None:
        return original if type(original) is list else list(items)
    return out


def _other(value: Any, depth: int, sized: Sized) -> Any:
    if isinstance(value, enum.Enum):
        return _safe(value.value, depth + 1, sized)
    if isinstance(value, str):
        return _safe(str(value), depth, sized)
    if isinstance(value, int):
        return _safe(int(value), depth, sized)
    if isinstance(value, float):
        return _safe(float(value), depth, sized)
    if isinstance(value, Mapping):
        return _mapping(value, depth, sized)
    if isinstance(value, (list, tuple)):
        return _sequence(value, list(value), depth, sized)
    if isinstance(value, (set, frozenset)):
        try:
            items = sorted(value)
        except TypeError:
            items = list(value)
        return _sequence(items, items, depth, sized)
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = base64.b64encode(bytes(value)).decode("ascii")
        sized.bytes += len(text) + 12
        return {"$bytes": text}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return _safe(value.isoformat(), depth, sized)
    if isinstance(value, (decimal.Decimal, uuid.UUID, PurePath)):
        return _safe(str(value), depth, sized)
    if isinstance(value, pydantic.BaseModel):
        return _safe(value.model_dump(mode="json"), depth + 1, sized)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _mapping(fields, depth, sized)
    raise UnserializableOutput(type(value).__name__)


def _key(key: Any) -> str:
    """A dict key's JSON form: json.dumps's for scalars, the string forms above, else refused."""
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, float):
        return repr(key) if math.isfinite(key) else _non_finite(key)
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, enum.Enum):
        return _key(key.value)
    if isinstance(key, str):
        return str(key)
    if isinstance(key, (datetime.datetime, datetime.date, datetime.time)):
        return key.isoformat()
    if isinstance(key, (decimal.Decimal, uuid.UUID, PurePath)):
        return str(key)
    raise UnserializableOutput(type(key).__name__, "a dict key with no string form")


def _non_finite(value: float) -> str:
    # [protocol] never a bare NaN or Infinity on the wire; null is not used because
    # optional fields are omitted, never null, and a reader could not tell it from nothing.
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"
