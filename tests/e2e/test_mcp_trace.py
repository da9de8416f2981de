"""An MCP server's span joins the call's trace: the call span is current in the tool body,
and the SDK carries it to the server in ``_meta`` (traceparent, SEP-414)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer as SDKServer
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from toolplex import Agent
from toolplex.mcp import MCPServer
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect

SEEN: dict[str, Any] = {}
sdk = SDKServer("trace-test")


@sdk.tool()
def where() -> str:
    """Records the span current while the server handles the call."""
    SEEN["server"] = trace.get_current_span().get_span_context()
    return "here"


@pytest.fixture
def mcp_url() -> Iterator[str]:
    """The SDK's server over streamable HTTP on 127.0.0.1, in this process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(sdk.streamable_http_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the MCP server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def test_the_mcp_servers_span_is_in_the_calls_trace(
        spans: InMemorySpanExporter, mcp_url: str) -> None:
    model = ScriptedModel([Step(calls=[Call("t__where", {})]), Step(text="found")])
    events = await collect(Agent(tools=[MCPServer.http(mcp_url, prefix="t")], model=model), "go")
    check_protocol(events)
    [call_span] = [s for s in spans.get_finished_spans() if s.name.startswith("execute_tool")]
    assert SEEN["server"].trace_id == call_span.context.trace_id, (
        "the server handled the call inside the run's trace")
    assert SEEN["server"].span_id != call_span.context.span_id, "under its own span"
