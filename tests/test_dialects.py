"""Every OpenAI-compatible dialect of DIALECTS.md, as raw SSE through the real SDK.

Each fixture is a recorded shape (row numbers of docs/dialects.md in its name); a
run over it must not crash, merge or lose a call, must hand each tool the right
arguments, start call i as soon as a later call begins (or the finish arrives),
and send a next request the strictest provider accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from recorded import Endpoint, Frame, Gate, calls, chunk, recording_tools, tc
from toolplex import Agent, OpenAIModel
from toolplex.testing import check_protocol, collect, of_type

READ = ("read", {"path": "a.txt"})
WEATHER = ("weather", {"city": "Paris"})
USAGE = {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}
SIG_A = "CvcBAY89a1+sigA=="
SIG_B = "CvcBAY89a1+sigB=="


@dataclass
class Dialect:
    frames: list[Frame]
    ran: list[tuple[str, dict[str, Any]]] = field(default_factory=lambda: [READ, WEATHER])
    """What reaches the tools."""
    own_ids: list[str] | None = None
    """The model's ids, which the replay must carry unchanged (Mistral validates them)."""
    fields: list[dict[str, Any]] | None = None
    """Provider fields each call must carry back."""
    early: bool = True
    """A Gate("read") sits before the finish: read must start before the finish is sent."""


