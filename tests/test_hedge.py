"""`@tool(decisive=..., head_start=...)`: a hedged start holds the step's other calls back."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from toolplex import Agent, UsageError, tool
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


def _ids(events: list[dict[str, Any]], name: str) -> list[str]:
    return [e["call_id"] for e in of_type(events, "tool.call.start") if e["name"] == name]


def _started(events: list[dict[str, Any]], call_ids: list[str]) -> list[str]:
    return [e["call_id"] for e in of_type(events, "tool.exec.started")
            if e["call_id"] in call_ids]


@tool(timeout=30)
async def slow(name: str) -> str:
    """A sibling that would take long."""
    await anyio.sleep_forever()
    return name


def _step(*calls: Call) -> ScriptedModel:
    return ScriptedModel([Step(calls=list(calls)), Step(text="ok")])


class TestHeadStart:
    async def test_decisive_within_the_window_means_the_siblings_never_start(self) -> None:
        @tool(decisive=lambda hit: hit["score"] >= 0.9, head_start=3600)
        async def cache(q: str):  # type: ignore[no-untyped-def]
            await anyio.wait_all_tasks_blocked()  # every sibling has been dispatched
            yield {"score": 0.95}

        model = _step(Call("cache", {"q": "x"}), Call("slow", {"name": "a"}),
                      Call("slow", {"name": "b"}))
        events = await collect(Agent(tools=[cache, slow], model=model), "go")
        check_protocol(events)
        siblings = _ids(events, "slow")
        assert _started(events, siblings) == [], "held siblings never start"
        (short,) = of_type(events, "tool.short_circuit")
        assert sorted(short["cancelled_call_ids"]) == sorted(siblings)
        cancelled = of_type(events, "tool.cancelled")
        assert sorted(e["call_id"] for e in cancelled) == sorted(siblings)
        assert {(e["reason"], e["by_call_id"]) for e in cancelled} == {
            ("short_circuit", _ids(events, "cache")[0])}

    async def test_past_the_window_the_siblings_start_and_decisive_applies_as_before(
            self) -> None:
        sibling_started = anyio.Event()

        @tool
        async def sibling() -> str:
            sibling_started.set()
            await anyio.sleep_forever()
            return "never"

        @tool(decisive=lambda hit: hit["score"] >= 0.9, head_start=0.001)
        async def cache(q: str):  # type: ignore[no-untyped-def]
            yield {"score": 0.1}
            await sibling_started.wait()  # only once its head start has run out
            yield {"score": 0.95}

        model = _step(Call("cache", {"q": "x"}), Call("sibling"))
        events = await collect(Agent(tools=[cache, sibling], model=model), "go")
        check_protocol(events)
        (sibling_id,) = _ids(events, "sibling")
        assert _started(events, [sibling_id]) == [sibling_id]
        (cancelled,) = of_type(events, "tool.cancelled")
        assert (cancelled["call_id"], cancelled["reason"]) == (sibling_id, "short_circuit")

    async def test_the_hedged_call_ending_without_a_hit_releases_the_siblings_at_once(
            self) -> None:
        @tool(decisive=lambda value: value == "hit", head_start=3600)
        async def cache(q: str) -> str:
            return "miss"

        @tool
        async def search(q: str) -> str:
            return f"found {q}"

        model = _step(Call("cache", {"q": "x"}), Call("search", {"q": "x"}))
        with anyio.fail_after(30):  # an hour's head start would hang here
            events = await collect(Agent(tools=[cache, search], model=model), "go")
        check_protocol(events)
        outputs = sorted(e["output"] for e in of_type(events, "tool.result"))
        assert outputs == ["found x", "miss"]
        assert not of_type(events, "tool.cancelled")

    async def test_a_call_already_running_when_the_hedged_one_starts_is_not_held(
            self) -> None:
        search_started = anyio.Event()

        @tool
        async def search(q: str) -> str:
            search_started.set()
            return f"found {q}"

        @tool(decisive=lambda value: value == "hit", head_start=3600)
        async def cache(q: str) -> str:
            await search_started.wait()
            return "miss"

        # Search starts as cache's call begins; the pause between cache's argument
        # fragments lets it take its first step (a ready task runs before any timer), so
        # it is running before the hedged call is dispatched.
        model = ScriptedModel([Step(calls=[Call("search", {"q": "x"}), Call("cache", {"q": "x"})],
                                    arg_delay=0.001), Step(text="ok")])
        with anyio.fail_after(30):
            events = await collect(Agent(tools=[cache, search], model=model), "go")
        assert sorted(e["output"] for e in of_type(events, "tool.result")) == ["found x", "miss"]

    def test_head_start_needs_a_decisive_predicate(self) -> None:
        with pytest.raises(UsageError, match="head_start"):
            @tool(head_start=0.05)
            async def plain() -> str:
                return "x"
