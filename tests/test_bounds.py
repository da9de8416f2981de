"""Bounded by bytes, not only by count: events, frames, the window, the model's history."""

from __future__ import annotations

import json

from toolplex import Agent, EventLog, Limits, tool
from toolplex.events import TextDelta, ToolOutputDelta
from toolplex.server.readers import coalesce, snapshot
from toolplex.session import Session
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


def _bytes(frame: dict[str, object]) -> int:
    return len(json.dumps(frame, ensure_ascii=False).encode())


def test_the_window_keeps_a_byte_budget_beside_its_count() -> None:
    log = EventLog("s", retain=1000, retain_bytes=50_000)
    for _ in range(100):
        log.append(TextDelta(run_id="r", message_id="m", delta="x" * 1000))
    assert log.head_seq == 100
    assert log.retained_bytes <= 50_000
    assert 40 <= 100 - log.first_seq + 1 < 50, "the oldest events left the window first"
    assert log.gap_after(0) is not None, "a cursor before the window learns of the gap"


def test_merged_deltas_stay_under_the_frame_bound() -> None:
    log = EventLog("s")
    events = [log.append(ToolOutputDelta(run_id="r", call_id="c", attempt=1, index=i,
                                         data="é" * 1000)) for i in range(100)]
    frames = coalesce(events, max_bytes=64 * 1024)
    assert all(_bytes(f) <= 64 * 1024 for f in frames)
    assert "".join(f["data"] for f in frames) == "é" * 100_000, "nothing lost in merging"
    assert 1 < len(frames) < 100, "merged, in several frames"


def test_a_gap_snapshot_goes_out_in_frames_under_the_bound() -> None:
    session = Session()
    session.history = [{"role": "user", "content": f"{i} " + "y" * 3000} for i in range(100)]
    session.history.append({"role": "assistant", "content": "z" * 200_000})
    frames = snapshot(session, max_bytes=64 * 1024)
    assert all(_bytes(f) <= 64 * 1024 for f in frames)
    assert [f.get("more") for f in frames] == [True] * (len(frames) - 1) + [None]
    messages = [m for f in frames for m in f["messages"]]  # type: ignore[union-attr]
    assert messages[:100] == session.history[:100], "in order, whole when they fit"
    assert messages[100]["truncated"] is True and messages[100]["role"] == "assistant"


async def test_the_history_sent_to_the_model_has_a_bound() -> None:
    model = ScriptedModel([Step(text="ok")], keep_requests=1)
    agent = Agent(model=model, limits=Limits(max_history_messages=10))
    session = agent.session()
    for i in range(20):
        await collect(agent, f"turn {i}", session=session)
    sent = model.requests[-1]["messages"]
    assert len(sent) <= 10 and sent[-1]["content"] == "turn 19"
    assert len(session.history) == 40, "the session keeps the whole history"


async def test_the_bounded_history_never_starts_on_a_tool_message() -> None:
    @tool
    async def echo(text: str) -> str:
        """Echo."""
        return text

    model = ScriptedModel([Step(calls=[Call("echo", {"text": "a"}), Call("echo", {"text": "b"})]),
                           Step(text="ok")], keep_requests=4)
    agent = Agent(tools=[echo], model=model, limits=Limits(max_history_messages=2))
    await collect(agent, "go")
    sent = model.requests[-1]["messages"]
    assert sent[0]["role"] == "assistant" and "tool_calls" in sent[0], "the calls come along"


def test_the_served_demo_model_keeps_no_request_bodies() -> None:
    from toolplex.demo.agent import demo_model

    assert demo_model().requests.maxlen == 0
    assert ScriptedModel().requests.maxlen == 100, "a test's model keeps a bounded few"


@tool(retries=0)
async def huge(mib: int):  # type: ignore[no-untyped-def]
    """Yield one chunk of `mib` MiB."""
    yield "x" * (mib << 20)


async def test_a_chunk_over_max_event_bytes_ends_the_call_output_too_large() -> None:
    model = ScriptedModel([Step(calls=[Call("huge", {"mib": 2})]), Step(text="ok")])
    events = await collect(Agent(tools=[huge], model=model), "go")
    check_protocol(events)
    (error,) = of_type(events, "tool.error")
    assert error["error"]["code"] == "output_too_large"
    assert not of_type(events, "tool.output.delta"), "the chunk never entered the log"
    assert all(len(json.dumps(e)) < 1 << 20 for e in events)
