"""An MCP server for the tests, built on the ``mcp`` SDK's own server (MCPServer, was FastMCP).

Run as ``python server.py http [PORT]`` (streamable HTTP at ``/mcp`` on 127.0.0.1; the
port is printed first) or
``python server.py stdio``. What the tests need and the reference server has not:

- ``slow``: progress with a message per step; ``hang``: never ends, and records its
  cancellation (``GET /events`` lists what the server saw, ``$MCP_TEST_EVENTS`` too:
  on stdio, ``notifications/cancelled``; on streamable HTTP at 2026-07-28 the client
  closes the request's stream instead);
- ``stubborn``: reports progress, and when cancelled reports progress three times more
  before it ends (each recorded as ``late progress``);
- ``fail`` (``isError``), ``strict`` (-32602 for a bad ``n``), ``crash`` (the process
  exits mid-call), ``pid`` (which process answered);
- ``export``: answered with a task (the SEP-2663 tasks extension: ``resultType: "task"``,
  then ``tasks/get``), which ends when ``POST /release`` says so;
- ``ask``: answered with an ``InputRequiredResult`` until called again with the answer.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any

import anyio
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CancelledNotificationParams, RequestParams
from pydantic import ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse


class _Events(list[dict[str, Any]]):
    """What the server saw; also appended to the file $MCP_TEST_EVENTS (JSON lines)."""

    def append(self, event: dict[str, Any]) -> None:
        super().append(event)
        if os.environ.get("MCP_TEST_EVENTS"):
            with open(os.environ["MCP_TEST_EVENTS"], "a") as out:
                out.write(json.dumps(event) + "\n")


EVENTS = _Events()
GATES: dict[str, anyio.Event] = {}
TASKS: dict[str, dict[str, Any]] = {}
RELEASED: dict[str, Any] = {}


class _GetTask(RequestParams):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    taskId: str


def _stamp() -> str:
    return "2026-12-01T00:00:00Z"


class Tasks(Extension):
    """The server half of the tasks extension: ``export`` answers with a task."""

    identifier = "io.modelcontextprotocol/tasks"

    def methods(self) -> list[MethodBinding]:
        async def get(ctx: Any, params: _GetTask) -> dict[str, Any]:
            task = TASKS.get(params.taskId)
            if task is None:
                raise MCPError(INVALID_PARAMS, f"no task {params.taskId}")
            task["polls"] += 1
            EVENTS.append({"event": "poll", "task": params.taskId, "polls": task["polls"]})
            out = {k: v for k, v in task.items() if k != "polls"}
            if params.taskId in RELEASED:
                out.update(status="completed", statusMessage="done",
                           result={"content": [{"type": "text", "text": "exported"}],
                                   "structuredContent": RELEASED[params.taskId]})
            else:
                out["statusMessage"] = f"exporting (poll {task['polls']})"
            return out

        return [MethodBinding("tasks/get", _GetTask, get)]

    async def intercept_tool_call(self, params: Any, ctx: Any, call_next: Any) -> Any:
        if params.name == "export":
            task_id = f"t-{uuid.uuid4().hex[:8]}"
            TASKS[task_id] = {"taskId": task_id, "status": "working", "statusMessage": "queued",
                              "pollIntervalMs": 20, "createdAt": _stamp(),
                              "lastUpdatedAt": _stamp(), "ttlMs": None, "polls": 0}
            EVENTS.append({"event": "task", "task": task_id,
                           "arguments": params.arguments or {}})
            return {"resultType": "task", **{k: v for k, v in TASKS[task_id].items()
                                             if k != "polls"}}
        if params.name == "ask" and not params.request_state:
            return {"resultType": "input_required", "requestState": "asked-once",
                    "inputRequests": {"city": {"method": "elicitation/create", "params": {
                        "message": "Which city?", "requestedSchema": {
                            "type": "object", "properties": {"name": {"type": "string"}}}}}}}
        if params.name == "strict" and not isinstance((params.arguments or {}).get("n"), int):
            raise MCPError(INVALID_PARAMS, "n must be an integer")
        return await call_next(ctx)


server = MCPServer("toolplex-test", extensions=[Tasks()])


@server.tool()
async def slow(steps: int, delay: float, ctx: Context) -> str:
    """Report progress `steps` times, `delay` seconds apart."""
    for i in range(steps):
        await anyio.sleep(delay)
        await ctx.report_progress(i + 1, steps, f"step {i + 1} of {steps}")
    return f"slow done after {steps} steps"


@server.tool()
async def gated(key: str, ctx: Context) -> str:
    """Report progress, then wait until `POST /open {"key": key}`."""
    gate = GATES.setdefault(key, anyio.Event())
    await ctx.report_progress(1, 2, f"waiting for {key}")
    await gate.wait()
    await ctx.report_progress(2, 2, "opened")
    return f"{key} opened"


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool `grown` and say the tool list changed."""
    server.add_tool(lambda: "grown here", name="grown", description="Added at run time.")
    await ctx.notify_tools_changed()
    return "grew"


@server.tool()
async def hang(label: str, ctx: Context) -> str:
    """Never return; record the cancellation."""
    EVENTS.append({"event": "started", "label": label, "request": str(ctx.request_id)})
    try:
        await anyio.sleep_forever()
    finally:
        EVENTS.append({"event": "cancelled", "label": label})
    return "never"


@server.tool()
async def stubborn(ctx: Context) -> str:
    """Report progress, wait; when cancelled, report progress three times more."""
    EVENTS.append({"event": "started", "label": "stubborn", "request": str(ctx.request_id)})
    await ctx.report_progress(1, 10, "working")
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            for i in range(3):
                await ctx.report_progress(2 + i, 10, "still working")
                EVENTS.append({"event": "late progress", "label": "stubborn"})
    return "never"


@server.tool()
def fail(reason: str) -> str:
    """Fail with isError (the SDK's ToolError keeps the message)."""
    raise ToolError(reason)


@server.tool()
def strict(n: Any) -> int:
    """Answer -32602 unless n is an integer."""
    return int(n) * 2


@server.tool()
def crash() -> str:
    """Exit the process mid-call."""
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def export(table: str) -> str:
    """Export a table (answered with a task)."""
    return "never called: the tasks extension answers"


@server.tool()
def ask(ctx: Context) -> str:
    """Ask for a city, then answer with it."""
    return f"weather in {ctx.input_responses['city'].content['name']}: sunny"  # type: ignore[index,union-attr]


async def _on_cancelled(ctx: Any, params: CancelledNotificationParams) -> None:
    EVENTS.append({"event": "notifications/cancelled", "request": str(params.request_id)})


server._lowlevel_server.add_notification_handler(
    "notifications/cancelled", CancelledNotificationParams, _on_cancelled)


@server.custom_route("/events", methods=["GET"])
async def events(request: Request) -> JSONResponse:
    return JSONResponse(EVENTS)


@server.custom_route("/open", methods=["POST"])
async def open_gate(request: Request) -> JSONResponse:
    body = await request.json()
    GATES.setdefault(body["key"], anyio.Event()).set()
    return JSONResponse({"ok": True})


@server.custom_route("/release", methods=["POST"])
async def release(request: Request) -> JSONResponse:
    body = await request.json()
    RELEASED[body["task"]] = body["output"]
    return JSONResponse({"ok": True})


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        import socket

        import uvicorn

        # Bound here, port 0 unless given: the port is the first line on stdout, so no
        # other process can take it between choosing and binding.
        sock = socket.socket()
        sock.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
        sys.stdout.write(f"{sock.getsockname()[1]}\n")
        sys.stdout.flush()
        config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
