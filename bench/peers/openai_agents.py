"""The OpenAI Agents SDK: an ``Agent`` run by ``Runner``, the model a custom
``agents.models.interface.Model`` replaying the script as Responses API items, or its
``OpenAIChatCompletionsModel`` at the endpoint (streamed: ``Runner.run_streamed``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from typing import Any

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai import AsyncOpenAI
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
)

from ..workloads import (
    FINAL_TEXT,
    Body,
    Cannot,
    Recorder,
    Script,
    ScriptCall,
    Sizes,
    endpoint,
    prompt,
    step_of,
    w5_cannot,
    w7_with_wrapper,
)

NAME = "OpenAI Agents SDK"
NOTES: dict[str, str] = {
    "w7": "wrapper: no tool retry (its retries are for model requests), so a 12-line "
          "retry-with-backoff loop around the tool function (bench/workloads.py: retrying)",
}
set_tracing_disabled(True)


def versions() -> str:
    return f"openai-agents {version('openai-agents')}, openai {version('openai')}"


def _kind(item: Any) -> str | None:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


class ScriptedAgentsModel(Model):
    """Replays a script: step n is the n-th model response since the user's message."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def _calls(self, input: str | list[Any]) -> tuple[list[ScriptCall], int]:
        items = [] if isinstance(input, str) else input
        turns, previous = 0, None
        for item in items:
            kind = _kind(item)
            if kind == "function_call" and previous != "function_call":
                turns += 1
            previous = kind
        return list(step_of(self.script, turns)), turns

    @staticmethod
    def _items(calls: list[ScriptCall], turns: int) -> list[Any]:
        import json

        if not calls:
            return [ResponseOutputMessage(
                id="msg", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(text=FINAL_TEXT, type="output_text",
                                            annotations=[])])]
        return [ResponseFunctionToolCall(id=f"call_{turns}_{i}", call_id=f"call_{turns}_{i}",
                                         type="function_call", name=c.name,
                                         arguments=json.dumps(c.args))
                for i, c in enumerate(calls)]

    async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                           **kwargs: Any) -> ModelResponse:
        calls, turns = self._calls(input)
        for call in calls:
            if call.after:
                await asyncio.sleep(call.after)
        return ModelResponse(output=self._items(calls, turns), usage=Usage(requests=1),
                             response_id=None)

    async def stream_response(self, system_instructions: Any, input: Any, *args: Any,
                              **kwargs: Any) -> AsyncIterator[Any]:
        calls, turns = self._calls(input)
        items = self._items(calls, turns)
        for n, item in enumerate(items):
            if calls and calls[n].after:
                await asyncio.sleep(calls[n].after)
            yield ResponseOutputItemDoneEvent(item=item, output_index=n, sequence_number=n,
                                              type="response.output_item.done")
        response = Response(id="scripted", created_at=0, model="scripted", object="response",
                            output=items, tool_choice="auto", tools=[], top_p=None,
                            parallel_tool_calls=True, status="completed")
        yield ResponseCompletedEvent(response=response, sequence_number=len(items),
                                     type="response.completed")


def _agent(script: Script, bodies: dict[str, Body]) -> Agent[Any]:
    tools = [function_tool(b, name_override=n) for n, b in bodies.items()]
    url = endpoint()
    model: Model = ScriptedAgentsModel(script) if url is None else OpenAIChatCompletionsModel(
        "scripted", AsyncOpenAI(base_url=url, api_key="bench"))
    return Agent(name="bench", model=model, tools=tools)


def prepare(script: Script, bodies: dict[str, Body],
            max_steps: int) -> Callable[[], Awaitable[None]]:
    agent, text = _agent(script, bodies), prompt(script)
    config = RunConfig(tracing_disabled=True)

    async def run() -> None:
        if endpoint() is None:
            await Runner.run(agent, text, max_turns=max_steps + 2, run_config=config)
            return
        # The endpoint streams (as every framework's client asks it to): read it streamed.
        result = Runner.run_streamed(agent, text, max_turns=max_steps + 2, run_config=config)
        async for _ in result.stream_events():
            pass

    return run


def w5(s: Sizes) -> Callable[[], Awaitable[float]]:
    return w5_cannot(prepare, s, "no short-circuit: the turn waits for every sibling")


def w6(s: Sizes) -> Callable[[], Awaitable[float]]:
    agent = _agent(s.w6_script(), Recorder().bodies({"stream": s.w6_chunks * s.w6_gap}))

    async def measure() -> float:
        start = time.perf_counter()
        result = Runner.run_streamed(agent, prompt(s.w6_script()), max_turns=5,
                                     run_config=RunConfig(tracing_disabled=True))
        first = None
        async for event in result.stream_events():
            if first is None and getattr(event, "name", None) == "tool_output":
                first = time.perf_counter() - start
        assert first is not None, "the tool's output never reached the caller"
        raise Cannot("a function tool returns one value: the caller sees the whole result",
                     first / s.w6_gap)

    return measure


def w7(s: Sizes) -> Callable[[], Awaitable[float]]:
    return w7_with_wrapper(prepare, s)
