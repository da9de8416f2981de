"""LangGraph: a StateGraph of a model node and the prebuilt ToolNode (the documented agent
loop), the model a langchain-core ``BaseChatModel`` subclass replaying the script, or
``langchain_openai.ChatOpenAI`` (streaming) at the endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.metadata import version
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import StructuredTool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import RetryPolicy

from ..workloads import (
    FINAL_TEXT,
    Body,
    Flaky,
    Script,
    Sizes,
    Upstream503,
    endpoint,
    prompt,
    seconds_to_first,
    step_of,
    w5_cannot,
)

NAME = "LangGraph"
NOTES: dict[str, str] = {
    "w6": "tool writes chunks with get_stream_writer(); caller reads stream_mode='custom'",
    "w7": "RetryPolicy on the tools node (retries the whole node: every call of the step)",
}


def versions() -> str:
    text = f"langgraph {version('langgraph')}, langchain-core {version('langchain-core')}"
    return text + (f", langchain-openai {version('langchain-openai')}" if endpoint() else "")


class ScriptedChatModel(BaseChatModel):
    """Replays a script: step n is the n-th AI message since the latest human message."""

    script: Any

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self

    def _calls(self, messages: list[BaseMessage]) -> Any:
        last_human = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        turns = sum(isinstance(m, AIMessage) for m in messages[last_human + 1:])
        return step_of(self.script, turns), turns

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        calls, turns = self._calls(messages)
        for call in calls:
            if call.after:
                await asyncio.sleep(call.after)
        message = AIMessage(content="" if calls else FINAL_TEXT, tool_calls=[
            {"name": c.name, "args": dict(c.args), "id": f"call_{turns}_{i}", "type": "tool_call"}
            for i, c in enumerate(calls)])
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(self, messages: list[BaseMessage], stop: Any = None,
                       run_manager: Any = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        calls, turns = self._calls(messages)
        if not calls:
            yield ChatGenerationChunk(message=AIMessageChunk(content=FINAL_TEXT))
        for i, call in enumerate(calls):
            if call.after:
                await asyncio.sleep(call.after)
            chunk = tool_call_chunk(name=call.name, args=json.dumps(call.args),
                                    id=f"call_{turns}_{i}", index=i)
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))


def _graph(script: Script, tools: list[StructuredTool], retry: RetryPolicy | None = None) -> Any:
    url = endpoint()
    if url is None:
        model = ScriptedChatModel(script=script).bind_tools(tools)
    else:
        from langchain_openai import ChatOpenAI

        model = ChatOpenAI(model="scripted", base_url=url, api_key="bench",  # type: ignore[arg-type]
                           streaming=True).bind_tools(tools)

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools), retry_policy=retry)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile()


def _tool(name: str, body: Callable[..., Awaitable[Any]]) -> StructuredTool:
    return StructuredTool.from_function(coroutine=body, name=name,
                                        description=body.__doc__ or name)


def _config(max_steps: int) -> dict[str, Any]:
    return {"recursion_limit": 2 * max_steps + 5}


def prepare(script: Script, bodies: dict[str, Body],
            max_steps: int) -> Callable[[], Awaitable[None]]:
    graph = _graph(script, [_tool(n, b) for n, b in bodies.items()])
    text = prompt(script)

    async def run() -> None:
        await graph.ainvoke({"messages": [HumanMessage(text)]}, _config(max_steps))

    return run


def w5(s: Sizes) -> Callable[[], Awaitable[float]]:
    return w5_cannot(prepare, s, "no short-circuit: the step waits for every sibling")


def w6(s: Sizes) -> Callable[[], Awaitable[float]]:
    async def stream(key: str) -> str:
        """Write chunks a fixed gap apart."""
        write = get_stream_writer()
        for i in range(s.w6_chunks):
            await asyncio.sleep(s.w6_gap)
            write({"i": i})
        return key

    graph = _graph(s.w6_script(), [_tool("stream", stream)])

    async def measure() -> float:
        start = time.perf_counter()
        events = graph.astream({"messages": [HumanMessage(prompt(s.w6_script()))]}, _config(3),
                               stream_mode="custom")
        return await seconds_to_first(events, lambda _: True, start) / s.w6_gap

    return measure


def w7(s: Sizes) -> Callable[[], Awaitable[float]]:
    flaky = Flaky(s.w7_failures)

    async def flaky_tool(key: str) -> str:
        """Fail with 503 a few times, then answer."""
        return flaky.attempt(time.perf_counter())

    retry = RetryPolicy(initial_interval=s.w7_backoff, backoff_factor=2.0, jitter=False,
                        max_attempts=s.w7_failures + 2, retry_on=Upstream503)
    graph = _graph(s.w7_script(), [_tool("flaky", flaky_tool)], retry)

    async def measure() -> float:
        flaky.attempts.clear()
        start = time.perf_counter()
        await graph.ainvoke({"messages": [HumanMessage(prompt(s.w7_script()))]}, _config(3))
        wall = (time.perf_counter() - start) * 1000
        flaky.check(s.w7_backoff)
        return wall

    return measure
