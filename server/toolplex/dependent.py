"""Dependent calls: an argument that is another call's output, in the same response.

With ``Agent(dependent_calls=True)`` the model may write any argument value (at any
depth) as a reference to another call of the same response::

    {"$from": "call_1", "path": "contact.email"}     # by the id it gave that call
    {"$from": 0, "path": "contact.email"}            # by its position, from 0

The call then waits for that one and receives the value at ``path`` (the whole
output without it). This module reads and fills references; the runner waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FROM = "$from"

CONVENTION = (
    "Tool calls in one response may depend on each other. To pass the result of another "
    "call of the same response as an argument, write that argument as "
    '{"$from": <the position of that call in this response, from 0, or its id>, '
    '"path": "<dotted path into its result, e.g. contact.email>"}; leave "path" out for '
    "the whole result. The call runs once that call has finished, with the value found "
    "there. Chain calls this way instead of waiting for a result to write the next call."
)
"""What the system prompt tells the model when dependent calls are on."""


class BadReference(ValueError):
    """An argument has ``$from`` but is not a reference this module can follow."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One reference: the call it names (an id, or a position) and the path into its output."""

    target: str | int
    path: str = ""

    @property
    def key(self) -> tuple[str | int, str]:
        """What identifies its value among a call's references."""
        return (self.target, self.path)


def refs(args: Any) -> list[Ref]:
    """Every reference in ``args``, depth first.

    Raises:
        BadReference: A ``$from`` object that is not ``{"$from": id | position, "path"?}``.
    """
    found: list[Ref] = []
    _walk(args, found)
    return found


def _walk(value: Any, found: list[Ref]) -> None:
    if isinstance(value, dict):
        if FROM in value:
            found.append(_ref(value))
            return
        for item in value.values():
            _walk(item, found)
    elif isinstance(value, list):
        for item in value:
            _walk(item, found)


def _ref(value: Mapping[str, Any]) -> Ref:
    target, path = value[FROM], value.get("path", "")
    extra = set(value) - {FROM, "path"}
    if extra:
        raise BadReference(f"a $from reference has only $from and path, not {sorted(extra)}")
    if isinstance(target, bool) or not isinstance(target, str | int) or target == "":
        raise BadReference(f"$from must be a call's id or its position, not {target!r}")
    if not isinstance(path, str):
        raise BadReference(f"path must be a dotted string, not {path!r}")
    return Ref(target, path)


def at(output: Any, path: str) -> Any:
    """The value at a dotted ``path`` in a call's output (list items by number).

    Raises:
        LookupError: The path leads nowhere.
    """
    value = output
    for part in path.split(".") if path else ():
        if isinstance(value, list) and part.lstrip("-").isdigit():
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise LookupError(f"no {part!r} in {_short(value)}")
    return value


def fill(args: Any, values: Mapping[tuple[str | int, str], Any]) -> Any:
    """``args`` with every reference replaced by its value."""
    if isinstance(args, dict):
        if FROM in args:
            return values[_ref(args).key]
        return {k: fill(v, values) for k, v in args.items()}
    if isinstance(args, list):
        return [fill(v, values) for v in args]
    return args


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
