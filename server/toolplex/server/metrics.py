"""Prometheus metrics, fed by observing every session's log."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from ..calls import Executor
from ..events import BaseEvent

_CALL_OUTCOMES = {"tool.result": "result", "tool.error": "error", "tool.cancelled": "cancelled"}


class Metrics:
    """The server's counters, in a registry of its own (several apps per process are fine)."""

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
        self.latency = Gauge("toolplex_tool_latency_seconds",
                             "Recent successful inline call duration quantiles per tool",
                             ["tool", "quantile"], registry=r)
        self._names: dict[str, str] = {}
        self._by_type: dict[str, Any] = {}

    def observe(self, event: BaseEvent) -> None:
        """Count one appended event."""
        kind = event.type
        counter = self._by_type.get(kind)
        if counter is None:
            counter = self._by_type[kind] = self.events.labels(kind)
        counter.inc()
        call_id = getattr(event, "call_id", None)
        if kind == "tool.call.start" and call_id:
            self._names[call_id] = getattr(event, "name", "")
        elif kind in _CALL_OUTCOMES and call_id:
            self.calls.labels(_CALL_OUTCOMES[kind], self._names.pop(call_id, "")).inc()
        elif kind == "tool.retrying":
            self.retries.inc()
        elif kind == "tool.timeout":
            self.timeouts.inc()
        elif kind == "tool.circuit_open":
            self.circuits.labels(getattr(event, "tool", "")).inc()
        elif kind == "run.finished":
            self.runs.labels(getattr(event, "outcome", "success")).inc()
        elif kind == "run.error":
            self.runs.labels("error").inc()

    def render(self, executor: Executor | None = None) -> bytes:
        """The Prometheus text exposition (latency quantiles read from ``executor``)."""
        if executor is not None:
            for name in list(executor.latency):
                for quantile, seconds in executor.quantiles(name).items():
                    self.latency.labels(name, quantile).set(seconds)
        return generate_latest(self.registry)
