from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from toolplex import Agent, Limits, tool
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


def _by_call(events: list[dict[str, Any]], name: str) -> str:
    return next(e["call_id"] for e in of_type(events, "tool.call.start") if e["name"] == name)


def _seq(events: list[dict[str, Any]], kind: str, call_id: str) -> int:
    return next(e["seq"] for e in events if e["type"] == kind and e.get("call_id") == call_id)


@tool
async def echo(text: str) -> dict:
    """Echo the text back."""
    return {"echo": text}


@tool
async def hang(name: str) -> str:
    """Never finishes on its own."""
    await anyio.sleep_forever()
    return name


class TestRunShape:
    async def test_text_only_run_streams_tokens_between_start_and_finish(self) -> None:
        events = await collect(Agent(model=ScriptedModel([Step(text="Hello there world")])), "hi")
        check_protocol(events)
        kinds = [e["type"] for e in events]
        assert kinds[:3] == ["run.started", "step.started", "text.start"]
        assert kinds[-2:] == ["step.finished", "run.finished"]
        assert "".join(e["delta"] for e in of_type(events, "text.delta")) == "Hello there world"
        assert events[-1]["outcome"] == "success"
        assert events[-1]["usage"]["total_tokens"] > 0

    async def test_every_event_carries_the_run_id(self) -> None:
        events = await collect(Agent(model=ScriptedModel([Step(text="x")])), "hi")
        assert len({e["run_id"] for e in events}) == 1

    async def test_tool_call_arguments_stream_then_end_parsed(self) -> None:
        model = ScriptedModel([Step(calls=[Call("echo", {"text": "abc"})]), Step(text="done")])
        events = await collect(Agent(tools=[echo], model=model), "go")
        check_protocol(events)
        call_id = _by_call(events, "echo")
        deltas = [e["delta"] for e in of_type(events, "tool.call.delta")]
        assert "".join(deltas) == '{"text": "abc"}'
        assert len(deltas) > 1
        assert of_type(events, "tool.call.end")[0]["args"] == {"text": "abc"}
        result = of_type(events, "tool.result")[0]
        assert result == {**result, "call_id": call_id, "output": {"echo": "abc"},
                          "partial": False}

    async def test_sync_async_and_streaming_tools_take_one_path(self) -> None:
        @tool
        def sync_tool() -> int:
            return 1

        @tool
        async def async_tool() -> int:
            return 2

        @tool
        async def stream_tool():  # type: ignore[no-untyped-def]
            yield "a"
            yield "b"

        model = ScriptedModel([Step(calls=[Call("sync_tool"), Call("async_tool"),
                                           Call("stream_tool")]), Step(text="ok")])
        events = await collect(Agent(tools=[sync_tool, async_tool, stream_tool], model=model), "go")
        check_protocol(events)
        outputs = {_name(events, e["call_id"]): e["output"] for e in of_type(events, "tool.result")}
        assert outputs == {"sync_tool": 1, "async_tool": 2, "stream_tool": "ab"}
        deltas = of_type(events, "tool.output.delta")
        assert len(deltas) == 4, "one chunk each for sync/async, one per yield for streams"
        stream_chunks = [d for d in deltas if _name(events, d["call_id"]) == "stream_tool"]
        assert [(d["index"], d["data"]) for d in stream_chunks] == [(0, "a"), (1, "b")]

    async def test_streaming_tool_reducer_shapes_the_result(self) -> None:
        @tool(reduce=lambda chunks: {"count": len(chunks)})
        async def many():  # type: ignore[no-untyped-def]
            for i in range(3):
                yield {"i": i}

        model = ScriptedModel([Step(calls=[Call("many")]), Step(text="ok")])
        events = await collect(Agent(tools=[many], model=model), "go")
        assert of_type(events, "tool.result")[0]["output"] == {"count": 3}


def _name(events: list[dict[str, Any]], call_id: str) -> str:
    return next(e["name"] for e in of_type(events, "tool.call.start") if e["call_id"] == call_id)


