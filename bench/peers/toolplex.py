"""toolplex on its ScriptedModel (the real ``openai`` SDK streaming path, in-process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version

from toolplex import Agent, Clock, Limits, ToolError, tool
from toolplex.testing import Call, ScriptedModel, Step

from ..workloads import (
    Body,
    Flaky,
    Recorder,
    Script,
    ScriptCall,
    Sizes,
    Upstream503,
    seconds_to_first,
)

NAME = "toolplex"
NOTES: dict[str, str] = {}


def versions() -> str:
    return f"toolplex {version('toolplex')}"


def _step(calls: Sequence[ScriptCall]) -> Step:
    # A ScriptCall's wait comes after its header, before its arguments (a model writing
    # them); Call(after=...) would wait before the header. W3 waits alike for every call.
    waits = {c.after for c in calls}
    if len(waits) == 1 and 0.0 not in waits:
        return Step(calls=[Call(c.name, c.args) for c in calls], arg_fragments=1,
                    arg_delay=waits.pop())
    return Step(calls=[Call(c.name, c.args, after=c.after) for c in calls])


def _model(script: Script) -> ScriptedModel:
    return ScriptedModel([*map(_step, script), Step(text="done")])


def _agent(script: Script, tools: list, max_steps: int, **options: object) -> Agent:
    widest = max(len(calls) for calls in script) + 1
    limits = Limits(max_steps=max_steps, max_calls_per_step=widest,
                    max_concurrent_calls=widest)
    return Agent(tools=tools, model=_model(script), limits=limits, **options)  # type: ignore[arg-type]


async def _drain(agent: Agent) -> None:
    async for _ in agent.run("go"):
        pass


def prepare(script: Script, bodies: dict[str, Body], max_steps: int,
            **tool_options: object) -> Callable[[], Awaitable[None]]:
    """``tool_options`` go to ``@tool`` (bench/parallel.py: ``side_effects=True``)."""
    tools = [tool(name=n, timeout=30, **tool_options)(b)  # type: ignore[call-overload]
             for n, b in bodies.items()]
    agent = _agent(script, tools, max_steps)
    return lambda: _drain(agent)


def w5(s: Sizes) -> Callable[[], Awaitable[float]]:
    recorder = Recorder()
    decisive = tool(name="decisive", decisive=lambda result: True)(
        recorder.body("decisive", s.w5_decisive))
    slow = [tool(name=f"slow_{i}", timeout=30)(recorder.body(f"slow_{i}", s.w5_sibling))
            for i in range(2)]
    agent = _agent(s.w5_script(), [decisive, *slow], 3)

    async def measure() -> float:
        start = time.perf_counter()
        await _drain(agent)
        return (time.perf_counter() - start) * 1000

    return measure


def w6(s: Sizes) -> Callable[[], Awaitable[float]]:
    @tool(name="stream")
    async def stream(key: str):  # type: ignore[no-untyped-def]
        """Yield chunks a fixed gap apart."""
        for i in range(s.w6_chunks):
            await asyncio.sleep(s.w6_gap)
            yield {"i": i}

    agent = _agent(s.w6_script(), [stream], 3)

    async def measure() -> float:
        start = time.perf_counter()
        is_chunk = lambda e: e.type == "tool.output.delta"  # noqa: E731
        return await seconds_to_first(agent.run("go"), is_chunk, start) / s.w6_gap

    return measure


def w7(s: Sizes) -> Callable[[], Awaitable[float]]:
    flaky = Flaky(s.w7_failures)

    @tool(name="flaky", retries=s.w7_failures + 1)
    async def flaky_tool(key: str) -> str:
        """Fail with 503 a few times, then answer."""
        try:
            return flaky.attempt(time.perf_counter())
        except Upstream503 as exc:
            raise ToolError(str(exc), status=exc.status) from None

    # The default backoff (1 s, 2 s, 4 s) scaled down: the first wait is w7_backoff.
    agent = _agent(s.w7_script(), [flaky_tool], 3, clock=Clock(scale=s.w7_backoff))

    async def measure() -> float:
        flaky.attempts.clear()
        start = time.perf_counter()
        await _drain(agent)
        wall = (time.perf_counter() - start) * 1000
        flaky.check(s.w7_backoff)
        return wall

    return measure
