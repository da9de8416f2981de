"""The ecosystem adapters' encoders over real runs: AG-UI events and AI SDK UI message parts.

Each run below is a real agent run (scripted model, real tools); its wire frames are fed
to an encoder the way a connection would, one at a time and in log order.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import anyio
import pytest
from ag_ui.core import BaseEvent
from ag_ui.encoder import EventEncoder

from toolplex import Agent, Clock, Job, Session, ToolError, tool
from toolplex.server.ag_ui import run_input
from toolplex.server.ag_ui_encoder import AgUiEncoder
from toolplex.server.ai_sdk import UIMessageStreamEncoder, chat_messages, encode
from toolplex.testing import Call, ScriptedModel, Step, collect, of_type


@tool
async def lookup(domain: str) -> dict[str, Any]:
    """Look a domain up."""
    return {"company": domain.split(".")[0].title()}


def _race() -> list[Any]:
    """Two searches; the decisive hit comes once slow_search has found something."""
    found = anyio.Event()

    @tool(decisive=lambda hit: hit["score"] >= 0.9)
    async def slow_search(query: str):  # type: ignore[no-untyped-def]
        """Finds one weak hit, then nothing."""
        yield {"q": query, "score": 0.1}
        found.set()
        await anyio.sleep_forever()

    @tool(decisive=lambda hit: hit["score"] >= 0.9)
    async def fast_search(query: str):  # type: ignore[no-untyped-def]
        """Finds the answer."""
        await found.wait()
        yield {"q": query, "score": 0.95}

    return [slow_search, fast_search]


@tool(retries=0)
async def trickle():  # type: ignore[no-untyped-def]
    """One chunk, then a hang past the timeout."""
    yield "first"
    await anyio.sleep_forever()


def _flaky() -> Any:
    attempts = 0

    @tool
    async def flaky(n: int):  # type: ignore[no-untyped-def]
        """Fails once after a chunk, then streams n chunks."""
        nonlocal attempts
        attempts += 1
        yield f"attempt {attempts}"
        if attempts == 1:
            raise ToolError("service unavailable", status=503)
        for i in range(n):
            yield f"chunk {i}"

    return flaky


async def _busy_run(fast: Clock) -> list[dict[str, Any]]:
    """Text, a result, an unknown tool, a retried stream, a timeout with partial output,
    then a short-circuited race."""
    model = ScriptedModel([
        Step(text="Working on it. ", calls=[
            Call("lookup", {"domain": "acme.com"}), Call("nope"), Call("flaky", {"n": 3}),
            Call("trickle")]),
        Step(calls=[Call("slow_search", {"query": "x"}), Call("fast_search", {"query": "x"})]),
        Step(text="Done."),
    ])
    agent = Agent(tools=[lookup, _flaky(), trickle, *_race()], model=model, clock=fast)
    return await collect(agent, "go")


def _ag_ui(frames: list[dict[str, Any]]) -> list[tuple[int, BaseEvent]]:
    """(index of the frame it came from, event) for every AG-UI event."""
    encoder = AgUiEncoder("thread-1", "run-1")
    return [(i, event) for i, frame in enumerate(frames) for event in encoder.feed(frame)]


def _wire(event: BaseEvent) -> dict[str, Any]:
    return json.loads(event.model_dump_json(by_alias=True))  # type: ignore[no-any-return]


def _nulls(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(_nulls(v) for v in value)
    return False


def _apply(document: dict[str, Any], patch: list[dict[str, Any]]) -> None:
    """RFC 6902 ``add`` (all the adapter sends), as a client applies it."""
    for op in patch:
        assert op["op"] == "add", op
        *parents, last = op["path"].lstrip("/").split("/")
        target: Any = document
        for part in parents:
            target = target[part]
        if last == "-":
            target.append(op["value"])
        else:
            target[last] = op["value"]


class TestAgUiEncoder:
    async def test_events_follow_the_log_order(self, fast: Clock) -> None:
        frames = await _busy_run(fast)
        sources = [i for i, _ in _ag_ui(frames)]
        assert sources == sorted(sources), "an encoder translates, it never reorders"
        types = [e.type.value for _, e in _ag_ui(frames)]
        assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
        text = "".join(e.delta for _, e in _ag_ui(frames) if e.type.value == "TEXT_MESSAGE_CONTENT")
        assert text == "Working on it. Done."

    async def test_every_call_gets_exactly_one_result_after_its_end(self, fast: Clock) -> None:
        events = [_wire(e) for _, e in _ag_ui(await _busy_run(fast))]
        starts = [e["toolCallId"] for e in events if e["type"] == "TOOL_CALL_START"]
        results = Counter(e["toolCallId"] for e in events if e["type"] == "TOOL_CALL_RESULT")
        assert len(starts) == 6 and results == Counter(starts), "one TOOL_CALL_RESULT per call"
        for call_id in starts:
            order = [e["type"] for e in events if e.get("toolCallId") == call_id]
            assert order.index("TOOL_CALL_END") < order.index("TOOL_CALL_RESULT")

    async def test_results_carry_what_the_model_was_told(self, fast: Clock) -> None:
        frames = await _busy_run(fast)
        names = {f["call_id"]: f["name"] for f in of_type(frames, "tool.call.start")}
        content = {names[e.tool_call_id]: json.loads(e.content) if e.content[0] in "[{"
                   else e.content
                   for _, e in _ag_ui(frames) if e.type.value == "TOOL_CALL_RESULT"}
        assert content["lookup"] == {"company": "Acme"}
        assert content["nope"]["error"]["code"] == "unknown_tool"
        assert content["flaky"] == "attempt 2chunk 0chunk 1chunk 2"
        assert content["trickle"]["partial"] is True and content["trickle"]["output"] == "first"
        assert content["slow_search"]["cancelled"] is True
        assert content["slow_search"]["reason"] == "short_circuit", "a cancelled call is answered"

    async def test_retries_and_output_are_activity_deltas_on_one_message(
        self, fast: Clock
    ) -> None:
        frames = await _busy_run(fast)
        flaky = next(f["call_id"] for f in of_type(frames, "tool.call.start")
                     if f["name"] == "flaky")
        mine = [_wire(e) for _, e in _ag_ui(frames) if _wire(e).get("messageId")
                == f"{flaky}-activity"]
        assert mine[0]["type"] == "ACTIVITY_SNAPSHOT"
        assert {e["type"] for e in mine[1:]} == {"ACTIVITY_DELTA"}
        content = mine[0]["content"]
        for delta in mine[1:]:
            _apply(content, delta["patch"])
        assert content["output"] == ["attempt 2", "chunk 0", "chunk 1", "chunk 2"], (
            "the failed attempt's output was dropped")
        assert [r["reason"] for r in content["retries"]] == ["error"]
        assert content["status"] == "done" and content["attempt"] == 2

    async def test_short_circuit_shows_on_the_decisive_calls_activity(self, fast: Clock) -> None:
        frames = await _busy_run(fast)
        (circuit,) = of_type(frames, "tool.short_circuit")
        patches = [op for _, e in _ag_ui(frames) if e.type.value == "ACTIVITY_DELTA"
                   and e.message_id == f"{circuit['call_id']}-activity"
                   for op in _wire(e)["patch"]]
        assert {"op": "add", "path": "/shortCircuit", "value": {
            "cancelledCallIds": circuit["cancelled_call_ids"]}} in patches

    async def test_wire_is_camel_case_lf_only_with_integer_timestamps_and_no_nulls(
        self, fast: Clock
    ) -> None:
        encoded = [EventEncoder().encode(e) for _, e in _ag_ui(await _busy_run(fast))]
        for text in encoded:
            assert "\r" not in text and text.startswith("data: ") and text.endswith("}\n\n")
            event = json.loads(text[len("data: "):])
            assert isinstance(event["timestamp"], int), event
            assert not _nulls(event), f"optional fields are omitted, never null: {event}"
            assert not [k for k in event if "_" in k], f"camelCase: {event}"

    async def test_a_pending_human_job_finishes_the_run_with_an_interrupt(self) -> None:
        @tool(mode="human")
        async def approve(percent: int, job: Job) -> None:
            """Ask a person."""

        model = ScriptedModel([Step(calls=[Call("approve", {"percent": 15})]), Step(text="Asked.")])
        frames = await collect(Agent(tools=[approve], model=model), "approve")
        (pending,) = of_type(frames, "job.pending")
        finished = _wire(_ag_ui(frames)[-1][1])
        assert finished["outcome"]["type"] == "interrupt"
        (interrupt,) = finished["outcome"]["interrupts"]
        assert interrupt["id"] == pending["job_id"]
        assert interrupt["toolCallId"] == pending["call_id"]

    async def test_a_cancelled_run_finishes_cancelled_with_every_call_answered(self) -> None:
        started = anyio.Event()

        @tool
        async def wait(name: str) -> str:
            """Wait forever."""
            started.set()
            await anyio.sleep_forever()
            return name

        model = ScriptedModel([Step(calls=[Call("wait", {"name": n}) for n in "ab"])])
        agent = Agent(tools=[wait], model=model)
        session = Session()
        async with anyio.create_task_group() as tg:
            run = agent.start(session, "go", tg)
            await started.wait()
            run.cancel()
        events = [_wire(e) for _, e in _ag_ui([e.to_dict() for e in session.log.replay()])]
        assert events[-1]["outcome"] == {"type": "cancelled"}
        results = [json.loads(e["content"]) for e in events if e["type"] == "TOOL_CALL_RESULT"]
        assert [r["reason"] for r in results] == ["run_cancelled", "run_cancelled"]

    async def test_a_failed_run_ends_with_run_error_after_closing_its_step(self) -> None:
        model = ScriptedModel([Step(text="It is {{missing.value}}.")])
        events = [_wire(e) for _, e in _ag_ui(await collect(Agent(model=model), "go"))]
        assert [e["type"] for e in events[-2:]] == ["STEP_FINISHED", "RUN_ERROR"]
        assert events[-1]["code"] == "model_error"

    async def test_reasoning_is_a_reasoning_span_holding_one_reasoning_message(self) -> None:
        model = ScriptedModel([Step(reasoning="Think first.", text="Then answer.")])
        frames = await collect(Agent(model=model), "go")
        events = [_wire(e) for _, e in _ag_ui(frames)]
        kinds = [e["type"] for e in events if e["type"].startswith("REASONING")]
        assert kinds == ["REASONING_START", "REASONING_MESSAGE_START",
                         "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT",
                         "REASONING_MESSAGE_END", "REASONING_END"]
        (start,) = [e for e in events if e["type"] == "REASONING_MESSAGE_START"]
        assert start["role"] == "reasoning"
        text_ids = {e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_START"}
        assert start["messageId"] not in text_ids, "the reasoning is its own message"
        assert "".join(e["delta"] for e in events
                       if e["type"] == "REASONING_MESSAGE_CONTENT") == "Think first."

    async def test_reasoning_left_open_is_closed_before_the_run_ends(self) -> None:
        model = ScriptedModel([Step(reasoning="Think first.", text="Then answer.")])
        frames = [f for f in await collect(Agent(model=model), "go")
                  if f["type"] != "reasoning.end"]
        kinds = [_wire(e)["type"] for _, e in _ag_ui(frames)]
        assert kinds[-3:] == ["REASONING_MESSAGE_END", "REASONING_END", "RUN_FINISHED"]

    async def test_responses_usage_reaches_run_finished_as_token_usage(self) -> None:
        model = ScriptedModel([Step(text="Hi.")], dialect="responses")
        events = [_wire(e) for _, e in _ag_ui(await collect(Agent(model=model), "go"))]
        (usage,) = events[-1]["usage"]
        assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0, usage
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]

    async def test_an_open_circuit_is_a_custom_event(self, fast: Clock) -> None:
        @tool(retries=0)
        async def broken() -> str:
            """Always refused."""
            raise ToolError("forbidden", status=403)

        model = ScriptedModel([Step(calls=[Call("broken")]) for _ in range(3)] + [Step(text="ok")])
        events = [_wire(e) for _, e in _ag_ui(await collect(
            Agent(tools=[broken], model=model, clock=fast), "go"))]
        (custom,) = [e for e in events if e["type"] == "CUSTOM"]
        assert custom["name"] == "toolplex.circuit_open"
        assert custom["value"] == {"tool": "broken", "failures": 3}

    def test_a_new_thread_passes_its_whole_conversation_an_old_one_its_last_message(
        self,
    ) -> None:
        from ag_ui.core import AssistantMessage, FunctionCall, ToolCall, ToolMessage, UserMessage

        messages = [
            UserMessage(id="1", content="Enrich acme.com"),
            AssistantMessage(id="2", content="Looking.", tool_calls=[ToolCall(
                id="c1", function=FunctionCall(name="lookup", arguments="{}"))]),
            ToolMessage(id="3", tool_call_id="c1", content='{"company": "Acme"}'),
            UserMessage(id="4", content="And beta.com?"),
        ]
        fresh = run_input(Session(), messages)
        assert isinstance(fresh, list)
        assert [m["role"] for m in fresh] == ["user", "assistant", "tool", "user"]
        assert fresh[1]["tool_calls"][0]["function"]["name"] == "lookup"
        old = Session(history=[{"role": "user", "content": "Enrich acme.com"}])
        assert run_input(old, messages) == "And beta.com?"


def _parts(frames: list[dict[str, Any]], interval: float = 0.0) -> list[dict[str, Any]]:
    encoder = UIMessageStreamEncoder(interval=interval)
    return [part for frame in frames for part in encoder.feed(frame, 0.0)]


class TestUIMessageStreamEncoder:
    async def test_parts_follow_the_log_order(self, fast: Clock) -> None:
        parts = _parts(await _busy_run(fast))
        types = [p["type"] for p in parts]
        assert types[:2] == ["start", "start-step"] and types[-2:] == ["finish-step", "finish"]
        for call_id in {p["toolCallId"] for p in parts if "toolCallId" in p}:
            order = [p["type"] for p in parts if p.get("toolCallId") == call_id]
            assert order[0] == "tool-input-start"
            assert order.index("tool-input-available") < len(order) - 1
            assert order[-1] in ("tool-output-available", "tool-output-error")

    async def test_each_call_ends_with_one_final_output_or_error(self, fast: Clock) -> None:
        frames = await _busy_run(fast)
        names = {f["call_id"]: f["name"] for f in of_type(frames, "tool.call.start")}
        final = {names[p["toolCallId"]]: p for p in _parts(frames)
                 if p["type"] in ("tool-output-available", "tool-output-error")
                 and not p.get("preliminary")}
        assert final["lookup"]["output"] == {"company": "Acme"}
        assert final["nope"]["errorText"].startswith("unknown_tool: ")
        assert final["slow_search"]["output"]["reason"] == "short_circuit"
        assert final["slow_search"]["output"]["partial_output"] == [{"q": "x", "score": 0.1}]
        assert final["trickle"]["output"]["partial"] is True
        assert final["fast_search"]["output"] == [{"q": "x", "score": 0.95}]

    async def test_a_retry_drops_the_shown_output_and_says_why(self, fast: Clock) -> None:
        frames = await _busy_run(fast)
        flaky = next(f["call_id"] for f in of_type(frames, "tool.call.start")
                     if f["name"] == "flaky")
        mine = [p for p in _parts(frames) if flaky in (p.get("toolCallId"), p.get("id"))]
        kinds = [(p["type"], p.get("output")) for p in mine]
        assert ("tool-output-available", ["attempt 1"]) in kinds
        retry = kinds.index(("tool-output-available", []))
        assert mine[retry + 1]["type"] == "data-toolplex-retry"
        assert mine[retry + 1]["data"]["reason"] == "error"

    async def test_preliminary_snapshots_are_throttled_and_flushed_when_due(
        self, fast: Clock
    ) -> None:
        frames = await _busy_run(fast)
        flaky = next(f["call_id"] for f in of_type(frames, "tool.call.start")
                     if f["name"] == "flaky")
        deltas = [f for f in of_type(frames, "tool.output.delta")
                  if f["call_id"] == flaky and f["attempt"] == 2]
        encoder = UIMessageStreamEncoder(interval=0.1)
        encoder.feed(next(f for f in of_type(frames, "tool.call.start") if f["call_id"] == flaky),
                     0.0)
        shown = [p for i, d in enumerate(deltas) for p in encoder.feed(d, i / 1000)]
        assert [p["output"] for p in shown] == [["attempt 2"]], "one snapshot per interval"
        assert encoder.due == pytest.approx(0.1)
        assert encoder.flush(0.05) == []
        (late,) = encoder.flush(0.1)
        assert late == {"type": "tool-output-available", "toolCallId": flaky, "preliminary": True,
                        "output": ["attempt 2", "chunk 0", "chunk 1", "chunk 2"]}
        assert encoder.due is None

    async def test_reasoning_streams_as_reasoning_parts(self) -> None:
        model = ScriptedModel([Step(reasoning="Think first.", text="Then answer.")])
        parts = _parts(await collect(Agent(model=model), "go"))
        reasoning = [p for p in parts if p["type"].startswith("reasoning-")]
        assert [p["type"] for p in reasoning] == [
            "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-end"]
        assert len({p["id"] for p in reasoning}) == 1
        assert "".join(p.get("delta", "") for p in reasoning) == "Think first."
        types = [p["type"] for p in parts]
        assert types.index("reasoning-end") < types.index("text-start")

    async def test_a_failed_run_sends_error_then_finish(self) -> None:
        model = ScriptedModel([Step(text="It is {{missing.value}}.")])
        parts = _parts(await collect(Agent(model=model), "go"))
        assert [p["type"] for p in parts[-2:]] == ["error", "finish"]
        assert parts[-2]["errorText"].startswith("model_error: ")
        assert parts[-1]["finishReason"] == "error"

    async def test_a_human_job_is_a_data_part(self) -> None:
        @tool(mode="human")
        async def approve(percent: int, job: Job) -> None:
            """Ask a person."""

        model = ScriptedModel([Step(calls=[Call("approve", {"percent": 15})]), Step(text="Asked.")])
        frames = await collect(Agent(tools=[approve], model=model), "approve")
        (job,) = [p for p in _parts(frames) if p["type"] == "data-toolplex-job"]
        assert job["data"]["status"] == "pending" and job["data"]["via"] == "human"
        assert job["id"] == job["data"]["jobId"], "later updates replace the same part"

    def test_frames_are_lf_only_data_lines_and_the_stream_ends_with_done(self) -> None:
        assert encode({"type": "text-delta", "id": "m", "delta": "é\r\n"}) == (
            'data: {"type":"text-delta","id":"m","delta":"é\\r\\n"}\n\n'.encode())
        assert encode("[DONE]") == b"data: [DONE]\n\n"

    def test_ui_messages_become_chat_messages_one_assistant_message_per_step(self) -> None:
        from toolplex.server.ai_sdk import _UIMessage

        messages = [_UIMessage.model_validate(m) for m in [
            {"id": "1", "role": "user", "parts": [{"type": "text", "text": "Enrich acme.com"}]},
            {"id": "2", "role": "assistant", "parts": [
                {"type": "step-start"}, {"type": "text", "text": "Looking."},
                {"type": "tool-lookup", "toolCallId": "c1", "state": "output-available",
                 "input": {"domain": "acme.com"}, "output": {"company": "Acme"}},
                {"type": "step-start"}, {"type": "text", "text": "Acme."}]},
        ]]
        chat = chat_messages(messages)
        assert [m["role"] for m in chat] == ["user", "assistant", "tool", "assistant"]
        assert chat[1]["tool_calls"][0]["function"] == {"name": "lookup",
                                                         "arguments": '{"domain": "acme.com"}'}
        assert json.loads(chat[2]["content"]) == {"company": "Acme"}