class TestEarlyDispatch:
    async def test_first_call_starts_before_the_model_finishes_streaming_the_third(self) -> None:
        model = ScriptedModel([
            Step(calls=[Call("echo", {"text": "1"}), Call("echo", {"text": "2"}, after=0.05),
                        Call("echo", {"text": "3"}, after=0.05)], arg_delay=0.01),
            Step(text="ok"),
        ])
        events = await collect(Agent(tools=[echo], model=model), "go")
        check_protocol(events)
        starts = of_type(events, "tool.call.start")
        first, third = starts[0]["call_id"], starts[2]["call_id"]
        assert _seq(events, "tool.exec.started", first) < _seq(events, "tool.call.end", third)
        assert _seq(events, "tool.result", first) < _seq(events, "tool.call.end", third)

    async def test_completion_is_read_from_structure_not_from_parsable_json(self) -> None:
        # '{"text": "a"}' parses after its first fragment-complete moment, but the call
        # must not start until the next call begins or the finish reason arrives.
        model = ScriptedModel([
            Step(calls=[Call("echo", {"text": "a"}), Call("echo", {"text": "b"}, after=0.05)],
                 arg_fragments=1),
            Step(text="ok"),
        ])
        events = await collect(Agent(tools=[echo], model=model), "go")
        first = of_type(events, "tool.call.start")[0]["call_id"]
        second = of_type(events, "tool.call.start")[1]["call_id"]
        assert _seq(events, "tool.call.start", second) < _seq(events, "tool.exec.started", first)

    async def test_side_effecting_call_waits_for_the_response_to_end(self) -> None:
        @tool(side_effects=True)
        async def write(value: str) -> str:
            """A write."""
            return value

        model = ScriptedModel([
            Step(calls=[Call("write", {"value": "x"}), Call("echo", {"text": "y"}, after=0.05)]),
            Step(text="ok"),
        ])
        events = await collect(Agent(tools=[write, echo], model=model), "go")
        check_protocol(events)
        write_id, echo_id = _by_call(events, "write"), _by_call(events, "echo")
        assert _seq(events, "tool.exec.started", write_id) > _seq(events, "tool.call.end", echo_id)
        assert of_type(events, "tool.result")[-1]["call_id"] in {write_id, echo_id}

    async def test_response_cut_off_by_length_discards_started_calls(self) -> None:
        started = anyio.Event()

        @tool
        async def slow(n: int) -> int:
            started.set()
            await anyio.sleep_forever()
            return n

        @tool(side_effects=True)
        async def write(value: str) -> str:
            raise AssertionError("a write must never run on a truncated response")

        model = ScriptedModel([Step(calls=[Call("slow", {"n": 1}), Call("write", {"value": "x"}),
                                           Call("slow", raw='{"n": ', after=0.05)],
                                    finish="length")])
        events = await collect(Agent(tools=[slow, write], model=model), "go")
        check_protocol(events)
        assert started.is_set(), "the first call was dispatched early"
        cancelled = of_type(events, "tool.cancelled")
        assert len(cancelled) == 3
        assert {e["reason"] for e in cancelled} == {"discarded"}
        assert events[-1]["type"] == "run.error"
        assert events[-1]["error"]["code"] == "model_truncated"
        assert not of_type(events, "tool.exec.started")[1:], "only the early call ever ran"


class TestParallel:
    async def test_all_calls_of_a_step_run_concurrently(self) -> None:
        running = 0
        peak = 0

        @tool
        async def wait(n: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.05)
            running -= 1
            return n

        model = ScriptedModel([Step(calls=[Call("wait", {"n": i}) for i in range(5)]),
                               Step(text="ok")])
        await collect(Agent(tools=[wait], model=model), "go")
        assert peak == 5, "every call of a step runs at the same time"

    async def test_a_sleeping_sync_tool_does_not_block_an_async_tool(self) -> None:
        released = anyio.Event()
        async_done_first = False

        @tool
        def blocking() -> str:
            time.sleep(0.3)
            return "slept"

        @tool
        async def quick() -> str:
            nonlocal async_done_first
            await anyio.sleep(0.01)
            async_done_first = True
            released.set()
            return "quick"

        model = ScriptedModel([Step(calls=[Call("blocking"), Call("quick")]), Step(text="ok")])
        events = await collect(Agent(tools=[blocking, quick], model=model), "go")
        results = [_name(events, e["call_id"]) for e in of_type(events, "tool.result")]
        assert results == ["quick", "blocking"], "the async tool finished while the sync one slept"


