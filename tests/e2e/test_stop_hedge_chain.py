"""stop_when, head_start and dependent calls as a client sees them: SSE from a real server."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
from httpx_sse import aconnect_sse

from toolplex import Agent, tool
from toolplex.events import TERMINAL_RUN_TYPES
from toolplex.testing import Call, ScriptedModel, Step, check_protocol


@tool(stop_when=lambda chunk: chunk.startswith("I can't"))
async def draft(topic: str):  # type: ignore[no-untyped-def]
    """A long generation that may turn into a refusal."""
    yield f"On {topic}: "
    yield "I can't help with that."
    await anyio.sleep_forever()


@tool(decisive=lambda out: out["hit"], head_start=3600)
async def cache(q: str) -> dict[str, Any]:
    """A cache that answers outright."""
    return {"hit": True, "answer": q}


@tool
async def search(q: str) -> str:
    """A slow search (never reached here)."""
    await anyio.sleep_forever()
    return q


@tool
async def lookup(domain: str) -> dict[str, Any]:
    """Find the contact."""
    return {"contact": {"email": f"dana@{domain}"}}


@tool
async def verify(email: str) -> dict[str, Any]:
    """Check an email address."""
    return {"email": email, "deliverable": True}


def _agent() -> Agent:
    done = Step(text="Done.")
    scripts = {
        "refuse": [Step(calls=[Call("draft", {"topic": "x"})]), done],
        "hedge": [Step(calls=[Call("cache", {"q": "x"}), Call("search", {"q": "x"}),
                              Call("search", {"q": "y"})]), done],
        "chain": [Step(calls=[Call("lookup", {"domain": "acme.com"}),
                              Call("verify", {"email": {"$from": 0,
                                                        "path": "contact.email"}})]), done],
    }
    return Agent(tools=[draft, cache, search, lookup, verify],
                 model=ScriptedModel(scripts=scripts), dependent_calls=True)


async def _run(served: Any, text: str) -> list[dict[str, Any]]:
    sid, token = served.session()
    events: list[dict[str, Any]] = []
    with anyio.fail_after(30):
        async with httpx.AsyncClient() as client, aconnect_sse(
                client, "POST", f"{served.http}/v1/sessions/{sid}/runs",
                headers={"authorization": f"Bearer {token}"}, json={"input": text}) as source:
            async for sse in source.aiter_sse():
                events.append(json.loads(sse.data))
                if events[-1]["type"] in TERMINAL_RUN_TYPES:
                    break
    check_protocol(events)
    return events


def _named(events: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    ids = {e["call_id"] for e in events if e["type"] == "tool.call.start" and e["name"] == name}
    return [e for e in events if e["type"] == kind and e["call_id"] in ids]


async def test_a_stopped_stream_arrives_as_a_partial_result_stopped_by_predicate(serve) -> None:
    events = await _run(serve(_agent()), "refuse")
    (result,) = _named(events, "tool.result", "draft")
    assert result["partial"] is True and result["stopped_by"] == "predicate"
    assert result["output"] == "On x: I can't help with that."


async def test_held_siblings_arrive_cancelled_without_ever_starting(serve) -> None:
    events = await _run(serve(_agent()), "hedge")
    assert not _named(events, "tool.exec.started", "search")
    cancelled = _named(events, "tool.cancelled", "search")
    assert [e["reason"] for e in cancelled] == ["short_circuit", "short_circuit"]


async def test_a_dependent_call_shows_its_written_and_its_resolved_arguments(serve) -> None:
    events = await _run(serve(_agent()), "chain")
    (end,) = _named(events, "tool.call.end", "verify")
    assert end["args"] == {"email": {"$from": 0, "path": "contact.email"}}
    (started,) = _named(events, "tool.exec.started", "verify")
    assert started["args"] == {"email": "dana@acme.com"}
    (result,) = _named(events, "tool.result", "verify")
    assert result["output"]["deliverable"] is True
    assert [e["step"] for e in events if e["type"] == "step.started"] == [1, 2]