def _reference(index0: int = 0, index1: int = 1) -> list[Frame]:
    return [
        chunk({"role": "assistant", "content": None}),
        calls(tc(index=index0, id="call_a", name="read", args="")),
        calls(tc(index=index0, args='{"pa')),
        calls(tc(index=index0, args='th": "a.txt"}')),
        calls(tc(index=index1, id="call_b", name="weather", args="")),
        Gate("read"),
        calls(tc(index=index1, args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
        chunk(choices=[], usage=USAGE),
    ]


DIALECTS: dict[str, Dialect] = {
    "openai_reference": Dialect(_reference(), own_ids=["call_a", "call_b"]),
    "gemini_no_index_whole_calls_signature_stop_1_3_4_14": Dialect([
        chunk({"role": "assistant", "content": ""}),
        calls(tc(id="function-call-1", name="read", args='{"path":"a.txt"}',
                 extra_content={"google": {"thought_signature": SIG_A}})),
        calls(tc(id="function-call-2", name="weather", args='{"city":"Paris"}',
                 extra_content={"google": {"thought_signature": SIG_B}})),
        Gate("read"),
        chunk({}, "stop"),
    ], own_ids=["function-call-1", "function-call-2"],
        fields=[{"extra_content": {"google": {"thought_signature": SIG_A}}},
                {"extra_content": {"google": {"thought_signature": SIG_B}}}]),
    "gemini_signature_in_a_metadata_only_delta_14": Dialect([
        calls(tc(id="function-call-1", name="read", args='{"path":"a.txt"}')),
        calls({"extra_content": {"google": {"thought_signature": SIG_A}}}),
        chunk({}, "stop"),
    ], ran=[READ], early=False,
        fields=[{"extra_content": {"google": {"thought_signature": SIG_A}}}]),
    "mistral_two_whole_calls_in_one_chunk_validated_ids_1_3_13": Dialect([
        chunk({"role": "assistant", "content": ""}),
        calls(tc(id="D681PevKs", name="read", args='{"path": "a.txt"}'),
              tc(id="Qk3Fa9Lz2", name="weather", args='{"city": "Paris"}')),
        Gate("read"),
        chunk({}, "tool_calls", usage=USAGE),
    ], own_ids=["D681PevKs", "Qk3Fa9Lz2"]),
    "ollama_2024_no_index_no_id_whole_calls_1": Dialect([
        calls(tc(name="read", args='{"path":"a.txt"}')),
        calls(tc(name="weather", args='{"city":"Paris"}')),
        Gate("read"),
        chunk({}, "stop"),
    ]),
    "litellm_id_on_every_chunk_2": Dialect([
        calls(tc(index=0, id="call_a", name="read", args="")),
        calls(tc(index=0, id="call_a", args='{"path": ')),
        calls(tc(index=0, id="call_a", args='"a.txt"}')),
        calls(tc(index=1, id="call_b", name="weather", args="")),
        Gate("read"),
        calls(tc(index=1, id="call_b", args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
    ], own_ids=["call_a", "call_b"]),
    "vllm_second_call_reuses_index_0_empty_id_continuations_2_5": Dialect([
        calls(tc(index=0, id="chatcmpl-tool-1", name="read", args="")),
        calls(tc(index=0, id="", args='{"path": "a.txt"}')),
        calls(tc(index=0, id="chatcmpl-tool-2", name="weather", args="")),
        Gate("read"),
        calls(tc(index=0, id="", args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
    ], own_ids=["chatcmpl-tool-1", "chatcmpl-tool-2"]),
    "vllm_no_ids_at_all_2": Dialect([
        calls(tc(index=0, name="read", args='{"path": "a.txt"}')),
        calls(tc(index=1, name="weather", args="")),
        Gate("read"),
        calls(tc(index=1, args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
    ]),
    "sglang_id_0_repeated_2_12": Dialect([
        calls(tc(index=0, id="0", name="read", args="")),
        calls(tc(index=0, id="0", args='{"path": "a.txt"}')),
        calls(tc(index=1, id="0", name="weather", args="")),
        Gate("read"),
        calls(tc(index=1, id="0", args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
    ]),
    "groq_noise_then_several_whole_calls_in_one_chunk_x_groq_usage_3_5_9_18": Dialect([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "", "tool_calls": []}),
        calls(tc(index=0, id="call_g1", name="read", args='{"path":"a.txt"}'),
              tc(index=1, id="call_g2", name="weather", args='{"city":"Paris"}')),
        Gate("read"),
        chunk({}, "tool_calls", x_groq={"id": "req_1", "usage": USAGE}),
    ], own_ids=["call_g1", "call_g2"]),
    "ollama_via_litellm_all_index_0_object_arguments_stop_4_5_11": Dialect([
        calls(tc(index=0, id="call_o1", name="read", args={"path": "a.txt"})),
        calls(tc(index=0, id="call_o2", name="weather", args={"city": "Paris"})),
        Gate("read"),
        chunk({}, "stop"),
    ], own_ids=["call_o1", "call_o2"]),
    "anthropic_compat_first_call_at_index_1_after_text_6": Dialect([
        chunk({"role": "assistant", "content": "Let me check."}),
        calls(tc(index=1, id="toolu_01A", name="read", args="")),
        calls(tc(index=1, args='{"path": "a.txt"}')),
        calls(tc(index=2, id="toolu_01B", name="weather", args="")),
        Gate("read"),
        calls(tc(index=2, args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
    ], own_ids=["toolu_01A", "toolu_01B"]),
    "gateway_sparse_indexes_6": Dialect(_reference(3, 7), own_ids=["call_a", "call_b"]),
    "lmstudio_empty_name_on_continuations_7": Dialect([
        calls(tc(index=0, id="123456789", name="read", args="")),
        calls(tc(index=0, type="function", name="", args='{"path": "a.txt"}')),
        calls(tc(index=1, id="987654321", name="weather", args="")),
        Gate("read"),
        calls(tc(index=1, type="function", name="", args='{"city": "Paris"}')),
        chunk({}, "tool_calls"),
    ], own_ids=["123456789", "987654321"]),
    "azure_prompt_filter_chunk_without_choices_8": Dialect([
        chunk(choices=[], id="", prompt_filter_results=[
            {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}]),
        *_reference(),
    ], own_ids=["call_a", "call_b"]),
    "nim_usage_on_every_chunk_finish_with_empty_arguments_9": Dialect([
        calls(tc(index=0, id="chatcmpl-tool-a", name="read", args=""),
              usage={"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41}),
        calls(tc(index=0, args='{"path": "a.txt"}'),
              usage={"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}),
        calls(tc(index=1, id="chatcmpl-tool-b", name="weather", args='{"city": "Paris"}'),
              usage={"prompt_tokens": 40, "completion_tokens": 11, "total_tokens": 51}),
        Gate("read"),
        calls(tc(index=1, args=""), finish="tool_calls", usage=USAGE),
    ]),
    "openrouter_comment_lines_between_events_10": Dialect([
        b": OPENROUTER PROCESSING\n\n",
        *_reference()[:5],
        b": OPENROUTER PROCESSING\n\n",
        *_reference()[5:],
    ]),
    "llamacpp_object_arguments_11": Dialect([
        calls(tc(index=0, id="llama-1", name="read", args={"path": "a.txt"})),
        calls(tc(index=1, id="llama-2", name="weather", args={"city": "Paris"})),
        Gate("read"),
        chunk({}, "tool_calls"),
    ]),
    "deepseek_same_id_on_two_calls_with_reasoning_12_19": Dialect([
        chunk({"role": "assistant", "reasoning_content": "The user wants "}),
        chunk({"reasoning_content": "a file and the weather."}),
        calls(tc(index=0, id="call_0_dup", name="read", args="")),
        calls(tc(index=0, args='{"path":"a.txt"}')),
        calls(tc(index=1, id="call_0_dup", name="weather", args="")),
        Gate("read"),
        calls(tc(index=1, args='{"city":"Paris"}')),
        chunk({}, "tool_calls", usage=USAGE),
    ]),
    "vllm_forced_tool_choice_without_type_16": Dialect([
        calls(tc(index=0, id="chatcmpl-tool-1", type=None, name="read",
                 args='{"path": "a.txt"}')),
        calls(tc(index=1, id="chatcmpl-tool-2", type=None, name="weather",
                 args='{"city": "Paris"}')),
        Gate("read"),
        chunk({}, "tool_calls"),
    ]),
    "openrouter_reasoning_field_19": Dialect([
        chunk({"role": "assistant", "content": "", "reasoning": "Two lookups."}),
        *_reference()[1:],
    ]),
}


def _agent(endpoint: Endpoint, **options: Any) -> tuple[Agent, list[tuple[str, dict]]]:
    tools, ran = recording_tools(endpoint)
    model = OpenAIModel("m", base_url="http://dialect.test/v1", api_key="k",
                        http_client=endpoint.client(), retry_delay=0, **options)
    return Agent(tools=tools, model=model), ran


def _check_replay(request: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The assistant message's calls, after checking what strict servers check."""
    messages = request["messages"]
    assistant = next(m for m in messages if m["role"] == "assistant" and m.get("tool_calls"))
    replayed = assistant["tool_calls"]
    ids = [c["id"] for c in replayed]
    assert len(replayed) == count, f"one replayed call per call: {replayed}"
    assert all(isinstance(i, str) and i for i in ids), f"ids must be non-empty: {ids}"
    assert len(set(ids)) == len(ids), f"ids must be unique: {ids}"
    assert all(c["type"] == "function" for c in replayed)
    assert all(isinstance(c["function"]["arguments"], str) for c in replayed), (
        "arguments are replayed as strings")
    answers = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert sorted(answers) == sorted(ids), "one tool message per call, answering its id"
    return list(replayed)


@pytest.mark.parametrize("name", sorted(DIALECTS))
async def test_dialect_runs_each_call_once_with_its_arguments_and_a_valid_replay(
        name: str) -> None:
    dialect = DIALECTS[name]
    endpoint = Endpoint(dialect.frames)
    agent, ran = _agent(endpoint)
    events = await collect(agent, "read a.txt and the weather in Paris")
    check_protocol(events)
    assert events[-1]["type"] == "run.finished", events[-1]
    assert sorted(ran) == sorted(dialect.ran), "each call reaches its tool once, unmerged"
    assert not of_type(events, "tool.error"), of_type(events, "tool.error")
    replayed = _check_replay(endpoint.requests[1], len(dialect.ran))
    if dialect.own_ids is not None:
        assert [c["id"] for c in replayed] == dialect.own_ids, "the model's own ids go back"
    if dialect.fields is not None:
        assert [{k: v for k, v in c.items() if k == "extra_content"} for c in replayed] == (
            dialect.fields), "provider fields go back on their call"
    assert not endpoint.gates_missed, f"{endpoint.gates_missed} did not start early"
    if dialect.early:
        assert endpoint.started_at["read"] < endpoint.finish_at[0], (
            "read starts when the next call begins, before the finish")


async def test_repaired_ids_are_nine_alphanumerics_and_unique() -> None:
    endpoint = Endpoint(DIALECTS["deepseek_same_id_on_two_calls_with_reasoning_12_19"].frames)
    agent, _ = _agent(endpoint)
    await collect(agent, "go")
    ids = [c["id"] for c in _check_replay(endpoint.requests[1], 2)]
    assert ids[0] == "call_0_dup", "the first holder of an id keeps it"
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", ids[1]), ids


async def test_an_id_already_in_the_conversation_is_repaired_on_the_next_turn() -> None:
    # Kimi numbers its ids per response (functions.read:0): turn 2 repeats turn 1's.
    body = [calls(tc(index=0, id="functions.read:0", name="read", args='{"path": "a.txt"}')),
            chunk({}, "tool_calls")]
    endpoint = Endpoint(body, [chunk({"content": "ok"}), chunk({}, "stop")], body)
    agent, ran = _agent(endpoint)
    session = agent.session()
    await collect(agent, "first", session=session)
    await collect(agent, "second", session=session)
    assert ran == [READ, READ]
    ids = [c["id"] for m in endpoint.requests[3]["messages"] for c in m.get("tool_calls") or ()]
    assert ids[0] == "functions.read:0" and len(set(ids)) == 2, ids


async def test_usage_repeated_on_every_chunk_is_counted_once() -> None:
    endpoint = Endpoint(DIALECTS["nim_usage_on_every_chunk_finish_with_empty_arguments_9"].frames)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    assert events[-1]["usage"] == USAGE, "cumulative usage is the latest, not a sum"


async def test_a_fragment_after_its_call_was_complete_changes_neither_run_nor_replay(
        caplog: pytest.LogCaptureFixture) -> None:
    endpoint = Endpoint([
        calls(tc(index=0, id="call_a", name="read", args='{"path": "a.txt"}')),
        calls(tc(index=1, id="call_b", name="weather", args='{"city": "Paris"}')),
        Gate("read"),
        calls(tc(index=0, args=" ")),
        chunk({}, "tool_calls"),
    ])
    agent, ran = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert sorted(ran) == [READ, WEATHER]
    ended = {e["call_id"] for e in of_type(events, "tool.call.end")}
    kinds = [(e["type"], e.get("call_id")) for e in events]
    for call_id in ended:
        end = kinds.index(("tool.call.end", call_id))
        assert ("tool.call.delta", call_id) not in kinds[end:], "no delta after call.end"
    replayed = _check_replay(endpoint.requests[1], 2)
    assert replayed[0]["function"]["arguments"] == '{"path": "a.txt"}'
    assert "after it was complete" in caplog.text

async def test_duplicated_argument_flush_is_invalid_args_never_a_guessed_run() -> None:
    endpoint = Endpoint([
        calls(tc(index=0, id="call_a", name="read", args='{"path": "a.txt"}')),
        calls(tc(index=0, args='{"path": "a.txt"}')),
        chunk({}, "tool_calls"),
    ])
    agent, ran = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert ran == [], "the tool never runs on concatenated arguments"
    assert [e["error"]["code"] for e in of_type(events, "tool.error")] == ["invalid_args"]
    _check_replay(endpoint.requests[1], 1)
    assert events[-1]["type"] == "run.finished"


async def test_a_data_line_that_is_not_json_ends_the_run_as_a_model_error() -> None:
    endpoint = Endpoint([chunk({"role": "assistant", "content": ""}),
                         b"data: : OPENROUTER PROCESSING\n\n", *_reference()[1:]])
    agent, ran = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert events[-1]["type"] == "run.error"
    assert events[-1]["error"]["code"] == "model_error"
    assert "not JSON" in events[-1]["error"]["message"]
    assert ran == []


async def test_a_transient_error_after_200_is_retried_while_nothing_was_used() -> None:
    endpoint = Endpoint(
        [chunk({"role": "assistant", "content": ""}),
         chunk({"content": ""}, "error",
               error={"code": 502, "message": "Provider returned error"})],
        _reference())
    agent, ran = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert events[-1]["type"] == "run.finished"
    assert sorted(ran) == [READ, WEATHER]
    assert len(endpoint.requests) == 3, "the failed response was sent again once"


async def test_an_error_after_output_was_used_ends_the_run_and_is_not_retried() -> None:
    endpoint = Endpoint([chunk({"content": "Half an answ"}),
                         {"error": {"code": 502, "message": "upstream died"}}], done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert events[-1]["error"]["code"] == "model_error"
    assert "upstream died" in events[-1]["error"]["message"]
    assert len(endpoint.requests) == 1


async def test_a_permanent_error_after_200_is_not_retried() -> None:
    endpoint = Endpoint([{"error": {"code": "invalid_api_key", "message": "bad key"}}],
                        done=False)
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    assert events[-1]["error"]["code"] == "model_error"
    assert len(endpoint.requests) == 1


async def test_finish_reason_error_without_an_error_object_is_a_model_error() -> None:
    endpoint = Endpoint([calls(tc(index=0, id="c1", name="read", args='{"path": "a.txt"}')),
                         chunk({}, "error")])
    agent, _ = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert events[-1]["error"]["code"] == "model_error"


@pytest.mark.parametrize("ending", ["length", "content_filter", None])
async def test_a_cut_off_response_discards_the_calls_it_started(ending: str | None) -> None:
    frames: list[Frame] = [calls(tc(index=0, id="c1", name="read", args='{"path": "a.'))]
    if ending:
        frames.append(chunk({}, ending))
    endpoint = Endpoint(frames, done=ending is not None)
    agent, ran = _agent(endpoint)
    events = await collect(agent, "go")
    check_protocol(events)
    assert ran == []
    assert [e["reason"] for e in of_type(events, "tool.cancelled")] == ["discarded"]
    assert events[-1]["error"]["code"] == "model_truncated"


class TestReasoning:
    async def test_reasoning_content_streams_as_reasoning_events_before_the_calls(self) -> None:
        endpoint = Endpoint(DIALECTS["deepseek_same_id_on_two_calls_with_reasoning_12_19"].frames)
        agent, _ = _agent(endpoint)
        events = await collect(agent, "go")
        kinds = [e["type"] for e in events]
        first_call = kinds.index("tool.call.start")
        assert kinds.index("reasoning.start") < kinds.index("reasoning.end") < first_call
        deltas = "".join(e["delta"] for e in of_type(events, "reasoning.delta"))
        assert deltas == "The user wants a file and the weather."
        (start,) = of_type(events, "reasoning.start")
        assert all(e["message_id"] == start["message_id"]
                   for e in of_type(events, "reasoning.delta"))

    async def test_reasoning_is_not_sent_back_to_a_provider_that_does_not_ask(self) -> None:
        endpoint = Endpoint(DIALECTS["deepseek_same_id_on_two_calls_with_reasoning_12_19"].frames)
        agent, _ = _agent(endpoint)
        await collect(agent, "go")
        assert not any("reasoning_content" in m for m in endpoint.requests[1]["messages"])

    async def test_reasoning_goes_back_on_tool_call_messages_when_the_provider_requires(
            self) -> None:
        endpoint = Endpoint(DIALECTS["deepseek_same_id_on_two_calls_with_reasoning_12_19"].frames)
        agent, _ = _agent(endpoint, reasoning_replay=True)
        await collect(agent, "go")
        (assistant,) = [m for m in endpoint.requests[1]["messages"] if m.get("tool_calls")]
        assert assistant["reasoning_content"] == "The user wants a file and the weather."

    def test_deepseek_gets_reasoning_back_by_default(self) -> None:
        model = OpenAIModel("deepseek-chat", base_url="https://api.deepseek.com", api_key="k")
        assert model.reasoning_replay is True
        assert OpenAIModel("m", base_url="http://127.0.0.1:1/v1", api_key="k"
                           ).reasoning_replay is False
