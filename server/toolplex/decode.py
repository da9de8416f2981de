"""Decoding untrusted JSON: nesting bounded before the decoder recurses.

``json.loads`` recurses on the C stack once per nesting level: 100,000 nested arrays
raise ``RecursionError`` from deep inside a handler. :func:`loads` counts the nesting
first, linearly and without recursion, and refuses past :data:`MAX_DEPTH` with a typed
:class:`~toolplex.exceptions.ProtocolError`; only then does ``json`` decode.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .exceptions import ProtocolError

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted from a client, a webhook or a model."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def depth(raw: bytes, enough: int = MAX_DEPTH) -> int:
    """How deeply ``raw``'s arrays and objects nest (brackets inside strings not counted).

    At most ``enough`` brackets in all: that count is returned unscanned (an upper bound).
    """
    opened = raw.count(b"[") + raw.count(b"{")
    if opened <= enough:
        return opened
    level = deepest = 0
    for byte in _STRING.sub(b"", raw).translate(None, _NOT_BRACKET):
        if byte in b"[{":
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest


def check_depth(raw: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Refuse ``raw`` when its arrays and objects nest deeper than ``max_depth``.

    Raises:
        ProtocolError: ``too_deep``.
    """
    if depth(raw, max_depth) > max_depth:
        raise ProtocolError("too_deep", f"the JSON nests deeper than {max_depth} levels")


def loads(raw: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Decode JSON from an untrusted sender.

    Raises:
        ProtocolError: ``too_deep`` when arrays and objects nest deeper than
            ``max_depth``; ``bad_json`` when ``raw`` is not JSON (or not UTF-8).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    check_depth(data, max_depth)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", f"the frame is not JSON: {exc}") from None
