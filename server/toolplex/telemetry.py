"""OpenTelemetry traces in the GenAI semantic conventions (extra ``toolplex[otel]``).

Only ``opentelemetry-api`` is used, and only once the application has imported it and
set a ``TracerProvider``: the runner imports this module then, never before, so a plain
``import toolplex`` loads no OpenTelemetry code and an untraced run costs nothing.

A run is an ``invoke_agent {agent}`` span; each model response a ``chat {model}``
span; each tool call an ``execute_tool {tool}`` span (kind INTERNAL), a child of the
run's span, that is the current span while the tool's body runs (in its task and, for
a sync tool, its worker thread), so an instrumented client inside the tool (HTTP, an
MCP session) joins the trace. The spans are driven by the run's own events: the trace
is one more listener of the run, beside the ones that stream it.

Arguments and results are recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.

Example::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())  # plus an exporter
    async for event in agent.run("enrich acme.com"):  # now traced
        ...
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextvars import Token
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from .events import BaseEvent
from .model import Finish, TextChunk, Usage

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .calls import ToolCall


class _Run(Protocol):
    """What a trace reads of its run (the runner's ``Run``; this module sits beside it)."""

    @property
    def id(self) -> str: ...
    @property
    def trigger(self) -> str: ...
    @property
    def input(self) -> Any: ...
    @property
    def agent(self) -> Any: ...
    @property
    def session(self) -> Any: ...
    @property
    def listeners(self) -> list[Any]: ...

logger = logging.getLogger("toolplex.telemetry")

CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The environment variable (``true``) that lets arguments and results into spans."""

_JOB_ID = re.compile(r'"job_id": "([^"]+)"')
_STARTED_BY: OrderedDict[str, SpanContext] = OrderedDict()
"""The span of the call that started each recent job, for its completion turn's link."""
_STARTED_BY_MAX = 10_000


def _tracer() -> trace.Tracer | None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None  # no TracerProvider set: nothing happens
    return provider.get_tracer("toolplex", version("toolplex"))


def trace_run(run: _Run) -> RunTrace | None:
    """The trace of ``run``, listening to its events; None when no TracerProvider is set."""
    tracer = _tracer()
    if tracer is None:
        return None
    traced = RunTrace(run, tracer)
    run.listeners.append(traced)
    return traced


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    """GenAI usage attributes from Chat Completions (prompt/completion_tokens) or
    Responses (input/output_tokens) usage."""
    out = {}
    for attribute, keys in (("gen_ai.usage.input_tokens", ("input_tokens", "prompt_tokens")),
                            ("gen_ai.usage.output_tokens",
                             ("output_tokens", "completion_tokens"))):
        found = [usage[key] for key in keys if isinstance(usage.get(key), int)]
        if found:
            out[attribute] = found[0]
    return out


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str,
                                                           ensure_ascii=False)


@dataclass(eq=False)
class _CallSpan:
    span: Span
    dispatched: float
    early: bool
    queued: float | None = None
    ended_ns: int | None = None
    """Set when the call ended before its model response did: the span ends with the
    response, stamped with this time, once ``toolplex.dispatch.lead_ms`` is known."""
    attempts: int = 0
    queue_wait_ms: int = 0


