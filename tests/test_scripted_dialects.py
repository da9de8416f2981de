"""``ScriptedModel(dialect=...)``: every shape, spoken by the script, through the same path."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from toolplex import Agent, tool
from toolplex.dialects import DIALECTS
from toolplex.exceptions import UsageError
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type

SCRIPT = [
    Step(reasoning="The user wants a file and the weather.", text="Let me look.",
         calls=[Call("read", {"path": "a.txt"}), Call("weather", {"city": "Paris"})]),
    Step(text="It is {{weather.sky}} in Paris."),
]

Check = Callable[[list[Any]], bool]


def _calls(data: list[Any]) -> list[dict[str, Any]]:
    return [entry for d in data if isinstance(d, dict) for c in d.get("choices") or ()
            for entry in (c.get("delta") or {}).get("tool_calls") or ()]


# What makes each dialect itself, read from the raw events of its first response.
SIGNATURE: dict[str, Check] = {
    "openai": lambda d: [c.get("index") for c in _calls(d)].count(1) > 1,
    "gemini": lambda d: all("index" not in c and "thought_signature" in json.dumps(c)
                            for c in _calls(d)),
    "mistral": lambda d: any(len((c.get("delta") or {}).get("tool_calls") or ()) == 2
                             for x in d if isinstance(x, dict) for c in x.get("choices") or ()),
    "vllm": lambda d: {c.get("index") for c in _calls(d)} == {0}
    and any(c.get("id") == "" for c in _calls(d)),
    "litellm": lambda d: all(c.get("id") for c in _calls(d)),
    "vllm_no_ids": lambda d: not any("id" in c for c in _calls(d)),
    "anthropic": lambda d: min(c["index"] for c in _calls(d)) == 1,
    "lmstudio": lambda d: any(c["function"].get("name") == "" for c in _calls(d)),
    "llamacpp": lambda d: all(isinstance(c["function"]["arguments"], dict)
                              for c in _calls(d)),
    "ollama": lambda d: {c.get("index") for c in _calls(d)} == {0}
    and any(isinstance(c["function"].get("arguments"), dict) for c in _calls(d)),
    "deepseek": lambda d: {c["id"] for c in _calls(d) if "id" in c} == {"call_0"},
    "groq": lambda d: any("x_groq" in x for x in d if isinstance(x, dict)),
    "openrouter": lambda d: any("reasoning" in json.dumps(x) for x in d),
    "azure": lambda d: isinstance(d[0], dict) and "prompt_filter_results" in d[0],
    "vllm_forced": lambda d: not any("type" in c for c in _calls(d)),
    "responses": lambda d: any(isinstance(x, dict) and x.get("type") ==
                               "response.function_call_arguments.delta" for x in d),
}


def _tools(ran: list[Any]) -> list[Any]:
    @tool
    async def read(path: str) -> dict[str, str]:
        """Read a file."""
        ran.append(("read", path))
        return {"text": "hello"}

    @tool
    async def weather(city: str) -> dict[str, str]:
        """The weather."""
        ran.append(("weather", city))
        return {"sky": "clear"}

    return [read, weather]


async def _raw(model: ScriptedModel, body: dict[str, Any], path: str) -> list[Any]:
    status, parts = await model.respond(body, path)
    assert status == 200
    data = []
    for part in [p async for p in parts]:
        for line in part.decode().split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                data.append(json.loads(line[6:]))
    return data


def test_every_dialect_has_its_signature_checked() -> None:
    assert set(SIGNATURE) == set(DIALECTS)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_script_runs_the_same_in_every_dialect(dialect: str) -> None:
    ran: list[Any] = []
    model = ScriptedModel(SCRIPT, dialect=dialect)
    events = await collect(Agent(tools=_tools(ran), model=model), "go")
    check_protocol(events)
    assert events[-1]["type"] == "run.finished", events[-1]
    assert sorted(ran) == [("read", "a.txt"), ("weather", "Paris")]
    reasoning = "".join(e["delta"] for e in of_type(events, "reasoning.delta"))
    assert reasoning == "The user wants a file and the weather."
    text = "".join(e["delta"] for e in of_type(events, "text.delta"))
    assert text == "Let me look.It is clear in Paris."
    assert len(model.requests) == 2
    first = model.requests[0]
    path = "/v1/responses" if dialect == "responses" else "/v1/chat/completions"
    assert SIGNATURE[dialect](await _raw(ScriptedModel(SCRIPT, dialect=dialect), first, path))


async def test_an_unknown_dialect_is_refused_at_once() -> None:
    with pytest.raises(UsageError, match="unknown dialect 'klingon'"):
        ScriptedModel(dialect="klingon")
