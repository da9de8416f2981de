from __future__ import annotations

import openai
import pytest

from toolplex.model import CallArgs, CallBegin, Finish, TextChunk, Usage
from toolplex.testing import Call, ScriptedModel, Step

TOOLS = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}]


async def _chunks(model: ScriptedModel, messages: list[dict]) -> list[object]:
    return [c async for c in model.stream(messages, TOOLS)]


async def test_scripted_model_speaks_openai_chunks_through_the_sdk() -> None:
    model = ScriptedModel([Step(text="hi there", calls=[Call("a", {"x": 1}), Call("b")])])
    chunks = await _chunks(model, [{"role": "user", "content": "go"}])
    assert [c for c in chunks if isinstance(c, TextChunk)] == [
        TextChunk("hi "), TextChunk("there")]
    begins = [c for c in chunks if isinstance(c, CallBegin)]
    assert [(b.index, b.name) for b in begins] == [(0, "a"), (1, "b")]
    args = "".join(c.fragment for c in chunks if isinstance(c, CallArgs) and c.index == 0)
    assert args == '{"x": 1}'
    assert Finish("tool_calls") in chunks
    assert isinstance(chunks[-1], Usage)


async def test_request_reaches_the_script_with_tools_and_parallel_flag() -> None:
    model = ScriptedModel([Step(text="ok")], keep_requests=8)
    await _chunks(model, [{"role": "user", "content": "go"}])
    request = model.requests[0]
    assert request["tools"] == TOOLS
    assert request["parallel_tool_calls"] is True
    assert request["stream"] is True


async def test_a_long_lived_scripted_model_keeps_only_the_latest_requests() -> None:
    model = ScriptedModel([Step(calls=[Call("a")])], repeat_last=True, keep_requests=2)
    ids = []
    for turn in range(3):
        chunks = await _chunks(model, [{"role": "user", "content": f"go {turn}"}])
        ids += [c.id for c in chunks if isinstance(c, CallBegin)]
    assert [r["messages"][0]["content"] for r in model.requests] == ["go 1", "go 2"]
    assert model.served == 3
    assert len(set(ids)) == 3, "call ids stay unique past the kept window"


async def test_step_number_counts_assistant_messages_since_the_last_user_message() -> None:
    model = ScriptedModel([Step(text="one"), Step(text="two")])
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "x", "type": "function",
                         "function": {"name": "a", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x", "content": '{"n": 4}'},
    ]
    chunks = await _chunks(model, history)
    assert TextChunk("two") in chunks


async def test_templates_fill_arguments_from_earlier_results() -> None:
    model = ScriptedModel([Step(), Step(calls=[Call("b", {"n": "{{a.n}}", "s": "n={{a.n}}"})])])
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "x", "type": "function",
                         "function": {"name": "a", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x", "content": '{"n": 4}'},
    ]
    chunks = await _chunks(model, history)
    args = "".join(c.fragment for c in chunks if isinstance(c, CallArgs))
    assert args == '{"n": 4, "s": "n=4"}'


async def test_a_template_naming_no_earlier_result_is_a_clear_400() -> None:
    model = ScriptedModel([Step(calls=[Call("b", {"n": "{{missing.n}}"})])])
    with pytest.raises(openai.BadRequestError, match="no earlier result"):
        await _chunks(model, [{"role": "user", "content": "go"}])


async def test_keyword_picks_the_script() -> None:
    model = ScriptedModel(scripts={"search": [Step(text="searching")]},
                          default=[Step(text="default")])
    assert TextChunk("searching") in await _chunks(
        model, [{"role": "user", "content": "Search for X"}])
    assert TextChunk("default") in await _chunks(model, [{"role": "user", "content": "hi"}])


async def test_scripted_finish_reason_can_be_length() -> None:
    model = ScriptedModel([Step(calls=[Call("a")], finish="length")])
    assert Finish("length") in await _chunks(model, [{"role": "user", "content": "go"}])


class TestApiKey:
    """What a real model's requests carry for authorization."""

    async def _authorization(self, monkeypatch: pytest.MonkeyPatch, key: str | None) -> str:
        import httpx2

        from toolplex import OpenAIModel

        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        seen: list[str] = []

        def answer(request: httpx2.Request) -> httpx2.Response:
            seen.append(request.headers.get("authorization", "(none)"))
            return httpx2.Response(200, text="data: [DONE]\n\n",
                                   headers={"content-type": "text/event-stream"})

        model = OpenAIModel("m", base_url="http://model.test/v1", api_key=key,
                            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
        async for _ in model.stream([{"role": "user", "content": "hi"}], []):
            pass
        return seen[0]

    async def test_without_a_key_no_authorization_header_is_sent(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert await self._authorization(monkeypatch, None) == "(none)", \
            "no made-up key (such as 'unset') goes to the model server"

    async def test_a_key_is_sent_as_a_bearer_token(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert await self._authorization(monkeypatch, "sk-test") == "Bearer sk-test"
