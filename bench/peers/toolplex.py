"""toolplex on an in-memory scripted ``Model`` (ModelChunks straight into the runner, as
the peers' scripted models are), or through its ``OpenAIModel`` at the endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.metadata import version
from typing import Any

from toolplex import Agent, Clock, Limits, OpenAIModel, ToolError, tool
from toolplex.model import CallArgs, CallBegin, CallEnd, Finish, ModelChunk, TextChunk
from toolplex.testing import Call, Step

from ..workloads import (
    FINAL_TEXT,
    Body,
    Flaky,
    Recorder,
    Script,
    ScriptCall,
    Sizes,
    Upstream503,
    endpoint,
    prompt,
    seconds_to_first,
    step_of,
)

NAME = "toolplex"
NOTES: dict[str, str] = {}


def versions() -> str:
    return f"toolplex {version('toolplex')}"


class MemoryModel:
    """The script as ModelChunks, no client and no wire: toolplex's ``Model`` protocol.

    Step n is the n-th assistant message since the latest user message. A call's wait
    comes after its header, before its arguments (as :func:`_step` scripts it for the
    endpoint); each call ends with ``CallEnd``, as a provider's item-done event says.
    """

    def __init__(self, script: Script) -> None:
        self.script = script

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
                     ) -> AsyncIterator[ModelChunk]:
        turns = 0
        for message in reversed(messages):
            if message["role"] == "user":
                break
            turns += message["role"] == "assistant"
        calls = step_of(self.script, turns)
        if not calls:
            yield TextChunk(FINAL_TEXT)
            yield Finish("stop")
            return
        for index, call in enumerate(calls):
            yield CallBegin(index, f"call_{turns}_{index}", call.name)
            if call.after:
                await asyncio.sleep(call.after)
            yield CallArgs(index, json.dumps(call.args))
            yield CallEnd(index)
        yield Finish("tool_calls")


def _step(calls: Sequence[ScriptCall]) -> Step:
    # A ScriptCall's wait comes after its header, before its arguments (a model writing
    # them); Call(after=...) would wait before the header. W3 waits alike for every call.
    waits = {c.after for c in calls}
    if len(waits) == 1 and 0.0 not in waits:
        return Step(calls=[Call(c.name, c.args) for c in calls], arg_fragments=1,
                    arg_delay=waits.pop())
    return Step(calls=[Call(c.name, c.args, after=c.after) for c in calls])


def scripted_steps(script: Script) -> list[Step]:
    """The script as a :class:`ScriptedModel`'s steps (what the endpoint serves)."""
    return [*map(_step, script), Step(text=FINAL_TEXT)]


_CLIENTS: list[OpenAIModel] = []
"""The endpoint's clients made so far, for :func:`aclose`."""


def _model(script: Script) -> MemoryModel | OpenAIModel:
    url = endpoint()
    if url is None:
        return MemoryModel(script)
    _CLIENTS.append(OpenAIModel("scripted", base_url=url, api_key="bench"))
    return _CLIENTS[-1]


async def aclose() -> None:
    """Close the endpoint's clients (their connections) before the loop ends."""
    while _CLIENTS:
        await _CLIENTS.pop().client.close()


def _agent(script: Script, tools: list, max_steps: int, **options: object) -> Agent:
    widest = max(len(calls) for calls in script) + 1
    # The whole history every request, as the peers send it (not the default window).
    limits = Limits(max_steps=max_steps, max_calls_per_step=widest,
                    max_concurrent_calls=widest, max_history_messages=None)
    return Agent(tools=tools, model=_model(script), limits=limits, **options)  # type: ignore[arg-type]


async def _drain(agent: Agent, text: str) -> None:
    async for _ in agent.run(text):
        pass


def prepare(script: Script, bodies: dict[str, Body], max_steps: int,
            **tool_options: object) -> Callable[[], Awaitable[None]]:
    """``tool_options`` go to ``@tool`` (bench/parallel.py: ``side_effects=True``)."""
    tools = [tool(name=n, timeout=30, **tool_options)(b)  # type: ignore[call-overload]
             for n, b in bodies.items()]
    agent, text = _agent(script, tools, max_steps), prompt(script)
    return lambda: _drain(agent, text)


def w5(s: Sizes) -> Callable[[], Awaitable[float]]:
    recorder = Recorder()
    decisive = tool(name="decisive", decisive=lambda result: True)(
        recorder.body("decisive", s.w5_decisive))
    slow = [tool(name=f"slow_{i}", timeout=30)(recorder.body(f"slow_{i}", s.w5_sibling))
            for i in range(2)]
    agent = _agent(s.w5_script(), [decisive, *slow], 3)

    async def measure() -> float:
        start = time.perf_counter()
        await _drain(agent, prompt(s.w5_script()))
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
        return await seconds_to_first(agent.run(prompt(s.w6_script())), is_chunk, start) / s.w6_gap

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
        await _drain(agent, prompt(s.w7_script()))
        wall = (time.perf_counter() - start) * 1000
        flaky.check(s.w7_backoff)
        return wall

    return measure
