"""Leaving ``agent.run()`` early cancels the run cleanly, however the loop is left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from toolplex import Agent, tool
from toolplex.events import BaseEvent
from toolplex.session import Session
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, of_type


@tool(timeout=30)
async def forever(n: int):  # type: ignore[no-untyped-def]
    """Stream ticks for a long time (never ends on its own within the test)."""
    for i in range(100_000):
        await anyio.sleep(0.01)
        yield f"t{i} "


def _agent() -> Agent:
    model = ScriptedModel([Step(calls=[Call("forever", {"n": 1}), Call("forever", {"n": 2})]),
                           Step(text="done")])
    return Agent(tools=[forever], model=model)


def _first_chunk(event: BaseEvent) -> bool:
    return event.type == "tool.output.delta"


async def _plain_break(agent: Agent, session: Session) -> None:
    async for event in agent.run("go", session=session):
        if _first_chunk(event):
            break


async def _aclosing_break(agent: Agent, session: Session) -> None:
    async with aclosing(agent.run("go", session=session)) as events:
        async for event in events:
            if _first_chunk(event):
                break


async def _explicit_aclose(agent: Agent, session: Session) -> None:
    events: AsyncIterator[BaseEvent] = agent.run("go", session=session)
    async for event in events:
        if _first_chunk(event):
            break
    await events.aclose()  # type: ignore[attr-defined]


async def _stream_context(agent: Agent, session: Session) -> None:
    async with agent.stream("go", session=session) as events:
        async for event in events:
            if _first_chunk(event):
                break


@pytest.mark.parametrize("leave", [_plain_break, _aclosing_break, _explicit_aclose,
                                   _stream_context],
                         ids=["break", "aclosing", "aclose", "stream"])
async def test_leaving_the_loop_early_cancels_the_run_cleanly(
        leave: Callable[[Agent, Session], Awaitable[None]]) -> None:
    agent = _agent()
    session = agent.session()
    started = time.monotonic()
    await leave(agent, session)  # raises nothing into the caller
    with anyio.fail_after(5):  # a plain break: the loop's finaliser closes the generator
        while session.runs:
            await anyio.sleep(0.001)
    ended = time.monotonic() - started
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0, "the caller's task is not cancelled"
    await anyio.lowlevel.checkpoint()  # and it still runs
    events: list[dict[str, Any]] = [e.to_dict() for e in session.log.replay()]
    check_protocol(events)  # one terminal event per call and per run
    finished = of_type(events, "run.finished")
    assert [e["outcome"] for e in finished] == ["cancelled"], "one run.finished{cancelled}"
    assert not of_type(events, "run.error")
    cancelled = of_type(events, "tool.cancelled")
    assert sorted(e["reason"] for e in cancelled) == ["run_cancelled"] * 2
    assert ended < 5, "cancelled, not run to the tools' end"
    await agent.aclose()


async def test_leaving_early_returns_promptly() -> None:
    agent = _agent()
    session = agent.session()
    async with aclosing(agent.run("go", session=session)) as events:
        async for event in events:
            if _first_chunk(event):
                left = time.monotonic()
                break
    assert not session.runs, "aclose returns once the run has ended"
    assert time.monotonic() - left < 1.0, "about a loop pass or two, not a tool's timeout"
