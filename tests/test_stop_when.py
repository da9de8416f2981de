"""`@tool(stop_when=...)`: a chunk stops its own call's stream; a raising predicate is an error."""

from __future__ import annotations

import json
from typing import Any

import anyio

from toolplex import Agent, tool
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


def _of_call(events: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    ids = {e["call_id"] for e in of_type(events, "tool.call.start") if e["name"] == name}
    return [e for e in of_type(events, kind) if e["call_id"] in ids]


def _refusing_writer(closed: list[str], released: anyio.Event | None = None) -> Any:
    @tool(stop_when=lambda chunk: "I can't" in chunk)
    async def writer(topic: str):  # type: ignore[no-untyped-def]
        """A long generation that may turn out to be a refusal."""
        try:
            yield f"About {topic}: "
            yield "I can't help with that."
            yield "never sent"
            await anyio.sleep_forever()
        finally:
            closed.append("closed")
            if released is not None:
                released.set()

    return writer


class TestStopWhen:
    async def test_a_matching_chunk_ends_the_call_with_the_chunks_so_far(self) -> None:
        closed: list[str] = []
        model = ScriptedModel([Step(calls=[Call("writer", {"topic": "x"})]), Step(text="ok")])
        events = await collect(Agent(tools=[_refusing_writer(closed)], model=model), "go")
        check_protocol(events)
        deltas = [e["data"] for e in of_type(events, "tool.output.delta")]
        assert deltas == ["About x: ", "I can't help with that."], "nothing after the match"
        (result,) = of_type(events, "tool.result")
        assert result["partial"] is True
        assert result["stopped_by"] == "predicate"
        assert result["output"] == "About x: I can't help with that."
        assert closed == ["closed"], "the generator is closed, its cleanup ran"
        assert not of_type(events, "tool.timeout") and not of_type(events, "tool.retrying")

    async def test_the_model_gets_the_output_marked_partial(self) -> None:
        model = ScriptedModel([Step(calls=[Call("writer", {"topic": "x"})]), Step(text="ok")],
                              keep_requests=8)
        await collect(Agent(tools=[_refusing_writer([])], model=model), "go")
        (message,) = [m for m in model.requests[1]["messages"] if m["role"] == "tool"]
        content = json.loads(message["content"])
        assert content["partial"] is True
        assert "stop_when" in content["note"]
        assert content["output"] == "About x: I can't help with that."

    async def test_siblings_are_untouched(self) -> None:
        released = anyio.Event()

        @tool
        async def sibling() -> str:
            """Finishes only once the writer has been stopped."""
            await released.wait()
            return "sibling done"

        model = ScriptedModel([Step(calls=[Call("writer", {"topic": "x"}), Call("sibling")]),
                               Step(text="ok")])
        agent = Agent(tools=[_refusing_writer([], released), sibling], model=model)
        events = await collect(agent, "go")
        check_protocol(events)
        assert not of_type(events, "tool.cancelled")
        assert not of_type(events, "tool.short_circuit")
        assert [r["output"] for r in _of_call(events, "tool.result", "sibling")] == [
            "sibling done"]

    async def test_a_stopped_stream_does_not_count_against_the_breaker(self) -> None:
        model = ScriptedModel([Step(calls=[Call("writer", {"topic": str(i)}) for i in range(3)]),
                               Step(text="ok")])
        events = await collect(Agent(tools=[_refusing_writer([])], model=model), "go")
        assert len(of_type(events, "tool.result")) == 3
        assert not of_type(events, "tool.circuit_open"), "a stop is not a failure"

    async def test_a_raising_predicate_ends_the_call_with_predicate_failed(self) -> None:
        @tool(stop_when=lambda chunk: chunk["missing"])
        async def source():  # type: ignore[no-untyped-def]
            yield {"score": 1}
            await anyio.sleep_forever()

        model = ScriptedModel([Step(calls=[Call("source")]), Step(text="ok")])
        events = await collect(Agent(tools=[source], model=model), "go")
        check_protocol(events)
        (error,) = of_type(events, "tool.error")
        assert error["error"]["code"] == "predicate_failed"
        assert "stop_when" in error["error"]["message"]
        assert "KeyError" in error["error"]["message"]
        assert not of_type(events, "tool.retrying"), "a broken predicate is not retried"

    async def test_it_applies_to_a_one_value_tool_too(self) -> None:
        @tool(stop_when=lambda value: value == "refused")
        def answer() -> str:
            return "refused"

        model = ScriptedModel([Step(calls=[Call("answer")]), Step(text="ok")])
        events = await collect(Agent(tools=[answer], model=model), "go")
        (result,) = of_type(events, "tool.result")
        assert (result["output"], result["partial"], result["stopped_by"]) == (
            "refused", True, "predicate")


class TestRaisingDecisivePredicate:
    async def test_it_ends_its_call_with_predicate_failed_and_spares_siblings(self) -> None:
        @tool(decisive=lambda chunk: chunk["score"] > 0.5)
        async def broken():  # type: ignore[no-untyped-def]
            yield {"title": "no score"}
            await anyio.sleep_forever()

        @tool
        async def other() -> str:
            return "other done"

        model = ScriptedModel([Step(calls=[Call("broken"), Call("other")]), Step(text="ok")])
        events = await collect(Agent(tools=[broken, other], model=model), "go")
        check_protocol(events)
        (error,) = of_type(events, "tool.error")
        assert error["error"]["code"] == "predicate_failed"
        assert "decisive" in error["error"]["message"]
        assert [r["output"] for r in _of_call(events, "tool.result", "other")] == ["other done"]
        assert not of_type(events, "tool.short_circuit")
