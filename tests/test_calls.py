"""Hardening: timeouts, transient-only retries, breakers, upstream limits, caching."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import anyio
import pytest

from toolplex import Agent, Clock, Limits, ToolError, UpstreamLimit, tool
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


def _one_call(name: str, args: dict[str, Any] | None = None) -> ScriptedModel:
    return ScriptedModel([Step(calls=[Call(name, args or {})]), Step(text="ok")],
                         keep_requests=8)


def _tool_messages(model: ScriptedModel, request: int = 1) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) if m["content"].startswith(("{", "["))
            else m["content"]
            for m in model.requests[request]["messages"] if m["role"] == "tool"]


class TestTimeout:
    async def test_hang_without_output_is_retried_then_exhausted(self, fast: Clock) -> None:
        @tool(timeout=2)
        async def stuck() -> str:
            await anyio.sleep_forever()
            return "never"

        model = _one_call("stuck")
        events = await collect(Agent(tools=[stuck], model=model, clock=fast), "go")
        check_protocol(events)
        timeouts = of_type(events, "tool.timeout")
        assert [(t["attempt"], t["timeout_ms"], t["will_retry"]) for t in timeouts] == [
            (1, 2000, True), (2, 2000, True), (3, 2000, True), (4, 2000, False)]
        assert [r["reason"] for r in of_type(events, "tool.retrying")] == ["timeout"] * 3
        error = of_type(events, "tool.error")[0]["error"]
        assert error["code"] == "retries_exhausted"
        assert error["last"]["code"] == "timeout"
        assert _tool_messages(model)[0]["error"]["code"] == "retries_exhausted"

    async def test_hang_without_retries_ends_with_timeout_error(self, fast: Clock) -> None:
        @tool(retries=0)
        async def stuck() -> str:
            await anyio.sleep_forever()
            return "never"

        events = await collect(Agent(tools=[stuck], model=_one_call("stuck"), clock=fast), "go")
        check_protocol(events)
        assert of_type(events, "tool.error")[0]["error"]["code"] == "timeout"
        assert of_type(events, "tool.timeout")[0]["timeout_ms"] == 10_000, "default is 10 s"

    async def test_hang_after_chunks_keeps_the_partial_output(self, fast: Clock) -> None:
        @tool
        async def trickle():  # type: ignore[no-untyped-def]
            yield "first "
            yield "second"
            await anyio.sleep_forever()

        model = _one_call("trickle")
        events = await collect(Agent(tools=[trickle], model=model, clock=fast), "go")
        check_protocol(events)
        assert of_type(events, "tool.timeout")[0]["will_retry"] is False
        result = of_type(events, "tool.result")[0]
        assert result["partial"] is True
        assert result["output"] == "first second"
        told = _tool_messages(model)[0]
        assert told["partial"] is True
        assert told["output"] == "first second"

    async def test_a_stream_that_never_awaits_still_times_out_with_its_output(
        self, fast: Clock
    ) -> None:
        @tool(retries=0)
        async def spin():  # type: ignore[no-untyped-def]
            n = 0
            while True:  # a busy generator: it never gives the loop a turn itself
                n += 1
                yield f"{n} "

        model = _one_call("spin")
        with anyio.fail_after(20):
            events = await collect(Agent(tools=[spin], model=model, clock=fast), "go")
        check_protocol(events)
        assert of_type(events, "tool.timeout")[0]["will_retry"] is False
        deltas = of_type(events, "tool.output.delta")
        assert deltas, "its chunks were logged as they came"
        result = of_type(events, "tool.result")[0]
        assert result["partial"] is True
        assert result["output"] == "".join(d["data"] for d in deltas)

    async def test_a_timed_out_tool_is_cancelled_before_its_call_ends(self, fast: Clock) -> None:
        order: list[str] = []

        @tool(retries=0)
        async def stuck() -> str:
            try:
                await anyio.sleep_forever()
            finally:
                order.append("body cleaned up")
            return "never"

        agent = Agent(tools=[stuck], model=_one_call("stuck"), clock=fast)
        async for event in agent.run("go"):
            if event.type == "tool.error":
                order.append("call ended")
        assert order == ["body cleaned up", "call ended"], "the body is stopped, not left behind"

    async def test_timeout_is_capped(self, fast: Clock) -> None:
        @tool(timeout=300, retries=0)
        async def stuck() -> str:
            await anyio.sleep_forever()
            return "never"

        events = await collect(Agent(tools=[stuck], model=_one_call("stuck"), clock=fast), "go")
        assert of_type(events, "tool.exec.started")[0]["timeout_ms"] == 30_000

    async def test_a_hundred_sync_hangs_never_grow_threads_past_the_pool(
        self, fast: Clock
    ) -> None:
        release = threading.Event()

        @tool(retries=0)
        def hang_sync(i: int) -> int:
            release.wait(10)
            return i

        @tool
        async def healthy() -> str:
            return "fine"

        calls = [Call("hang_sync", {"i": i}) for i in range(100)] + [Call("healthy")]
        model = ScriptedModel([Step(calls=calls), Step(text="ok")])
        limits = Limits(max_calls_per_step=200, max_concurrent_calls=200)
        agent = Agent(tools=[hang_sync, healthy], model=model, clock=fast, threads=4,
                      limits=limits)
        before = set(threading.enumerate())
        try:
            events = await collect(agent, "go")
            workers = [t for t in set(threading.enumerate()) - before
                       if t.name.startswith("AnyIO worker")]  # not asyncio's own executor
            grown = len(workers)
        finally:
            release.set()
        check_protocol(events)
        assert grown <= 4, f"threads grew by {grown}: hung sync tools must share a bounded pool"
        assert agent.executor.pool.abandoned <= 4
        codes = [e["error"]["code"] for e in of_type(events, "tool.error")]
        assert codes == ["timeout"] * 100
        assert of_type(events, "tool.result")[0]["output"] == "fine", "other tools not starved"

    async def test_an_abandoned_sync_thread_gives_its_slot_back_when_it_returns(self) -> None:
        started, release = threading.Event(), threading.Event()

        @tool(retries=0)
        def hang_sync() -> str:
            started.set()
            release.wait(10)
            return "late"

        agent = Agent(tools=[hang_sync], model=_one_call("hang_sync"), threads=1)
        async with agent.stream("go") as events:
            async for event in events:
                if event.type == "tool.exec.started":
                    with anyio.fail_after(5):
                        while not started.is_set():
                            await anyio.sleep(0.01)
                    break  # leaving cancels the run: the call lets go of its thread
        pool = agent.executor.pool
        assert (pool.busy, pool.abandoned) == (1, 1), "the hung thread keeps the only slot"
        release.set()
        with anyio.fail_after(5):
            while pool.busy or pool.abandoned:
                await anyio.sleep(0.01)
        with anyio.fail_after(5):
            assert await pool.run(lambda: "next") == "next", "the slot is free again"

    async def test_a_tool_that_swallows_cancellation_is_abandoned(self, fast: Clock) -> None:
        stop = False
        spins = 0

        @tool(retries=0)
        async def stubborn() -> str:
            nonlocal spins
            while not stop:
                try:
                    await asyncio.sleep(0.005)
                except asyncio.CancelledError:
                    spins += 1
            return "finally"

        agent = Agent(tools=[stubborn], model=_one_call("stubborn"), clock=fast,
                      cancel_grace=0.05)
        events = await collect(agent, "go")
        check_protocol(events)
        assert spins >= 1, "the tool did receive the cancellation and ignored it"
        assert of_type(events, "tool.error")[0]["error"]["code"] == "timeout"
        assert events[-1]["type"] == "run.finished"
        assert agent.executor.supervisor.abandoned == 1
        stop = True
        with anyio.fail_after(2):
            while agent.executor.supervisor.abandoned:
                await anyio.sleep(0.01)


class TestToolBody:
    async def test_a_sync_tool_runs_in_a_worker_thread(self) -> None:
        @tool
        def where() -> str:
            return threading.current_thread().name

        events = await collect(Agent(tools=[where], model=_one_call("where")), "go")
        name = of_type(events, "tool.result")[0]["output"]
        assert name != threading.current_thread().name, "a sync tool never blocks the loop"

    async def test_a_body_stopped_from_outside_ends_its_call_with_an_error(self) -> None:
        started = anyio.Event()

        @tool(retries=0)
        async def waits() -> str:
            started.set()
            await anyio.sleep_forever()
            return "never"

        agent = Agent(tools=[waits], model=_one_call("waits"))
        events: list[dict[str, Any]] = []

        async def consume() -> None:
            events.extend(await collect(agent, "go"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await started.wait()
            await agent.aclose()  # cancels every supervised body
        check_protocol(events)
        error = of_type(events, "tool.error")[0]["error"]
        assert error["code"] == "internal"
        assert "waits stopped without finishing" in error["message"]


class TestRetry:
    async def test_503_twice_then_success_waits_1_then_2_seconds(self, fast: Clock) -> None:
        attempts = 0

        @tool
        async def flaky() -> str:
            nonlocal attempts
            attempts += 1
            if attempts <= 2:
                raise ToolError("service unavailable", status=503)
            return "ok"

        events = await collect(Agent(tools=[flaky], model=_one_call("flaky"), clock=fast), "go")
        check_protocol(events)
        retries = of_type(events, "tool.retrying")
        assert [(r["attempt"], r["delay_ms"], r["reason"]) for r in retries] == [
            (1, 1000, "error"), (2, 2000, "error")]
        assert retries[0]["error"] == {"code": "upstream", "message": "service unavailable",
                                       "status": 503}
        assert [e["attempt"] for e in of_type(events, "tool.exec.started")] == [1, 2, 3]
        assert of_type(events, "tool.result")[0]["output"] == "ok"

    async def test_400_is_not_retried(self, fast: Clock) -> None:
        attempts = 0

        @tool
        async def picky() -> str:
            nonlocal attempts
            attempts += 1
            raise ToolError("bad request: domain missing", status=400)

        model = _one_call("picky")
        events = await collect(Agent(tools=[picky], model=model, clock=fast), "go")
        check_protocol(events)
        assert attempts == 1
        assert not of_type(events, "tool.retrying")
        assert of_type(events, "tool.error")[0]["error"] == {
            "code": "upstream", "message": "bad request: domain missing", "status": 400}

    async def test_a_bug_is_not_retried(self, fast: Clock) -> None:
        @tool
        async def buggy() -> str:
            return {}["missing"]  # type: ignore[no-any-return]

        events = await collect(Agent(tools=[buggy], model=_one_call("buggy"), clock=fast), "go")
        error = of_type(events, "tool.error")[0]["error"]
        assert error["code"] == "internal"
        assert "KeyError" in error["message"]
        assert not of_type(events, "tool.retrying")

    async def test_429_honours_retry_after(self, fast: Clock) -> None:
        attempts = 0

        @tool
        async def limited() -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ToolError("too many requests", status=429, retry_after=7)
            return "ok"

        events = await collect(Agent(tools=[limited], model=_one_call("limited"), clock=fast),
                               "go")
        retry = of_type(events, "tool.retrying")[0]
        assert (retry["delay_ms"], retry["reason"]) == (7000, "rate_limited")

    async def test_crash_mid_stream_is_retried_and_attempts_are_told_apart(
        self, fast: Clock
    ) -> None:
        attempts = 0

        @tool
        async def shaky():  # type: ignore[no-untyped-def]
            nonlocal attempts
            attempts += 1
            for i in range(3):
                yield f"a{attempts}c{i} "
            if attempts == 1:
                raise ConnectionResetError("peer reset the connection")

        model = _one_call("shaky")
        events = await collect(Agent(tools=[shaky], model=model, clock=fast), "go")
        check_protocol(events)
        deltas = [(d["attempt"], d["index"]) for d in of_type(events, "tool.output.delta")]
        assert deltas == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)], (
            "each attempt restarts its index at 0")
        assert of_type(events, "tool.retrying")[0]["attempt"] == 1
        assert of_type(events, "tool.result")[0]["output"] == "a2c0 a2c1 a2c2 "

    async def test_failing_call_is_retried_alone_and_siblings_not_rerun(
        self, fast: Clock
    ) -> None:
        runs = {"steady": 0, "flaky": 0}

        @tool
        async def steady() -> str:
            runs["steady"] += 1
            return "kept"

        @tool
        async def flaky() -> str:
            runs["flaky"] += 1
            if runs["flaky"] == 1:
                raise ToolError("bad gateway", status=502)
            return "recovered"

        model = ScriptedModel([Step(calls=[Call("steady"), Call("flaky")]), Step(text="ok")],
                              keep_requests=8)
        await collect(Agent(tools=[steady, flaky], model=model, clock=fast), "go")
        assert runs == {"steady": 1, "flaky": 2}
        assert _tool_messages(model) == ["kept", "recovered"]


class TestCircuitBreaker:
    @staticmethod
    def _failing() -> Any:
        @tool(retries=0)
        async def broken() -> str:
            raise ToolError("forbidden", status=403)

        return broken

    async def test_three_failures_open_the_circuit_and_hide_the_tool(self, fast: Clock) -> None:
        broken = self._failing()
        model = ScriptedModel([Step(calls=[Call("broken")]) for _ in range(4)] + [Step(text="ok")],
                              keep_requests=8)
        events = await collect(Agent(tools=[broken], model=model, clock=fast), "go")
        check_protocol(events)
        opened = of_type(events, "tool.circuit_open")
        assert opened == [{**opened[0], "tool": "broken", "failures": 3}], "logged once"
        codes = [e["error"]["code"] for e in of_type(events, "tool.error")]
        assert codes == ["upstream", "upstream", "upstream", "circuit_open"]
        assert len(of_type(events, "tool.exec.started")) == 3, "an open circuit runs nothing"
        offered = [[t["function"]["name"] for t in r.get("tools", [])] for r in model.requests]
        assert offered == [["broken"]] * 3 + [[], []], "the tool disappears from the list"

    async def test_a_success_resets_the_count(self, fast: Clock) -> None:
        outcomes = iter([False, False, True, False, False])

        @tool(retries=0)
        async def sometimes() -> str:
            if not next(outcomes):
                raise ToolError("down", status=404)
            return "up"

        model = ScriptedModel([Step(calls=[Call("sometimes")]) for _ in range(5)]
                              + [Step(text="ok")])
        events = await collect(Agent(tools=[sometimes], model=model, clock=fast), "go")
        assert not of_type(events, "tool.circuit_open")

    async def test_breakers_are_per_session(self, fast: Clock) -> None:
        broken = self._failing()
        model = ScriptedModel([Step(calls=[Call("broken")]) for _ in range(3)] + [Step(text="ok")])
        agent = Agent(tools=[broken], model=model, clock=fast)
        first = agent.session()
        await collect(agent, "go", session=first)
        assert agent.tool_specs(first) == []
        assert [t["function"]["name"] for t in agent.tool_specs(agent.session())] == ["broken"]


class TestUpstreamLimit:
    async def test_ten_parallel_calls_never_exceed_two_in_flight(self) -> None:
        in_flight = 0
        peak = 0

        @tool(upstream="crm")
        async def crm(i: int) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.sleep(0.01)
            in_flight -= 1
            return i

        model = ScriptedModel([Step(calls=[Call("crm", {"i": i}) for i in range(10)]),
                               Step(text="ok")])
        agent = Agent(tools=[crm], model=model, upstreams={"crm": UpstreamLimit(concurrency=2)})
        events = await collect(agent, "go")
        check_protocol(events)
        assert peak == 2
        assert sorted(e["output"] for e in of_type(events, "tool.result")) == list(range(10))
        queued = of_type(events, "tool.queued")
        assert len(queued) == 8 and {q["upstream"] for q in queued} == {"crm"}, (
            "the wait shows in the event stream")

    async def test_waiting_for_the_upstream_does_not_count_against_the_timeout(self) -> None:
        @tool(upstream="slow", timeout=0.15, retries=0)
        async def one(i: int) -> int:
            await anyio.sleep(0.1)
            return i

        model = ScriptedModel([Step(calls=[Call("one", {"i": i}) for i in range(3)]),
                               Step(text="ok")])
        agent = Agent(tools=[one], model=model, upstreams={"slow": UpstreamLimit(concurrency=1)})
        events = await collect(agent, "go")
        assert len(of_type(events, "tool.result")) == 3, "queued calls did not time out"

    async def test_rate_limit_spaces_calls(self) -> None:
        @tool(upstream="api")
        async def ping(i: int) -> int:
            return i

        model = ScriptedModel([Step(calls=[Call("ping", {"i": i}) for i in range(4)]),
                               Step(text="ok")])
        agent = Agent(tools=[ping], model=model,
                      upstreams={"api": UpstreamLimit(rate=2, period=0.2)})
        events = await collect(agent, "go")
        starts = sorted(e["ts"] for e in of_type(events, "tool.exec.started"))
        assert starts[-1] - starts[0] >= 100, "4 calls at 2 per 0.2 s take at least ~0.1 s"
        assert len(of_type(events, "tool.result")) == 4


class TestCache:
    async def test_identical_calls_reuse_the_result_within_the_session(self) -> None:
        runs = 0

        @tool(cache=60)
        async def lookup(domain: str) -> dict[str, Any]:
            nonlocal runs
            runs += 1
            return {"domain": domain}

        model = ScriptedModel([Step(calls=[Call("lookup", {"domain": "a.com"})]),
                               Step(calls=[Call("lookup", {"domain": "a.com"}),
                                           Call("lookup", {"domain": "b.com"})]),
                               Step(text="ok")])
        events = await collect(Agent(tools=[lookup], model=model), "go")
        check_protocol(events)
        assert runs == 2
        results = of_type(events, "tool.result")
        assert [r.get("cached", False) for r in results] == [False, True, False]
        assert results[1]["output"] == {"domain": "a.com"}


@pytest.mark.timeout(30)
async def test_real_time_backoff_end_to_end() -> None:
    """The one test on the real clock: a 503 then success waits a real second."""
    attempts = 0

    @tool
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ToolError("unavailable", status=503)
        return "ok"

    start = anyio.current_time()
    events = await collect(Agent(tools=[flaky], model=_one_call("flaky")), "go")
    elapsed = anyio.current_time() - start
    check_protocol(events)
    assert of_type(events, "tool.retrying")[0]["delay_ms"] == 1000
    assert 1.0 <= elapsed < 5.0, f"the real backoff waited {elapsed:.2f} s"


class TestLatency:
    async def test_quantiles_are_tracked_and_slow_inline_tools_flagged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        # 100x, not 1000x: a full GC collection in the middle (50-80 ms once the whole
        # suite is imported) would read as 50-80 nominal seconds, past the 30 s bound.
        clock = Clock(scale=0.01)

        @tool(timeout=30)
        async def sluggish(i: int) -> int:
            await anyio.sleep(clock.real(4))  # 4 nominal seconds: over the 3 s budget
            return i

        model = ScriptedModel([Step(calls=[Call("sluggish", {"i": i}) for i in range(20)]),
                               Step(text="ok")])
        agent = Agent(tools=[sluggish], model=model, clock=clock,
                      limits=Limits(max_calls_per_step=20))
        with caplog.at_level("WARNING", logger="toolplex.calls"):
            await collect(agent, "go")
        quantiles = agent.executor.quantiles("sluggish")
        assert set(quantiles) == {"0.5", "0.95", "0.99"}
        assert 3.5 < quantiles["0.5"] <= quantiles["0.99"] < 30
        assert any("candidate" in r.getMessage() for r in caplog.records)

    async def test_one_slow_call_after_twenty_quick_ones_flags_the_tool(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        @tool(budget=0.05)
        async def mostly_quick(i: int) -> int:
            if i == 20:
                await anyio.sleep(0.1)  # over the 0.05 s budget, after the 20 others end
            return i

        model = ScriptedModel([Step(calls=[Call("mostly_quick", {"i": i}) for i in range(21)]),
                               Step(text="ok")])
        agent = Agent(tools=[mostly_quick], model=model, limits=Limits(max_calls_per_step=21))
        with caplog.at_level("WARNING", logger="toolplex.calls"):
            await collect(agent, "go")
        assert any("candidate" in r.getMessage() for r in caplog.records), (
            "up to 100 samples the p99 is the slowest: one slow call puts it over the budget")