class TestShortCircuit:
    async def test_decisive_chunk_cancels_two_hanging_siblings_keeping_partial_output(self) -> None:
        @tool
        async def slow_source(q: str):  # type: ignore[no-untyped-def]
            yield {"title": f"{q}: early", "score": 0.2}
            await anyio.sleep_forever()

        @tool(decisive=lambda chunk: chunk["score"] >= 0.9)
        async def fast_source(q: str):  # type: ignore[no-untyped-def]
            yield {"title": "weak", "score": 0.4}
            await anyio.sleep(0.02)
            yield {"title": "the answer", "score": 0.95}

        model = ScriptedModel([
            Step(calls=[Call("slow_source", {"q": "a"}), Call("slow_source", {"q": "b"}),
                        Call("fast_source", {"q": "c"})]),
            Step(text="found it"),
        ])
        events = await collect(Agent(tools=[slow_source, fast_source], model=model), "go")
        check_protocol(events)
        decisive = _by_call(events, "fast_source")
        short = of_type(events, "tool.short_circuit")[0]
        assert short["call_id"] == decisive
        cancelled = of_type(events, "tool.cancelled")
        assert sorted(short["cancelled_call_ids"]) == sorted(e["call_id"] for e in cancelled)
        assert len(cancelled) == 2
        for event in cancelled:
            assert event["reason"] == "short_circuit"
            assert event["by_call_id"] == decisive
            assert event["partial_output"][0]["title"].endswith("early")
            assert event["ts"] - short["ts"] < 100, "siblings stop within milliseconds"
        assert events[-1]["outcome"] == "success"

    async def test_the_model_hears_the_cancel_reason_and_partial_output(self) -> None:
        @tool(decisive=lambda chunk: True)
        async def win() -> str:
            return "won"

        model = ScriptedModel([Step(calls=[Call("hang", {"name": "x"}), Call("win")]),
                               Step(text="ok")], keep_requests=8)
        await collect(Agent(tools=[hang, win], model=model), "go")
        tool_messages = [m for m in model.requests[1]["messages"] if m["role"] == "tool"]
        cancelled = json.loads(tool_messages[0]["content"])
        assert cancelled["cancelled"] is True
        assert cancelled["reason"] == "short_circuit"
        assert tool_messages[1]["content"] == "won"


class TestHistory:
    async def test_second_request_carries_one_tool_message_per_call(self) -> None:
        model = ScriptedModel([
            Step(text="Checking.", calls=[
                Call("echo", {"text": "a"}), Call("missing_tool", {}),
                Call("echo", raw='{"text": '), Call("echo", {"wrong": 1}),
            ]),
            Step(text="done"),
        ], keep_requests=8)
        events = await collect(Agent(tools=[echo], model=model), "go")
        check_protocol(events)
        second = model.requests[1]["messages"]
        assistant = second[1]
        assert assistant["role"] == "assistant"
        assert assistant["content"] == "Checking."
        ids = [c["id"] for c in assistant["tool_calls"]]
        tool_messages = [m for m in second if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in tool_messages] == ids, "one tool message per call"
        contents = [m["content"] for m in tool_messages]
        assert json.loads(contents[0]) == {"echo": "a"}
        assert json.loads(contents[1])["error"]["code"] == "unknown_tool"
        assert json.loads(contents[2])["error"]["code"] == "invalid_args"
        assert json.loads(contents[3])["error"]["code"] == "invalid_args"
        assert "text" in json.loads(contents[3])["error"]["message"]

    async def test_invalid_args_and_unknown_tools_are_errors_not_exceptions(self) -> None:
        model = ScriptedModel([Step(calls=[Call("nope"), Call("echo", raw="not json")]),
                               Step(text="sorry")])
        events = await collect(Agent(tools=[echo], model=model), "go")
        codes = [e["error"]["code"] for e in of_type(events, "tool.error")]
        assert codes == ["unknown_tool", "invalid_args"]
        assert events[-1]["type"] == "run.finished"

    async def test_a_session_keeps_history_across_runs(self) -> None:
        model = ScriptedModel([Step(text="first")], keep_requests=8)
        agent = Agent(model=model)
        session = agent.session()
        await collect(agent, "one", session=session)
        await collect(agent, "two", session=session)
        roles = [m["role"] for m in model.requests[1]["messages"]]
        assert roles == ["user", "assistant", "user"]
        check_protocol(session.log.replay(0))

    async def test_a_huge_output_reaches_the_client_whole_and_the_model_cut(self) -> None:
        @tool
        async def dump(n: int):  # type: ignore[no-untyped-def]
            """Stream n lines."""
            for i in range(n):
                yield f"line {i}\n"

        model = ScriptedModel([Step(calls=[Call("dump", {"n": 500})]), Step(text="ok")],
                              keep_requests=8)
        agent = Agent(tools=[dump], model=model, limits=Limits(max_result_chars=1000))
        events = await collect(agent, "go")
        whole = "".join(f"line {i}\n" for i in range(500))
        assert "".join(e["data"] for e in of_type(events, "tool.output.delta")) == whole
        assert of_type(events, "tool.result")[0]["output"] == whole
        sent = next(m for m in model.requests[1]["messages"] if m["role"] == "tool")["content"]
        assert sent.startswith(whole[:1000])
        assert f"truncated to 1000 of {len(whole)} characters" in sent
        assert len(sent) < 1100


