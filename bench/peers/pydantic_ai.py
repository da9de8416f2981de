"""PydanticAI: an ``Agent`` on a ``FunctionModel`` (pydantic_ai.models.function) whose
function and stream function replay the script, or on ``OpenAIChatModel`` at the
endpoint (streamed: ``run_stream_events``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pydantic_ai import Agent, CustomEvent, RunContext, Tool, UsageLimits
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from ..workloads import (
    FINAL_TEXT,
    Body,
    Script,
    ScriptCall,
    Sizes,
    endpoint,
    prompt,
    seconds_to_first,
    step_of,
    w5_cannot,
    w7_with_wrapper,
)

NAME = "PydanticAI"
NOTES: dict[str, str] = {
    "w6": "tool emits a CustomEvent per chunk with ctx.emit(); caller reads run_stream_events()",
    "w7": "wrapper: its tool retries re-ask the model (ModelRetry), no backoff, so a 12-line "
          "retry-with-backoff loop around the tool function (bench/workloads.py: retrying)",
}


def versions() -> str:
    text = f"pydantic-ai-slim {version('pydantic-ai-slim')}"
    return text + (f", openai {version('openai')}" if endpoint() else "")


def _calls(messages: list[ModelMessage], script: Script) -> tuple[list[ScriptCall], int]:
    last_user = max(i for i, m in enumerate(messages) if isinstance(m, ModelRequest)
                    and any(isinstance(p, UserPromptPart) for p in m.parts))
    turns = sum(isinstance(m, ModelResponse) for m in messages[last_user + 1:])
    return list(step_of(script, turns)), turns


def _model(script: Script) -> FunctionModel:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls, turns = _calls(messages, script)
        for call in calls:
            if call.after:
                await asyncio.sleep(call.after)
        if not calls:
            return ModelResponse(parts=[TextPart(FINAL_TEXT)])
        return ModelResponse(parts=[ToolCallPart(c.name, dict(c.args), f"call_{turns}_{i}")
                                    for i, c in enumerate(calls)])

    async def stream(messages: list[ModelMessage], info: AgentInfo
                     ) -> AsyncIterator[str | DeltaToolCalls]:
        calls, turns = _calls(messages, script)
        if not calls:
            yield FINAL_TEXT
        for i, call in enumerate(calls):
            if call.after:
                await asyncio.sleep(call.after)
            yield {i: DeltaToolCall(call.name, json.dumps(call.args),
                                    tool_call_id=f"call_{turns}_{i}")}

    return FunctionModel(respond, stream_function=stream)


def _agent(script: Script, tools: list[Tool[Any]]) -> Agent[None, str]:
    url = endpoint()
    if url is None:
        return Agent(_model(script), tools=tools)
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("scripted", provider=OpenAIProvider(base_url=url, api_key="bench"))
    return Agent(model, tools=tools)


def prepare(script: Script, bodies: dict[str, Body],
            max_steps: int) -> Callable[[], Awaitable[None]]:
    agent = _agent(script, [Tool(b, name=n, takes_ctx=False) for n, b in bodies.items()])
    limits = UsageLimits(request_limit=max_steps + 2)
    text = prompt(script)

    async def run() -> None:
        if endpoint() is None:
            await agent.run(text, usage_limits=limits)
            return
        # The endpoint streams (as every framework's client asks it to): read it streamed.
        async with agent.run_stream_events(text, usage_limits=limits) as events:
            async for _ in events:
                pass

    return run


def w5(s: Sizes) -> Callable[[], Awaitable[float]]:
    return w5_cannot(prepare, s, "no short-circuit: the step waits for every sibling")


@dataclass(kw_only=True)
class Chunk(CustomEvent):
    """One chunk of the streaming tool's output."""

    i: int


def w6(s: Sizes) -> Callable[[], Awaitable[float]]:
    async def stream(ctx: RunContext[None], key: str) -> str:
        """Emit chunks a fixed gap apart."""
        for i in range(s.w6_chunks):
            await asyncio.sleep(s.w6_gap)
            await ctx.emit(Chunk(i=i))
        return key

    agent = _agent(s.w6_script(), [Tool(stream, name="stream", takes_ctx=True)])

    async def measure() -> float:
        start = time.perf_counter()
        async with agent.run_stream_events(prompt(s.w6_script())) as events:
            first = await seconds_to_first(events, lambda e: isinstance(e, Chunk), start)
        return first / s.w6_gap

    return measure


def w7(s: Sizes) -> Callable[[], Awaitable[float]]:
    return w7_with_wrapper(prepare, s)
