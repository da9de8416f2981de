"""Print an event stream readably, one line per event, timed from the first."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..events import BaseEvent

_QUIET = {"text.delta", "tool.call.delta"}


async def show(events: AsyncIterator[BaseEvent], *, verbose: bool = False) -> list[dict[str, Any]]:
    """Print each event as ``+ms  type  details``; text deltas are printed inline."""
    start = time.monotonic()
    seen: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    async for event in events:
        wire = event.to_dict()
        seen.append(wire)
        kind = wire["type"]
        if kind == "tool.call.start":
            names[wire["call_id"]] = wire["name"]
        if kind == "text.delta":
            continue
        if kind in _QUIET and not verbose:
            continue
        if kind == "text.end":
            continue
        details = {k: v for k, v in wire.items()
                   if k not in {"v", "seq", "type", "ts", "session_id", "run_id", "call_id",
                                "message_id"}}
        names.get(wire.get("call_id", ""), "")
        (time.monotonic() - start) * 1000
        json.dumps(details, default=str)
    return seen
