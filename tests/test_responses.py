"""OpenAIResponsesModel over recorded-shape ``/v1/responses`` event streams, through the SDK.

Every fixture event is first validated against the SDK's own ``ResponseStreamEvent``
union, so the shapes are the API's, not ours.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest
from openai.types.responses import ResponseStreamEvent

from recorded import Endpoint, Frame, Gate, recording_tools
from toolplex import Agent
from toolplex.providers import OpenAIResponsesModel
from toolplex.testing import check_protocol, collect, of_type

USAGE = {"input_tokens": 50,
         "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
         "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12},
         "total_tokens": 80}
_EVENT_CLASSES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
                  for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}


def _validate(frame: Frame) -> None:
    """Refuse a fixture event the SDK's own type for it would not accept."""
    if isinstance(frame, dict):
        _EVENT_CLASSES[frame["type"]].model_validate(frame)


def _response(status: str, output: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1764000000, "status": status,
            "model": "gpt-5-mini", "output": output, "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], **more}


class _Stream:
    """Builds one response's events with gapless sequence numbers."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.output: list[dict[str, Any]] = []

    def add(self, kind: str, **fields: Any) -> _Stream:
        self.frames.append({"type": kind, "sequence_number": len(self.frames), **fields})
        return self

    def gate(self, name: str) -> _Stream:
        self.frames.append(Gate(name))
        return self

    def created(self) -> _Stream:
        self.add("response.created", response=_response("in_progress", []))
        return self.add("response.in_progress", response=_response("in_progress", []))

    def reasoning(self, index: int, *parts: str) -> _Stream:
        item = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
        self.add("response.output_item.added", output_index=index, item=item)
        for number, part in enumerate(parts):
            self.add("response.reasoning_summary_part.added", item_id=item["id"],
                     output_index=index, summary_index=number,
                     part={"type": "summary_text", "text": ""})
            for piece in (part[: len(part) // 2], part[len(part) // 2:]):
                self.add("response.reasoning_summary_text.delta", item_id=item["id"],
                         output_index=index, summary_index=number, delta=piece)
            self.add("response.reasoning_summary_text.done", item_id=item["id"],
                     output_index=index, summary_index=number, text=part)
        done = {**item, "summary": [{"type": "summary_text", "text": p} for p in parts]}
        self.output.append(done)
        return self.add("response.output_item.done", output_index=index, item=done)

    def text(self, index: int, text: str) -> _Stream:
        item = {"id": f"msg_{index}", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        self.add("response.output_item.added", output_index=index, item=item)
        part = {"type": "output_text", "text": "", "annotations": []}
        self.add("response.content_part.added", item_id=item["id"], output_index=index,
                 content_index=0, part=part)
        for word in text.split(" "):
            self.add("response.output_text.delta", item_id=item["id"], output_index=index,
                     content_index=0, delta=word + " ", logprobs=[])
        self.add("response.output_text.done", item_id=item["id"], output_index=index,
                 content_index=0, text=text, logprobs=[])
        done = {**item, "status": "completed",
                "content": [{**part, "text": text}]}
        self.output.append(done)
        return self.add("response.output_item.done", output_index=index, item=done)

    def call(self, index: int, call_id: str, name: str, arguments: str, *,
             deltas: bool = True, gate_after_done: str | None = None) -> _Stream:
        item = {"id": f"fc_{index}", "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": ""}
        self.add("response.output_item.added", output_index=index, item=item)
        if deltas:
            for piece in (arguments[:5], arguments[5:]):
                self.add("response.function_call_arguments.delta", item_id=item["id"],
                         output_index=index, delta=piece)
            self.add("response.function_call_arguments.done", item_id=item["id"],
                     output_index=index, arguments=arguments)
        if gate_after_done and deltas:
            self.gate(gate_after_done)  # arguments.done completes the call
        done = {**item, "status": "completed", "arguments": arguments}
        self.output.append(done)
        self.add("response.output_item.done", output_index=index, item=done)
        if gate_after_done and not deltas:
            self.gate(gate_after_done)  # without deltas, the item's done completes it
        return self

    def completed(self, usage: dict[str, Any] | None = None) -> list[Frame]:
        self.add("response.completed",
                 response=_response("completed", self.output, usage=usage or USAGE))
        return self.frames


def _answer(text: str = "done") -> list[Frame]:
    return _Stream().created().text(0, text).completed()


def _two_calls(**call: Any) -> list[Frame]:
    return (_Stream().created()
            .reasoning(0, "**Planning** I need the file", " and the weather.")
            .call(1, "call_A", "read", '{"path": "a.txt"}', gate_after_done="read", **call)
            .call(2, "call_B", "weather", '{"city": "Paris"}', **call)
            .completed())


def _agent(endpoint: Endpoint, **options: Any) -> tuple[Agent, list[Any]]:
    tools, ran = recording_tools(endpoint)
    model = OpenAIResponsesModel("gpt-5-mini", base_url="http://responses.test/v1",
                                 api_key="k", http_client=endpoint.client(), retry_delay=0,
                                 **options)
    return Agent(tools=tools, model=model), ran


@pytest.mark.parametrize("frames", [_two_calls(), _answer(), _two_calls(deltas=False)],
                         ids=["calls", "text", "calls_without_deltas"])
def test_fixture_events_are_the_sdks_own_shapes(frames: list[Frame]) -> None:
    for frame in frames:
        _validate(frame)


async def test_function_calls_run_each_on_its_item_done_before_the_next_call_begins() -> None:
    endpoint = Endpoint(_two_calls(), _answer(), done=False)
    agent, ran = _agent(endpoint)
    events = await collect(agent, "read a.txt and the weather in Paris")
    check_protocol(events)
    assert events[-1]["type"] == "run.finished"
    assert sorted(ran) == [("read", {"path": "a.txt"}), ("weather", {"city": "Paris"})]
    assert not endpoint.gates_missed, "read starts on its arguments.done, not at the end"
    assert endpoint.started_at["read"] < endpoint.finish_at[0]
    deltas = [e["delta"] for e in of_type(events, "tool.call.delta")]
    assert deltas[:2] == ['{"pat', 'h": "a.txt"}'], "arguments stream as the model writes them"


async def test_reasoning_summaries_stream_as_reasoning_events() -> None:
    endpoint = Endpoint(_two_calls(), _answer(), done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    text = "".join(e["delta"] for e in of_type(events, "reasoning.delta"))
    assert text == "**Planning** I need the file\n\n and the weather."
    kinds = [e["type"] for e in events]
    assert kinds.index("reasoning.end") < kinds.index("tool.call.start")


async def test_history_is_replayed_in_full_as_items_without_previous_response_id() -> None:
    endpoint = Endpoint(_two_calls(), _answer(), done=False)
    agent, _ = _agent(endpoint, reasoning={"summary": "auto"})
    await collect(agent, "go")
    second = endpoint.requests[1]
    assert "previous_response_id" not in second
    assert second["reasoning"] == {"summary": "auto"}, "params reach the request"
    items = second["input"]
    assert items[0] == {"role": "user", "content": "go"}
    calls = [i for i in items if i.get("type") == "function_call"]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [(c["call_id"], c["name"]) for c in calls] == [("call_A", "read"),
                                                          ("call_B", "weather")]
    assert all(isinstance(c["arguments"], str) for c in calls)
    assert sorted(o["call_id"] for o in outputs) == ["call_A", "call_B"]
    assert not any(i.get("type") == "reasoning" for i in items), "reasoning is not sent back"
    tools = endpoint.requests[0]["tools"]
    assert {t["name"] for t in tools} == {"read", "weather"}
    assert all(t["type"] == "function" and "parameters" in t for t in tools)


async def test_text_and_usage_reach_the_run() -> None:
    endpoint = Endpoint(_answer("Hello from responses"), done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "hi")
    check_protocol(events)
    assert "".join(e["delta"] for e in of_type(events, "text.delta")) == (
        "Hello from responses ")
    usage = events[-1]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (50, 30)


async def test_calls_sent_whole_at_their_done_event_still_reach_their_tools() -> None:
    endpoint = Endpoint(_two_calls(deltas=False), _answer(), done=False)
    agent, ran = _agent(endpoint)
    events = await collect(agent, "go")
    assert events[-1]["type"] == "run.finished"
    assert sorted(ran) == [("read", {"path": "a.txt"}), ("weather", {"city": "Paris"})]
    assert not endpoint.gates_missed, "read starts on its output_item.done"


async def test_an_incomplete_response_discards_its_calls() -> None:
    stream = _Stream().created().call(0, "call_A", "read", '{"path": "a.txt"}')
    stream.add("response.incomplete", response=_response(
        "incomplete", stream.output, incomplete_details={"reason": "max_output_tokens"}))
    endpoint = Endpoint(stream.frames, done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert events[-1]["error"]["code"] == "model_truncated"
    assert "length" in events[-1]["error"]["message"]


async def test_a_failed_response_is_retried_when_transient_and_nothing_was_used() -> None:
    failed = _Stream().created().add("response.failed", response=_response(
        "failed", [], error={"code": "server_error", "message": "try again"})).frames
    endpoint = Endpoint(failed, _answer("recovered"), done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    assert events[-1]["type"] == "run.finished"
    assert len(endpoint.requests) == 2


async def test_an_error_event_ends_the_run_model_error() -> None:
    frames = _Stream().created().add("error", code="invalid_prompt", message="refused",
                                     param=None).frames
    for frame in frames:
        _validate(frame)
    endpoint = Endpoint(frames, done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert events[-1]["error"] == {"code": "model_error",
                                   "message": "the model's stream reported an error: refused"}
    assert len(endpoint.requests) == 1


class TestServeSelectsTheWireFormat:
    def _options(self, monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
        from toolplex import cli

        seen: list[Any] = []
        monkeypatch.setattr(cli, "_serve", lambda options: seen.append(options) or 0)
        assert cli.main(["serve", *argv]) == 0
        return seen[0]

    def test_api_responses_runs_the_responses_model(self, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
        from toolplex import OpenAIModel, cli

        options = self._options(monkeypatch, "--api", "responses", "--model", "gpt-5-mini",
                                "--api-key", "k", "--model-timeout", "12")
        model = cli._model(options)
        assert isinstance(model, OpenAIResponsesModel)
        assert model.idle_timeout == 12
        options = self._options(monkeypatch, "--model", "gpt-4o-mini", "--api-key", "k")
        assert type(cli._model(options)) is OpenAIModel, "chat completions by default"

    def test_toolplex_api_in_the_environment_selects_it_too(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        from toolplex import cli

        monkeypatch.setenv("TOOLPLEX_API", "responses")
        options = self._options(monkeypatch, "--model", "gpt-5-mini", "--api-key", "k")
        assert isinstance(cli._model(options), OpenAIResponsesModel)
