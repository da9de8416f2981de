from __future__ import annotations

from toolplex import EventLog
from toolplex.events import TextDelta, ToolOutputDelta, ToolResult
from toolplex.server.readers import coalesce


def _log() -> EventLog:
    log = EventLog("s")
    for piece in ("Hel", "lo ", "wor", "ld"):
        log.append(TextDelta(run_id="r", message_id="m1", delta=piece))
    log.append(ToolOutputDelta(run_id="r", call_id="c", attempt=1, index=0, data="a"))
    log.append(ToolOutputDelta(run_id="r", call_id="c", attempt=1, index=1, data="b"))
    log.append(ToolOutputDelta(run_id="r", call_id="c", attempt=1, index=2, data={"x": 1}))
    log.append(ToolResult(run_id="r", call_id="c", output="ab"))
    return log


def test_coalescing_merges_runs_of_deltas_of_the_same_message_and_call() -> None:
    frames = coalesce(_log().replay(0))
    assert [f["type"] for f in frames] == [
        "text.delta", "tool.output.delta", "tool.output.delta", "tool.result"]
    text = frames[0]
    assert (text["delta"], text["from_seq"], text["seq"]) == ("Hello world", 1, 4)
    chunks = frames[1]
    assert (chunks["data"], chunks["index"], chunks["to_index"]) == ("ab", 0, 1)


def test_coalescing_never_merges_structured_chunks_or_other_events() -> None:
    frames = coalesce(_log().replay(0))
    assert frames[2]["data"] == {"x": 1}
    assert "from_seq" not in frames[2]
    assert frames[-1]["seq"] == 8, "the last seq is kept so a reader's cursor stays right"


def test_different_messages_are_not_merged() -> None:
    log = EventLog("s")
    log.append(TextDelta(run_id="r", message_id="m1", delta="a"))
    log.append(TextDelta(run_id="r", message_id="m2", delta="b"))
    assert len(coalesce(log.replay(0))) == 2


async def test_idle_sessions_expire_but_not_while_running_or_read() -> None:
    import time

    from toolplex.server.sessions import SessionStore

    store = SessionStore(idle_ttl=0.0)
    idle, busy, watched = await store.create(), await store.create(), await store.create()
    busy.runs["r_1"] = object()
    store.readers[watched.id] = 1
    assert store.expire(time.monotonic() + 0.01) == [idle.id]
    assert idle.log.closed, "readers of an expired session are woken and end"
    assert store.get(busy.id) is busy and store.get(watched.id) is watched
