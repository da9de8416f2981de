"""Print an event stream readably, one line per event, timed from the first."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

from ..events import BaseEvent

_QUIET = {"text.start", "text.delta", "tool.call.delta"}
_ENVELOPE = {"v", "seq", "type", "ts", "session_id", "run_id", "call_id", "message_id"}
"""Fields every event has, and a call's name once shown: not repeated on each line."""


async def show(events: AsyncIterator[BaseEvent], *, verbose: bool = False,
               out: TextIO | None = None) -> list[dict[str, Any]]:
    """Print each event as ``+ms  type  tool  details``; a message's text is printed
    once, whole, when it ends (its deltas only with ``verbose``). Returns the events."""
    stream = out or sys.stdout
    start = time.monotonic()
    seen: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    texts: dict[str, list[str]] = {}
    async for event in events:
        wire = event.to_dict()
        seen.append(wire)
        kind = wire["type"]
        stamp = f"{(time.monotonic() - start) * 1000:7.0f} ms"
        if kind == "tool.call.start":
            names[wire["call_id"]] = wire["name"]
        if kind == "text.delta":
            texts.setdefault(wire["message_id"], []).append(wire["delta"])
        if kind == "text.end":
            text = "".join(texts.pop(wire["message_id"], []))
            print(f"{stamp}  {'assistant':<18} {text}", file=stream, flush=True)
            continue
        if kind in _QUIET and not verbose:
            continue
        name = names.get(wire.get("call_id", ""), "")
        details = json.dumps({k: v for k, v in wire.items() if k not in _ENVELOPE and k != "name"},
                             default=str, ensure_ascii=False)
        print(f"{stamp}  {kind:<18} {name:<14} {details[:160]}", file=stream, flush=True)
    return seen