class RunTrace:
    """The spans of one run. Made by :func:`trace_run`; fed by the run's events."""

    def __init__(self, run: _Run, tracer: trace.Tracer) -> None:
        self.run = run
        self.tracer = tracer
        self.capture = os.environ.get(CAPTURE_CONTENT, "").strip().lower() == "true"
        model = run.agent.model
        self.model_name: str | None = getattr(model, "model", None)
        self.agent_name = run.agent.name
        # [telemetry] a job's completion turn is a trace of its own, linked to the call
        # that started the job; any other run joins whatever trace is current (the HTTP
        # request's span, when the server is instrumented).
        parent = otel_context.Context() if run.trigger == "job" else otel_context.get_current()
        self.parent = parent
        self.span: Span | None = None
        self.context = parent
        self._token: Token[Context] | None = None
        self.calls: dict[str, _CallSpan] = {}
        self.names: dict[str, str] = {}
        """Tool names by call id, from ``tool.call.start``."""
        self.response_ended: float | None = None
        self.waiting: list[_CallSpan] = []

    # -- the listener interface (what Run.emit and Run.execute call) --

    def send_nowait(self, event: BaseEvent) -> None:
        """Take one event of the run (synchronously, as it is appended)."""
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            try:
                handler(self, event)
            except Exception:  # a tracing fault never costs the run its event
                logger.exception("tracing %s failed", event.type)

    def close(self) -> None:
        """The run has ended: end whatever is still open."""
        for call_id in list(self.calls):
            self._end_call(call_id)
        self._flush_waiting()
        if self.span is not None and self.span.is_recording():
            self.span.end()
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None

    # -- hooks the runner calls --

    def model_stream(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``stream`` (one model response) inside a ``chat {model}`` span."""
        return self._chat(stream)

    def start_call(self, tg: TaskGroup, call: ToolCall,
                   fn: Callable[..., Coroutine[Any, Any, None]], *args: Any, name: str) -> None:
        """Start ``call``'s task in ``tg`` with the call's span current in it: a task
        copies the context it starts in, and a sync tool's worker thread copies it again."""
        traced = self.calls.get(call.call_id)
        if traced is None:
            tg.start_soon(fn, *args, name=name)
            return
        token = otel_context.attach(trace.set_span_in_context(traced.span, self.context))
        try:
            tg.start_soon(fn, *args, name=name)
        finally:
            otel_context.detach(token)

    # -- spans --

    async def _chat(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        name = f"chat {self.model_name}" if self.model_name else "chat"
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat",
                                      "gen_ai.provider.name": "openai"}
        if self.model_name:
            attributes["gen_ai.request.model"] = self.model_name
        span = self.tracer.start_span(name, self.context, SpanKind.CLIENT, attributes)
        self.response_ended = None
        # Current while the response streams: an instrumented HTTP client nests under it.
        token = otel_context.attach(trace.set_span_in_context(span, self.context))
        usage: dict[str, int] = {}
        text: list[str] = []
        try:
            async for chunk in stream:
                if isinstance(chunk, Finish):
                    span.set_attribute("gen_ai.response.finish_reasons", [chunk.reason])
                    self.response_ended = time.monotonic()
                elif isinstance(chunk, Usage):
                    for key, value in chunk.usage.items():
                        if isinstance(value, int):
                            usage[key] = usage.get(key, 0) + value
                elif self.capture and isinstance(chunk, TextChunk):
                    text.append(chunk.text)
                yield chunk
        except Exception as exc:  # a cancelled run's response is no model error
            span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            try:
                await stream.aclose()  # type: ignore[attr-defined]
            finally:  # also when a cancelled run interrupts the close
                self._end_chat(span, token, usage, text)

    def _end_chat(self, span: Span, token: Token[Context], usage: dict[str, int],
                  text: list[str]) -> None:
        otel_context.detach(token)
        span.set_attributes(_usage(usage))
        if self.capture and text:
            span.set_attribute("gen_ai.output.messages", _json(
                [{"role": "assistant", "parts": [{"type": "text", "content": "".join(text)}]}]))
        span.end()
        if self.response_ended is None:
            self.response_ended = time.monotonic()
        self._flush_waiting()

    def _flush_waiting(self) -> None:
        """The response has ended: calls dispatched before it learn their lead, and
        those that ended before it end now (at the time they really ended)."""
        ended = self.response_ended or time.monotonic()
        for call in self.waiting:
            call.span.set_attribute("toolplex.dispatch.lead_ms",
                                    max(0, _ms(ended - call.dispatched)))
            if call.ended_ns is not None:
                call.span.end(call.ended_ns)
        self.waiting = []

    def _run_started(self, event: Any) -> None:
        run = self.run
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.agent_name,
            "gen_ai.conversation.id": run.session.id, "toolplex.run.id": run.id,
            "toolplex.run.trigger": run.trigger}
        if self.model_name:
            attributes["gen_ai.request.model"] = self.model_name
        links = []
        if run.trigger == "job":
            jobs = [job for message in run.input if isinstance(message, dict)
                    for job in _JOB_ID.findall(str(message.get("content", "")))]
            attributes["toolplex.job.ids"] = jobs
            links = [Link(_STARTED_BY[job], {"toolplex.job.id": job})
                     for job in jobs if job in _STARTED_BY]
        if self.capture:
            attributes["gen_ai.input.messages"] = _json(run.input)
        self.span = self.tracer.start_span(f"invoke_agent {self.agent_name}", self.parent,
                                           SpanKind.INTERNAL, attributes, links)
        self.context = trace.set_span_in_context(self.span, self.parent)
        # Current in the run's task (this is called from it) until close(): the run's
        # own logs carry its trace id.
        self._token = otel_context.attach(self.context)

    def _run_ended(self, event: Any) -> None:
        if self.span is None:
            return
        usage = getattr(event, "usage", None) or {}
        self.span.set_attributes(_usage(usage))
        if event.type == "run.error":
            code = str(event.error.get("code", "_OTHER"))
            self.span.set_attribute("error.type", code)
            self.span.set_status(Status(StatusCode.ERROR, str(event.error.get("message", ""))))
        else:
            self.span.set_attribute("toolplex.run.outcome", event.outcome)

    def _start_call(self, call_id: str, name: str, args: Any = None) -> _CallSpan:
        run = self.run
        tool = run.agent.tools.get(name)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id, "gen_ai.tool.type": "function",
            "gen_ai.conversation.id": run.session.id, "toolplex.run.id": run.id}
        if tool is not None:
            if tool.description:
                attributes["gen_ai.tool.description"] = tool.description
            if tool.upstream:
                attributes["toolplex.upstream"] = tool.upstream
        breaker = run.session.breakers.get(name)
        attributes["toolplex.breaker.state"] = breaker.state.value if breaker else "closed"
        now = time.monotonic()
        early = self.response_ended is None
        attributes["toolplex.dispatch.early"] = early
        if self.capture and args is not None:
            attributes["gen_ai.tool.call.arguments"] = _json(args)
        span = self.tracer.start_span(f"execute_tool {name}", self.context,
                                      SpanKind.INTERNAL, attributes)
        traced = self.calls[call_id] = _CallSpan(span, now, early)
        if early:
            self.waiting.append(traced)
        return traced

    def _call(self, event: Any) -> _CallSpan:
        traced = self.calls.get(event.call_id)
        if traced is None:  # ended before its arguments were complete (cancelled, cut off)
            traced = self._start_call(event.call_id, self.names.get(event.call_id, ""))
        return traced

    def _end_call(self, call_id: str) -> None:
        traced = self.calls.pop(call_id)
        self.names.pop(call_id, None)
        traced.span.set_attribute("toolplex.attempts", traced.attempts)
        if traced.early and self.response_ended is None:
            traced.ended_ns = time.time_ns()  # ended at the response's end: see _CallSpan
        else:
            traced.span.end()

    def _call_began(self, event: Any) -> None:
        self.names[event.call_id] = event.name

    def _call_started(self, event: Any) -> None:
        self._start_call(event.call_id, self.names.get(event.call_id, ""), event.args)

    def _queued(self, event: Any) -> None:
        traced = self._call(event)
        traced.queued = time.monotonic()

    def _attempt(self, event: Any) -> None:
        traced = self._call(event)
        traced.attempts = max(traced.attempts, event.attempt)
        attributes = {"toolplex.attempt": event.attempt, "toolplex.timeout_ms": event.timeout_ms}
        if traced.queued is not None:  # every attempt's wait for its upstream slot, summed
            traced.queue_wait_ms += _ms(time.monotonic() - traced.queued)
            traced.span.set_attribute("toolplex.queue.wait_ms", traced.queue_wait_ms)
            traced.queued = None
        traced.span.add_event("toolplex.attempt", attributes)

    def _retrying(self, event: Any) -> None:
        self._call(event).span.add_event("toolplex.retry", {
            "toolplex.attempt": event.attempt, "toolplex.retry.delay_ms": event.delay_ms,
            "toolplex.retry.reason": event.reason,
            "error.type": str((event.error or {}).get("code", event.reason))})

    def _timed_out(self, event: Any) -> None:
        self._call(event).span.add_event("toolplex.timeout", {
            "toolplex.attempt": event.attempt, "toolplex.timeout_ms": event.timeout_ms,
            "toolplex.will_retry": event.will_retry})

    def _result(self, event: Any) -> None:
        traced = self._call(event)
        span = traced.span
        span.set_attribute("toolplex.partial", bool(event.partial))
        if event.cached:
            span.set_attribute("toolplex.cached", True)
        if self.capture:
            span.set_attribute("gen_ai.tool.call.result", _json(event.output))
        span.set_status(Status(StatusCode.OK))
        self._end_call(event.call_id)

    def _failed(self, event: Any) -> None:
        traced = self._call(event)
        code = str(event.error.get("code", "_OTHER"))
        traced.span.set_attribute("error.type", code)
        traced.span.set_status(Status(StatusCode.ERROR, str(event.error.get("message", ""))))
        self._end_call(event.call_id)

    def _cancelled(self, event: Any) -> None:
        traced = self._call(event)
        span = traced.span
        span.set_attribute("toolplex.cancel.reason", event.reason)
        if event.by_call_id:
            span.set_attribute("toolplex.cancel.by_call_id", event.by_call_id)
        span.set_attribute("toolplex.partial", event.partial_output is not None)
        self._end_call(event.call_id)

    def _job_pending(self, event: Any) -> None:
        traced = self._call(event)
        traced.span.set_attribute("toolplex.job.id", event.job_id)
        traced.span.set_attribute("toolplex.job.via", event.via)
        _STARTED_BY[event.job_id] = traced.span.get_span_context()
        while len(_STARTED_BY) > _STARTED_BY_MAX:
            _STARTED_BY.popitem(last=False)


_HANDLERS: dict[str, Any] = {
    "run.started": RunTrace._run_started,
    "run.finished": RunTrace._run_ended,
    "run.error": RunTrace._run_ended,
    "tool.call.start": RunTrace._call_began,
    "tool.call.end": RunTrace._call_started,
    "tool.queued": RunTrace._queued,
    "tool.exec.started": RunTrace._attempt,
    "tool.retrying": RunTrace._retrying,
    "tool.timeout": RunTrace._timed_out,
    "tool.result": RunTrace._result,
    "tool.error": RunTrace._failed,
    "tool.cancelled": RunTrace._cancelled,
    "job.pending": RunTrace._job_pending,
}
