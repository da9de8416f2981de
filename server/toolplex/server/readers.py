"""What a reader receives: the log from its cursor, gaps, and coalesced deltas when it lags.

A reader holds only a cursor into the session's log, so a reader that never
reads costs no memory. When it falls ``reader_queue`` events behind, runs of
deltas of the same message or call are merged into one frame (``from_seq``
says where the merged range began); if it stays ``reader_max_lag`` behind for
longer than ``send_timeout``, :class:`SlowReader` ends it: the client resumes
from its last seq on a new connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..events import BaseEvent
from ..session import Session
from .settings import Settings

_BATCH = 256
_MERGE_KEYS = {
    "text.delta": ("message_id",),
    "tool.call.delta": ("call_id",),
    "tool.output.delta": ("call_id", "attempt"),
}


class SlowReader(Exception):
    """The reader stayed too far behind; it should reconnect and resume."""

    def __init__(self, cursor: int, lag: int) -> None:
        super().__init__(f"reader at seq {cursor} is {lag} events behind")
        self.cursor = cursor
        self.lag = lag


def _mergeable(last: dict[str, Any], event: dict[str, Any]) -> bool:
    keys = _MERGE_KEYS.get(event["type"])
    if keys is None or last["type"] != event["type"]:
        return False
    if any(last.get(k) != event.get(k) for k in keys):
        return False
    if event["type"] == "tool.output.delta":
        return isinstance(last["data"], str) and isinstance(event["data"], str)
    return True


def coalesce(events: list[BaseEvent], max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """Merge consecutive deltas of the same message/call; every other event is kept.

    A merged frame carries the last merged ``seq`` and ``from_seq``, the first, and stays
    under ``max_bytes`` of JSON.
    """
    # A character is at most 6 bytes of JSON (a \uXXXX escape): under this many merged
    # characters, a frame is under max_bytes whatever the text.
    room = max((max_bytes - 1024) // 6, 1)
    out: list[dict[str, Any]] = []
    for event in events:
        wire = event.to_dict()
        last = out[-1] if out else None
        if last is not None and _mergeable(last, wire) and _merged_len(last, wire) <= room:
            last.setdefault("from_seq", last["seq"])
            last["seq"], last["ts"] = wire["seq"], wire["ts"]
            if wire["type"] == "tool.output.delta":
                last["data"] += wire["data"]
                last["to_index"] = wire["index"]
            else:
                last["delta"] += wire["delta"]
            continue
        out.append(wire)
    return out


def _merged_len(last: dict[str, Any], event: dict[str, Any]) -> int:
    key = "data" if event["type"] == "tool.output.delta" else "delta"
    return len(last[key]) + len(event[key])


def snapshot(session: Session, max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The ``stream.snapshot`` frames after a gap: the session's messages, in frames under
    ``max_bytes`` of JSON each; every frame but the last says ``more: true``.

    A message too large for a frame of its own is cut, and says ``truncated: true``.
    """
    budget = max_bytes - 512  # the frame's own keys
    frames: list[dict[str, Any]] = []
    part: list[dict[str, Any]] = []
    used = 0
    for message in session.history:
        size = len(json.dumps(message, ensure_ascii=False, default=str).encode())
        if size > budget:
            message, size = _cut_message(message, budget)
        if part and used + size + 1 > budget:
            frames.append({"type": "stream.snapshot", "session_id": session.id,
                           "messages": part, "more": True})
            part, used = [], 0
        part.append(message)
        used += size + 1
    frames.append({"type": "stream.snapshot", "session_id": session.id, "messages": part})
    return frames


def _cut_message(message: dict[str, Any], budget: int) -> tuple[dict[str, Any], int]:
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    keep = max(budget // 6 - 256, 0)
    cut = {"role": message.get("role", "user"), "content": text[:keep], "truncated": True}
    return cut, len(json.dumps(cut, ensure_ascii=False).encode())


def hello(session: Session, resume_from: int) -> dict[str, Any]:
    """The ``stream.hello`` frame that opens every connection (not logged)."""
    return {"type": "stream.hello", "session_id": session.id,
            "head_seq": session.log.head_seq, "resume_from": resume_from}


async def frames(
    session: Session, after: int, settings: Settings, *, counters: dict[str, int] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every frame a reader with cursor ``after`` gets, live, until the log closes.

    Raises:
        SlowReader: The reader stayed ``reader_max_lag`` behind too long.
    """
    async for batch in batches(session, after, settings, counters=counters):
        for frame in batch:
            yield frame


async def batches(
    session: Session, after: int, settings: Settings, *, counters: dict[str, int] | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """:func:`frames`, a ready batch at a time (a transport sends it in one go)."""
    log = session.log
    cursor = after
    behind_since: float | None = None
    while True:
        gap = log.gap_after(cursor)
        if gap is not None:
            # [protocol] after older than the retained log: stream.gap, then a snapshot.
            # [protocol] every frame under max_event_bytes: the snapshot in parts.
            yield [{"type": "stream.gap", "from_seq": gap.from_seq, "to_seq": gap.to_seq},
                   *snapshot(session, settings.max_event_bytes)]
            cursor = gap.to_seq
        lag = log.head_seq - cursor
        if lag > settings.reader_max_lag:
            behind_since = behind_since or time.monotonic()
            if time.monotonic() - behind_since > settings.send_timeout:
                raise SlowReader(cursor, lag)
        else:
            behind_since = None
        events = log.replay(cursor, _BATCH)
        if events:
            cursor = events[-1].seq
            if lag > settings.reader_queue:
                ready = coalesce(events, settings.max_event_bytes)
                if counters is not None:
                    counters["coalesced"] = counters.get("coalesced", 0) + len(events) - len(ready)
            else:
                ready = [event.to_dict() for event in events]
            # A reader's frames may outlive it in a reference cycle (a cancelled task's
            # traceback) until a full GC: they hold no events, and the transport clears
            # `ready` once sent.
            events.clear()
            yield ready
        elif log.closed:
            return
        else:
            await log.wait_beyond(cursor)
