from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from toolplex import Clock


@pytest.fixture
def fast() -> Clock:
    """A clock 1000x faster: 10 s timeouts take 10 ms, the 1/2/4 s backoff 1/2/4 ms."""
    return Clock(scale=0.001)


def _reset_tracer_provider() -> None:
    # What opentelemetry's own test utilities do between tests: the global provider can
    # otherwise be set once per process, and every later test would be traced.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A TracerProvider set for the test, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    _reset_tracer_provider()
