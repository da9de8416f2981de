"""OpenTelemetry traces: GenAI spans per run, model response and tool call."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from toolplex import Agent, Clock, Job, ToolError, UpstreamLimit, telemetry, tool
from toolplex.runner import Run
from toolplex.server.logs import JSONFormatter
from toolplex.session import Session
from toolplex.telemetry import CAPTURE_CONTENT
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


def _named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@tool
async def lookup(domain: str) -> dict[str, Any]:
    """Look a company up."""
    return {"domain": domain, "employees": 120}


@tool(retries=0)
async def broken(domain: str) -> dict[str, Any]:
    """Always fails."""
    raise ValueError(f"no data for {domain}")


_RECORD_IMPORTERS = """\
import sys
by_toolplex = []
class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'opentelemetry':
            frame = sys._getframe(1)
            while frame and frame.f_globals.get('__name__', '').startswith('importlib'):
                frame = frame.f_back
            importer = frame.f_globals.get('__name__', '') if frame else ''
            if importer.split('.')[0] == 'toolplex':
                by_toolplex.append((importer, name))
        return None
sys.meta_path.insert(0, _Watch())
"""

_HIDE_OPENTELEMETRY = """\
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'opentelemetry':
            raise ImportError('opentelemetry is not installed')
        return None
sys.meta_path.insert(0, _Hide())
"""


def _run_python(prelude: str, kind: str, checks: str) -> None:
    """Run a one-call agent in a fresh interpreter after ``prelude``, then ``checks``."""
    code = prelude + (
        "import anyio, toolplex\n"
        "from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect\n"
        "@toolplex.tool\n"
        f"{kind} echo(x: str) -> str:\n"
        "    return x\n"
        "model = ScriptedModel([Step(calls=[Call('echo', {'x': 'a'})]), Step(text='ok')])\n"
        "events = anyio.run(collect, toolplex.Agent(tools=[echo], model=model), 'hi')\n"
        "check_protocol(events)\n"
        "assert events[-1]['outcome'] == 'success'\n") + checks
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def _one_call(name: str, args: dict[str, Any] | None = None) -> ScriptedModel:
    return ScriptedModel([Step(calls=[Call(name, args or {"domain": "acme.com"})]),
                          Step(text="done")])


class TestWithoutTracing:
    def test_import_toolplex_and_a_run_import_no_opentelemetry(self) -> None:
        # Other libraries may load it (redis-py looks for it): toolplex's code may not.
        _run_python(_RECORD_IMPORTERS, "def",
                    "assert not by_toolplex, by_toolplex\n"
                    "assert 'toolplex.telemetry' not in sys.modules\n")

    def test_runs_work_with_opentelemetry_not_installed(self) -> None:
        _run_python(_HIDE_OPENTELEMETRY, "async def",
                    "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n")

    async def test_no_tracer_provider_set_means_no_trace(self) -> None:
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        agent = Agent(tools=[lookup], model=_one_call("lookup"))
        run = Run(agent, agent.session(), "go", "user")
        stream = agent.model.stream([], [])
        assert run.trace.model_stream(stream) is stream, "the model stream is not wrapped"
        assert run.listeners == [], "no trace listens when nothing would record it"
        events = await collect(agent, "go")
        check_protocol(events)


class TestSpans:
    async def test_a_run_is_one_trace_of_agent_chat_and_tool_spans(
            self, spans: InMemorySpanExporter) -> None:
        agent = Agent(tools=[lookup], model=_one_call("lookup"), name="enricher")
        session = agent.session()
        events = await collect(agent, "enrich acme.com", session=session)
        check_protocol(events)
        [root] = _named(spans, "invoke_agent")
        chats = _named(spans, "chat")
        [tool_span] = _named(spans, "execute_tool")
        assert root.name == "invoke_agent enricher" and root.parent is None
        assert _attrs(root)["gen_ai.operation.name"] == "invoke_agent"
        assert _attrs(root)["gen_ai.conversation.id"] == session.id
        assert _attrs(root)["toolplex.run.id"] == events[0]["run_id"]
        assert _attrs(root)["gen_ai.usage.input_tokens"] > 0
        assert {s.context.trace_id for s in spans.get_finished_spans()} == {
            root.context.trace_id}, "one trace per run"
        assert [c.name for c in chats] == ["chat scripted", "chat scripted"], "one per step"
        for chat in chats:
            assert chat.parent == root.context and chat.kind is SpanKind.CLIENT
            assert _attrs(chat)["gen_ai.request.model"] == "scripted"
            assert _attrs(chat)["gen_ai.usage.output_tokens"] > 0
        assert _attrs(chats[0])["gen_ai.response.finish_reasons"] == ("tool_calls",)
        call_id = of_type(events, "tool.call.start")[0]["call_id"]
        assert tool_span.name == "execute_tool lookup"
        assert tool_span.kind is SpanKind.INTERNAL and tool_span.parent == root.context
        attrs = _attrs(tool_span)
        assert attrs == {**attrs, "gen_ai.operation.name": "execute_tool",
                         "gen_ai.tool.name": "lookup", "gen_ai.tool.call.id": call_id,
                         "gen_ai.tool.type": "function", "toolplex.attempts": 1,
                         "toolplex.partial": False, "toolplex.breaker.state": "closed"}
        assert tool_span.status.status_code is StatusCode.OK

    async def test_usage_of_a_responses_model_too(self, spans: InMemorySpanExporter) -> None:
        model = ScriptedModel([Step(text="hello")], dialect="responses")
        await collect(Agent(model=model), "hi")
        [chat] = _named(spans, "chat")
        assert _attrs(chat)["gen_ai.usage.input_tokens"] > 0
        assert _attrs(chat)["gen_ai.usage.output_tokens"] > 0

    async def test_two_runs_are_two_traces(self, spans: InMemorySpanExporter) -> None:
        agent = Agent(tools=[lookup], model=_one_call("lookup"))
        session = agent.session()
        await collect(agent, "one", session=session)
        await collect(agent, "two", session=session)
        roots = _named(spans, "invoke_agent")
        assert len(roots) == 2 and roots[0].context.trace_id != roots[1].context.trace_id
        for root in roots:
            inside = [s for s in spans.get_finished_spans()
                      if s.context.trace_id == root.context.trace_id]
            assert sorted(s.name.split()[0] for s in inside) == [
                "chat", "chat", "execute_tool", "invoke_agent"]

    async def test_parallel_calls_spans_overlap(self, spans: InMemorySpanExporter) -> None:
        arrived = {"a": anyio.Event(), "b": anyio.Event()}

        @tool
        async def meet(me: str, other: str) -> str:
            """Return once the other call is running too."""
            arrived[me].set()
            await arrived[other].wait()
            return me

        model = ScriptedModel([Step(calls=[Call("meet", {"me": "a", "other": "b"}),
                                           Call("meet", {"me": "b", "other": "a"})]),
                               Step(text="met")])
        check_protocol(await collect(Agent(tools=[meet], model=model), "go"))
        first, second = _named(spans, "execute_tool")
        assert first.start_time is not None and second.start_time is not None
        assert first.end_time is not None and second.end_time is not None
        assert first.start_time < second.end_time and second.start_time < first.end_time, (
            "calls that ran at once have overlapping spans")

    async def test_a_failed_call_is_an_error_span_with_its_error_type(
            self, spans: InMemorySpanExporter) -> None:
        events = await collect(Agent(tools=[broken], model=_one_call("broken")), "go")
        code = of_type(events, "tool.error")[0]["error"]["code"]
        [span] = _named(spans, "execute_tool")
        assert span.status.status_code is StatusCode.ERROR
        assert "no data for acme.com" in (span.status.description or "")
        assert _attrs(span)["error.type"] == code

    async def test_a_failed_run_is_an_error_span(self, spans: InMemorySpanExporter) -> None:
        model = ScriptedModel([Step(text="cut", finish="length")])
        events = await collect(Agent(model=model), "go")
        assert events[-1]["type"] == "run.error"
        [root] = _named(spans, "invoke_agent")
        assert root.status.status_code is StatusCode.ERROR
        assert _attrs(root)["error.type"] == "model_truncated"

    async def test_a_run_cancelled_mid_response_ends_every_span(
            self, spans: InMemorySpanExporter) -> None:
        model = ScriptedModel([Step(text="a long answer, token by token", token_delay=0.05)])
        agent = Agent(model=model)
        session = agent.session()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                run = agent.start(session, "go", tg)
                async with aclosing(session.log.tail(0)) as events:
                    async for event in events:
                        if getattr(event, "type", "") == "text.delta":
                            run.cancel()
                            break
        [root] = _named(spans, "invoke_agent")
        [chat] = _named(spans, "chat")
        assert _attrs(root)["toolplex.run.outcome"] == "cancelled"
        assert chat.parent == root.context and chat.status.status_code is not StatusCode.ERROR
        assert trace.get_current_span() is trace.INVALID_SPAN, "no context left attached"

    async def test_a_tracing_fault_costs_the_run_nothing(
            self, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> None:
        def broken_handler(trace_: Any, event: Any) -> None:
            raise RuntimeError("exporter bug")

        monkeypatch.setitem(telemetry._HANDLERS, "tool.result", broken_handler)
        events = await collect(Agent(tools=[lookup], model=_one_call("lookup")), "go")
        check_protocol(events)
        assert events[-1]["outcome"] == "success"
        assert "tracing tool.result failed" in caplog.text
        assert len(_named(spans, "execute_tool")) == 1, "the run's end still ends the span"

    async def test_each_attempt_is_an_event_of_the_call_span(
            self, spans: InMemorySpanExporter, fast: Clock) -> None:
        attempts = 0

        @tool
        async def flaky(domain: str) -> str:
            """Fails twice, then works."""
            nonlocal attempts
            attempts += 1
            if attempts <= 2:
                raise ToolError("service unavailable", status=503)
            return "ok"

        await collect(Agent(tools=[flaky], model=_one_call("flaky"), clock=fast), "go")
        [span] = _named(spans, "execute_tool")
        assert [e.attributes["toolplex.attempt"] for e in span.events  # type: ignore[index]
                if e.name == "toolplex.attempt"] == [1, 2, 3]
        retries = [e.attributes for e in span.events if e.name == "toolplex.retry"]
        assert [(r["toolplex.attempt"], r["toolplex.retry.delay_ms"])  # type: ignore[index]
                for r in retries] == [(1, 1000), (2, 2000)]
        assert _attrs(span)["toolplex.attempts"] == 3
        assert span.status.status_code is StatusCode.OK


class TestToolplexAttributes:
    async def test_early_dispatch_and_its_lead_before_the_response_ended(
            self, spans: InMemorySpanExporter) -> None:
        # The second call's arguments stream with 25 ms between fragments: the first call
        # runs all the while, and the response ends only after them.
        model = ScriptedModel([Step(calls=[Call("lookup", {"domain": "a.com"}),
                                           Call("lookup", {"domain": "b.com"})],
                                    arg_delay=0.025),
                               Step(text="done")])
        await collect(Agent(tools=[lookup], model=model), "go")
        first, second = sorted(_named(spans, "execute_tool"), key=lambda s: s.start_time or 0)
        assert _attrs(first)["toolplex.dispatch.early"] is True, (
            "the first call started when the second began, before the response ended")
        assert _attrs(first)["toolplex.dispatch.lead_ms"] >= 25, (
            "at least one 25 ms gap passed between its start and the response's end")
        assert _attrs(second)["toolplex.dispatch.early"] is False
        assert "toolplex.dispatch.lead_ms" not in _attrs(second)
        assert first.end_time is not None and first.start_time is not None
        assert first.end_time > first.start_time

    async def test_short_circuit_cancel_reason_and_partial(
            self, spans: InMemorySpanExporter) -> None:
        started = anyio.Event()

        @tool(decisive=lambda chunk: chunk >= 0.9)
        async def search(q: str):  # type: ignore[no-untyped-def]
            """Streams scores."""
            if q == "slow":
                yield 0.1
                started.set()
                await anyio.sleep_forever()
            await started.wait()
            yield 0.95

        model = ScriptedModel([Step(calls=[Call("search", {"q": "slow"}),
                                           Call("search", {"q": "fast"})]),
                               Step(text="found")])
        events = await collect(Agent(tools=[search], model=model), "go")
        winner = of_type(events, "tool.short_circuit")[0]["call_id"]
        by_id = {_attrs(s)["gen_ai.tool.call.id"]: s for s in _named(spans, "execute_tool")}
        [loser] = [s for call_id, s in by_id.items() if call_id != winner]
        assert _attrs(loser)["toolplex.cancel.reason"] == "short_circuit"
        assert _attrs(loser)["toolplex.cancel.by_call_id"] == winner
        assert _attrs(loser)["toolplex.partial"] is True, "it had yielded a chunk"
        assert "toolplex.cancel.reason" not in _attrs(by_id[winner])

    async def test_timed_out_stream_is_partial(self, spans: InMemorySpanExporter,
                                               fast: Clock) -> None:
        @tool(timeout=1)
        async def feed(domain: str):  # type: ignore[no-untyped-def]
            """Yields once, then hangs."""
            yield {"first": 1}
            await anyio.sleep_forever()

        await collect(Agent(tools=[feed], model=_one_call("feed"), clock=fast), "go")
        [span] = _named(spans, "execute_tool")
        assert _attrs(span)["toolplex.partial"] is True
        assert [e.name for e in span.events] == ["toolplex.attempt", "toolplex.timeout"]

    async def test_upstream_and_the_wait_for_its_slot(self, spans: InMemorySpanExporter) -> None:
        first_in = anyio.Event()
        release = anyio.Event()

        @tool(upstream="crm")
        async def crm(i: int) -> int:
            """One at a time."""
            if i == 0:
                first_in.set()
                await release.wait()
            return i

        @tool
        async def opener() -> str:
            """Lets the first crm call go once the second waits."""
            await first_in.wait()
            release.set()
            return "ok"

        model = ScriptedModel([Step(calls=[Call("crm", {"i": 0}), Call("crm", {"i": 1}),
                                           Call("opener", {})]),
                               Step(text="ok")])
        agent = Agent(tools=[crm, opener], model=model,
                      upstreams={"crm": UpstreamLimit(concurrency=1)})
        events = await collect(agent, "go")
        queued = of_type(events, "tool.queued")[0]["call_id"]
        spans_by_id = {_attrs(s)["gen_ai.tool.call.id"]: s for s in _named(spans, "execute_tool")}
        assert _attrs(spans_by_id[queued])["toolplex.upstream"] == "crm"
        assert _attrs(spans_by_id[queued])["toolplex.queue.wait_ms"] >= 0
        others = [s for call_id, s in spans_by_id.items() if call_id != queued]
        assert all("toolplex.queue.wait_ms" not in _attrs(s) for s in others)

    async def test_breaker_state_the_call_found(self, spans: InMemorySpanExporter) -> None:
        agent = Agent(tools=[broken], model=_one_call("broken"))
        session = agent.session()
        for _ in range(4):
            await collect(agent, "go", session=session)
        states = [_attrs(s)["toolplex.breaker.state"] for s in _named(spans, "execute_tool")]
        assert states == ["closed", "closed", "closed", "open"], (
            "three failures open the circuit; the fourth call found it open")

    async def test_job_call_and_its_completion_turn_linked(
            self, spans: InMemorySpanExporter) -> None:
        @tool(mode="human")
        async def approve(percent: int, job: Job) -> None:
            """A person approves."""

        model = ScriptedModel(scripts={"job update": [Step(text="approved")]},
                              default=[Step(calls=[Call("approve", {"percent": 5})]),
                                       Step(text="asked")])
        agent = Agent(tools=[approve], model=model)
        session = agent.session()
        first = await collect(agent, "discount", session=session)
        job_id = of_type(first, "job.pending")[0]["job_id"]
        assert agent.jobs.complete(job_id, "succeeded", output={"ok": True})
        await _job_turn_ended(session)
        [call_span] = _named(spans, "execute_tool")
        assert _attrs(call_span)["toolplex.job.id"] == job_id
        assert _attrs(call_span)["toolplex.job.via"] == "human"
        first_root, turn = _named(spans, "invoke_agent")
        assert _attrs(turn)["toolplex.run.trigger"] == "job"
        assert turn.parent is None and turn.context.trace_id != first_root.context.trace_id
        assert [link.context for link in turn.links] == [call_span.context], (
            "the completion turn links to the call that started the job")
        assert turn.links[0].attributes == {"toolplex.job.id": job_id}


async def _job_turn_ended(session: Session) -> None:
    finished = 0
    with anyio.fail_after(10):
        async for item in session.log.tail(0):
            finished += getattr(item, "type", "") == "run.finished"
            if finished == 2:
                return


class TestCurrentSpan:
    async def test_the_call_span_is_current_in_async_and_sync_tool_bodies(
            self, spans: InMemorySpanExporter) -> None:
        seen: dict[str, Any] = {}

        @tool
        async def inside_async(domain: str) -> str:
            """Records the current span."""
            seen["async"] = trace.get_current_span().get_span_context()
            return "a"

        @tool
        def inside_sync(domain: str) -> str:
            """Records the current span, from its worker thread."""
            seen["sync"] = trace.get_current_span().get_span_context()
            seen["thread"] = threading.current_thread() is not threading.main_thread()
            return "s"

        model = ScriptedModel([Step(calls=[Call("inside_async", {"domain": "a"}),
                                           Call("inside_sync", {"domain": "b"})]),
                               Step(text="ok")])
        await collect(Agent(tools=[inside_async, inside_sync], model=model), "go")
        by_name = {s.name: s.context for s in _named(spans, "execute_tool")}
        assert seen["async"] == by_name["execute_tool inside_async"]
        assert seen["sync"] == by_name["execute_tool inside_sync"] and seen["thread"]

    async def test_a_span_made_inside_a_tool_is_the_call_spans_child(
            self, spans: InMemorySpanExporter) -> None:
        @tool
        async def remote(domain: str) -> str:
            """Calls out, traced (as an MCP or HTTP client would)."""
            with trace.get_tracer("client").start_as_current_span("tools/call remote"):
                return "ok"

        await collect(Agent(tools=[remote], model=_one_call("remote")), "go")
        [inner] = _named(spans, "tools/call")
        [call_span] = _named(spans, "execute_tool")
        assert inner.parent == call_span.context


class TestContent:
    async def test_arguments_and_results_stay_out_by_default(
            self, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(CAPTURE_CONTENT, raising=False)
        await collect(Agent(tools=[lookup], model=_one_call("lookup")), "secret input")
        for span in spans.get_finished_spans():
            keys = set(_attrs(span))
            assert not keys & {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
                               "gen_ai.input.messages", "gen_ai.output.messages"}
            assert "secret" not in repr(span.attributes)

    async def test_arguments_and_results_with_capture_on(
            self, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CAPTURE_CONTENT, "true")
        await collect(Agent(tools=[lookup], model=_one_call("lookup")), "secret input")
        [span] = _named(spans, "execute_tool")
        assert _attrs(span)["gen_ai.tool.call.arguments"] == '{"domain": "acme.com"}'
        assert _attrs(span)["gen_ai.tool.call.result"] == (
            '{"domain": "acme.com", "employees": 120}')
        [root] = _named(spans, "invoke_agent")
        assert "secret input" in _attrs(root)["gen_ai.input.messages"]


class TestLogs:
    async def test_log_lines_inside_a_call_carry_its_trace_and_span_ids(
            self, spans: InMemorySpanExporter) -> None:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(JSONFormatter())
        logger = logging.getLogger("toolplex.test_telemetry")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        @tool
        async def noisy(domain: str) -> str:
            """Logs a line."""
            logger.info("looking up %s", domain)
            return "ok"

        try:
            await collect(Agent(tools=[noisy], model=_one_call("noisy")), "go")
            logger.info("outside any run")
        finally:
            logger.removeHandler(handler)
        inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
        [call_span] = _named(spans, "execute_tool")
        assert inside["msg"] == "looking up acme.com"
        assert inside["trace_id"] == format(call_span.context.trace_id, "032x")
        assert inside["span_id"] == format(call_span.context.span_id, "016x")
        assert "trace_id" not in outside and "span_id" not in outside
