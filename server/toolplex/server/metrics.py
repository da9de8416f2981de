"""Prometheus metrics, fed by observing every session's log and every HTTP request.

Durations are histograms: their buckets add up across processes (``sum by (le)``), so
a dashboard can take the p99 of a whole deployment, which per-process quantiles cannot
give. The ``*_created`` series are left out of the exposition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..events import BaseEvent

_CALL_OUTCOMES = {"tool.result": "result", "tool.error": "error", "tool.cancelled": "cancelled"}
_FIRST_OUTPUT = frozenset({"text.delta", "tool.call.start", "reasoning.delta"})
"""The events that show the model's first token of a response reached the run."""
_DELTAS = frozenset({"tool.output.delta", "tool.call.delta"})
"""The most frequent events, which only count: no duration starts or ends at one."""

_TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _WithoutCreated:
    """A registry's metrics minus their ``*_created`` samples (a restart's timestamp per
    series, which Prometheus does not need and aggregation across processes cannot use)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self.registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class Metrics:
    """The server's metrics, in a registry of its own (several apps per process are fine)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("toolplex_events", "Events appended to session logs", ["type"],
                              registry=r)
        self.runs = Counter("toolplex_runs", "Runs ended, by outcome", ["outcome"], registry=r)
        self.calls = Counter("toolplex_tool_calls", "Tool calls ended, by outcome and tool",
                             ["outcome", "tool"], registry=r)
        self.retries = Counter("toolplex_tool_retries", "Tool retries", registry=r)
        self.timeouts = Counter("toolplex_tool_timeouts", "Tool attempts that timed out",
                                registry=r)
        self.circuits = Counter("toolplex_circuits_opened", "Circuits opened", ["tool"],
                                registry=r)
        self.readers = Gauge("toolplex_readers", "Connected readers", ["transport"], registry=r)
        self.sessions = Gauge("toolplex_sessions", "Live sessions", registry=r)
        self.reader_drops = Counter(
            "toolplex_reader_drops", "Slow-reader measures", ["kind"], registry=r)
        self.tool_duration = Histogram(
            "toolplex_tool_duration_seconds",
            "Tool calls from their arguments' end to their terminal event, by tool and outcome",
            ["tool", "outcome"], buckets=_TOOL_BUCKETS, registry=r)
        self.run_duration = Histogram(
            "toolplex_run_duration_seconds", "Runs from run.started to their terminal event",
            buckets=_RUN_BUCKETS, registry=r)
        self.time_to_first_token = Histogram(
            "toolplex_model_time_to_first_token_seconds",
            "From a step's start (the model request) to the first text or tool call it streams",
            buckets=_TTFT_BUCKETS, registry=r)
        self.http = Histogram(
            "toolplex_http_request_duration_seconds",
            "HTTP requests by method, route template and status (streams: until they end)",
            ["method", "route", "status"], buckets=_HTTP_BUCKETS, registry=r)
        self._calls: dict[str, tuple[str, float]] = {}
        self._runs: dict[str, float] = {}
        self._steps: dict[str, float] = {}
        self._by_type: dict[str, int] = {}
        """Events appended since the last render, by type (added to ``events`` then)."""

    def observe(self, event: BaseEvent) -> None:
        """Count one appended event (called as it is appended: now is when it happened)."""
        kind = event.type
        # A plain count, not the Counter's locked increment: this runs for every event,
        # and the exposition adds the counts up when it is rendered.
        self._by_type[kind] = self._by_type.get(kind, 0) + 1
        if kind in _DELTAS:
            return
        call_id = getattr(event, "call_id", None)
        if kind in _FIRST_OUTPUT and event.run_id in self._steps:
            self.time_to_first_token.observe(time.monotonic() - self._steps.pop(event.run_id))
        if kind == "tool.call.start" and call_id:
            self._calls[call_id] = (getattr(event, "name", ""), time.monotonic())
        elif kind == "tool.call.end" and call_id in self._calls:
            # The tool's own time starts when its arguments are complete (dispatch).
            self._calls[call_id] = (self._calls[call_id][0], time.monotonic())
        elif kind in _CALL_OUTCOMES and call_id:
            outcome = _CALL_OUTCOMES[kind]
            name, started = self._calls.pop(call_id, ("", time.monotonic()))
            self.calls.labels(outcome, name).inc()
            self.tool_duration.labels(name, outcome).observe(time.monotonic() - started)
        elif kind == "step.started" and event.run_id:
            self._steps[event.run_id] = time.monotonic()
        elif kind == "tool.retrying":
            self.retries.inc()
        elif kind == "tool.timeout":
            self.timeouts.inc()
        elif kind == "tool.circuit_open":
            self.circuits.labels(getattr(event, "tool", "")).inc()
        elif kind == "run.started" and event.run_id:
            self._runs[event.run_id] = time.monotonic()
        elif kind in ("run.finished", "run.error"):
            outcome = getattr(event, "outcome", "success") if kind == "run.finished" else "error"
            self.runs.labels(outcome).inc()
            self._steps.pop(event.run_id or "", None)
            began = self._runs.pop(event.run_id or "", -1.0)
            if began >= 0:
                self.run_duration.observe(time.monotonic() - began)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        counts, self._by_type = self._by_type, {}
        for kind, count in counts.items():
            self.events.labels(kind).inc(count)
        return generate_latest(_WithoutCreated(self.registry))


class HTTPMetrics:
    """ASGI middleware timing each HTTP request into ``toolplex_http_request_duration_seconds``.

    The route label is the route's template (``/v1/sessions/{session_id}/runs``), never
    the raw path: one series per route, whatever the ids.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [500]
        root = scope.get("root_path", "")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.http.labels(scope["method"], _template(scope, root),
                                     str(status[0])).observe(time.monotonic() - started)


def _template(scope: Scope, root: str) -> str:
    """The route that served ``scope``: a mount's prefix, then the route's own template."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    mounted = scope.get("root_path", "")[len(root):]
    return f"{mounted}{path}" if mounted and not path.startswith(mounted) else path