class TestGuards:
    async def test_a_model_that_calls_tools_forever_is_stopped_by_max_steps(self) -> None:
        model = ScriptedModel([Step(calls=[Call("echo", {"text": "again"})])], repeat_last=True)
        events = await collect(Agent(tools=[echo], model=model, limits=Limits(max_steps=4)), "go")
        check_protocol(events)
        assert events[-1]["type"] == "run.error"
        assert events[-1]["error"]["code"] == "max_steps"
        assert len(of_type(events, "step.started")) == 4

    async def test_calls_beyond_the_step_limit_are_refused(self) -> None:
        model = ScriptedModel([Step(calls=[Call("echo", {"text": str(i)}) for i in range(4)]),
                               Step(text="ok")])
        limits = Limits(max_calls_per_step=2)
        events = await collect(Agent(tools=[echo], model=model, limits=limits), "go")
        check_protocol(events)
        assert len(of_type(events, "tool.result")) == 2
        assert [e["error"]["code"] for e in of_type(events, "tool.error")] == [
            "limit_exceeded", "limit_exceeded"]

    async def test_run_deadline_ends_a_hanging_run_with_a_typed_error(self, fast) -> None:
        model = ScriptedModel([Step(calls=[Call("hang", {"name": "x"})])])
        agent = Agent(tools=[hang], model=model, clock=fast, limits=Limits(run_deadline=5))
        events = await collect(agent, "go")
        check_protocol(events)
        assert of_type(events, "tool.cancelled")[0]["reason"] == "run_cancelled"
        assert events[-1]["error"]["code"] == "deadline_exceeded"

    async def test_bad_input_is_a_run_error(self) -> None:
        events = await collect(Agent(), [{"content": "no role"}])
        check_protocol(events)
        assert events[-1]["error"]["code"] == "invalid_input"


class TestCancel:
    async def test_cancelling_a_run_ends_calls_and_run_cleanly(self) -> None:
        both_running = anyio.Event()
        running = 0

        @tool
        async def block(name: str) -> str:
            nonlocal running
            running += 1
            if running == 2:
                both_running.set()
            await anyio.sleep_forever()
            return name

        model = ScriptedModel([Step(calls=[Call("block", {"name": "a"}),
                                           Call("block", {"name": "b"})])])
        agent = Agent(tools=[block], model=model)
        session = agent.session()
        async with anyio.create_task_group() as tg:
            run = agent.start(session, "go", tg)
            await both_running.wait()
            run.cancel()
        events = [e.to_dict() for e in session.log.replay(0)]
        check_protocol(events)
        assert {e["reason"] for e in of_type(events, "tool.cancelled")} == {"run_cancelled"}
        assert events[-1]["type"] == "run.finished"
        assert events[-1]["outcome"] == "cancelled"
        assert [m["role"] for m in session.history] == ["user", "assistant", "tool", "tool"]

    async def test_cancelling_one_call_keeps_its_siblings(self) -> None:
        started = anyio.Event()

        @tool
        async def block() -> str:
            started.set()
            await anyio.sleep_forever()
            return "never"

        model = ScriptedModel([Step(calls=[Call("block"), Call("echo", {"text": "b"})]),
                               Step(text="ok")])
        agent = Agent(tools=[block, echo], model=model)
        session = agent.session()
        async with anyio.create_task_group() as tg:
            agent.start(session, "go", tg)
            await started.wait()
            target = next(c for c in session.calls.values() if c.name == "block")
            assert target.cancel("user")
        events = [e.to_dict() for e in session.log.replay(0)]
        check_protocol(events)
        assert of_type(events, "tool.cancelled")[0]["reason"] == "user"
        assert of_type(events, "tool.result")[0]["output"] == {"echo": "b"}
        assert events[-1]["outcome"] == "success"


@pytest.mark.parametrize("bad", [42, None])
async def test_non_tools_are_refused_at_construction(bad: object) -> None:
    from toolplex import UsageError

    with pytest.raises(UsageError):
        Agent(tools=[bad])  # type: ignore[list-item]


async def test_running_calls_per_session_are_limited() -> None:
    model = ScriptedModel([Step(calls=[Call("hang", {"name": str(i)}) for i in range(3)])])
    agent = Agent(tools=[hang], model=model,
                  limits=Limits(max_concurrent_calls=2, run_deadline=0.2))
    events = await collect(agent, "go")
    check_protocol(events)
    refused = of_type(events, "tool.error")
    assert [e["error"]["code"] for e in refused] == ["limit_exceeded"]
    assert "2 calls" in refused[0]["error"]["message"]
