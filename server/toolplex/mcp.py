"""MCP: mount any MCP server's tools beside ``@tool`` tools (the ``toolplex[mcp]`` extra).

``Agent(tools=[lookup, MCPServer.stdio("node", ["server.js"])])``: the server's tools
are listed at first use (again on ``notifications/tools/list_changed``) and run on the
one execution path every call takes, under the same declared policy as ``@tool``
(timeout, retries, breaker, upstream, decisive, mode). Each call passes its own
``progress_callback``: ``notifications/progress`` becomes that call's
``tool.output.delta`` (``job.progress`` for a job), and restarts its timeout. A server
answering with a task (the SEP-2663 tasks extension) turns the call into a ``poll``
job; one asking for input (``InputRequiredResult``) into a ``human`` job whose answer
calls the tool again.

The core never imports this module. The client side of the tasks extension is this
module's own (``tasks/get`` polling): the ``mcp`` SDK carries the result shape but no
client that keeps a task past the call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
import jsonschema  # type: ignore[import-untyped]
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from pydantic import ConfigDict

from .calls import current_call
from .exceptions import InvalidArguments, ToolError, UsageError
from .jobs import Job
from .policy import Backoff, Clock, Failure, classify
from .supervisor import Supervised, Supervisor
from .tools import (
    DEFAULT_BREAKER,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Kind,
    Tool,
    parse_arguments,
    tool,
)

if TYPE_CHECKING:
    from .runner import Agent

__all__ = ["MCPServer", "MCPTool"]

logger = logging.getLogger("toolplex.mcp")

TASKS = "io.modelcontextprotocol/tasks"
"""The tasks extension's identifier (SEP-2663), advertised in the client's capabilities."""

MAX_RECONNECT_DELAY = 60.0
"""Nominal seconds at most between two attempts to start a server that fails to."""

_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_TASK_FINAL = {"completed", "failed", "cancelled"}


class _TaskHandle(types.Result):
    """A ``tools/call`` answered with a task to poll (``resultType: "task"``)."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"


class _TaskState(types.Result):
    """What ``tasks/get`` answers: the task, with its ``result`` once completed."""

    model_config = ConfigDict(extra="allow")


try:  # the extension surface of mcp 2.x; 1.x mounts tools without tasks
    from mcp.client.extension import ResultClaim

    async def _unclaimed(value: _TaskHandle, ctx: Any) -> types.CallToolResult:
        raise RuntimeError("task results are returned to toolplex, never resolved in place")

    _CLAIMS: dict[str, Any] = {
        "extensions": {TASKS: {}},
        "result_claims": {TASKS: [ResultClaim(result_type="task", model=_TaskHandle,
                                             resolve=_unclaimed)]},
    }
except ImportError:  # pragma: no cover - mcp 1.x
    _CLAIMS = {}


_INPUT_REQUIRED: Any = getattr(types, "InputRequiredResult", ())
"""The 2026-07-28 ``InputRequiredResult`` (mcp 2.x; 1.x never returns one)."""


class Progress(dict[str, Any]):
    """A ``notifications/progress`` as a call's chunk: ``{progress, total?, message?}``."""


def _progress_chunk(progress: float, total: float | None, message: str | None) -> Progress:
    chunk = Progress(progress=progress)
    if total is not None:
        chunk["total"] = total
    if message:
        chunk["message"] = message
    return chunk


def _reduce(chunks: list[Any]) -> Any:
    """The call's result: its last non-progress chunk; with none (a timeout), the last
    progress it reported."""
    for chunk in reversed(chunks):
        if not isinstance(chunk, Progress):
            return chunk
    return {"progress": dict(chunks[-1])} if chunks else None


@dataclass(frozen=True, eq=False)
class MCPTool(Tool):
    """A tool of an MCP server: its ``inputSchema`` is given to the model as it is and
    validates the model's arguments (JSON Schema)."""

    remote: str = ""
    """The tool's name on its server."""
    _schema_validator: Any = field(default=None, repr=False)

    def validate(self, raw: str | dict[str, Any]) -> dict[str, Any]:
        """Parse the model's arguments and check them against the ``inputSchema``.

        Raises:
            InvalidArguments: Not JSON, not an object, or not matching the schema.
        """
        data = parse_arguments(self.name, raw)
        errors = sorted(self._schema_validator.iter_errors(data), key=lambda e: list(e.path))
        if errors:
            raise InvalidArguments(self.name, "; ".join(
                f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}"
                for e in errors))
        return dict(data)


@dataclass
class _Connection:
    """One open session, held by a task of the agent's supervised group until closed."""

    session: ClientSession | None = None
    closed: anyio.Event = field(default_factory=anyio.Event)
    ready: anyio.Event = field(default_factory=anyio.Event)
    """Set once the session is open, or opening it failed (:attr:`error`)."""
    error: Exception | None = None
    task: Supervised | None = None


Transport = Callable[[], AbstractAsyncContextManager[tuple[Any, Any]]]
"""Opens the (read, write) streams of one connection to the server."""


class MCPServer:
    """An MCP server whose tools join the agent's own. Make one with :meth:`stdio` or
    :meth:`http`.

    Args:
        transport: Opens a connection (``stdio`` and ``http`` build it).
        name: Names the server in logs and in its jobs (kept across restarts).
        prefix: Tools are named ``prefix__name`` (default: as the server names them).
        timeout, retries, breaker, upstream, decisive, mode, budget: The policy of every
            tool, as ``@tool`` declares it. The timeout is an idle timeout: progress
            restarts it.
        tool_options: Per tool (by its server name), the same declarations (and
            ``side_effects``), overriding the server's.
        connect_timeout: Real seconds (not scaled by the agent's clock) to start the
            server and finish the handshake.
        reconnect: The delays between attempts to start a server that failed to.

    Example::

        docs = MCPServer.stdio("node", ["server.js", "stdio"], env={"TOKEN": "..."})
        crm = MCPServer.http("https://crm.internal/mcp", headers={"Authorization": "..."},
                             prefix="crm", timeout=20, upstream="crm",
                             tool_options={"export_all": {"mode": "job"}})
        agent = Agent(tools=[lookup, docs, crm])
    """

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        prefix: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        breaker: int = DEFAULT_BREAKER,
        upstream: str | None = None,
        decisive: Callable[[Any], bool] | None = None,
        mode: Literal["inline", "job", "auto"] = "inline",
        budget: float | None = None,
        tool_options: Mapping[str, Mapping[str, Any]] | None = None,
        connect_timeout: float = 10.0,
        reconnect: Backoff | None = None,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self._transport = transport
        self._policy: dict[str, Any] = {
            "timeout": timeout, "retries": retries, "breaker": breaker, "upstream": upstream,
            "decisive": decisive, "mode": mode, "budget": budget}
        self._tool_options = {k: dict(v) for k, v in (tool_options or {}).items()}
        allowed = {*self._policy, "side_effects"}
        for tool_name, options in self._tool_options.items():
            unknown = set(options) - allowed
            if unknown:
                raise UsageError(f"MCP server {name}: tool_options[{tool_name!r}] has unknown "
                                 f"keys {sorted(unknown)} (allowed: {sorted(allowed)})")
        for options in (self._policy, *self._tool_options.values()):
            if options.get("mode", "inline") not in ("inline", "job", "auto"):
                raise UsageError(f"MCP server {name}: mode must be inline, job or auto")
            if options.get("mode") == "auto" and not (options.get("budget") or budget):
                raise UsageError(f"MCP server {name}: mode='auto' needs budget=<seconds>")
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect or Backoff()
        self._agent: Agent | None = None
        self._clock = Clock()
        self._conn: _Connection | None = None
        self._lock: anyio.Lock | None = None
        self._own: Supervisor | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._down: str | None = None
        """Why the last attempt to start the server failed (None: it is up, or untried)."""
        self._tools: list[MCPTool] | None = None
        self._stale = False
        self._rounds: dict[str, dict[str, Any]] = {}
        self.connects = 0
        """Sessions opened so far (a reconnect opens another)."""

    @property
    def resume_key(self) -> str:
        """The key this server's jobs are resumed by after a restart."""
        return f"mcp:{self.name}"

    @classmethod
    def stdio(cls, command: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
              cwd: str | None = None, errlog: TextIO | None = None,
              **options: Any) -> MCPServer:
        """A server run as a child process, speaking over its stdin and stdout.

        Args:
            command: The program (``node``, ``uvx``, ...).
            args: Its arguments.
            env: Variables added to a minimal default environment.
            cwd: Its working directory.
            errlog: Where its stderr goes (default: this process's stderr).
            options: As for :class:`MCPServer` (``prefix``, ``timeout``, ...).
        """
        params = StdioServerParameters(command=command, args=list(args),
                                       env=dict(env) if env else None, cwd=cwd)

        @asynccontextmanager
        async def transport() -> AsyncIterator[tuple[Any, Any]]:
            async with stdio_client(params, errlog=errlog or sys.stderr) as streams:
                yield streams[0], streams[1]

        options.setdefault("name", options.get("prefix") or os.path.basename(
            next((a for a in reversed(args) if "/" in a or "." in a), command)))
        return cls(transport, **options)

    @classmethod
    def http(cls, url: str, *, headers: Mapping[str, str] | None = None,
             **options: Any) -> MCPServer:
        """A server reached over streamable HTTP at ``url``.

        Args:
            url: The MCP endpoint (``https://host/mcp``).
            headers: Sent with every request (``Authorization``, ...).
            options: As for :class:`MCPServer` (``prefix``, ``timeout``, ...).
        """
        from mcp.client import streamable_http

        @asynccontextmanager
        async def transport() -> AsyncIterator[tuple[Any, Any]]:
            if hasattr(streamable_http, "streamable_http_client"):
                from mcp.shared._httpx_utils import create_mcp_http_client

                async with create_mcp_http_client(headers=dict(headers or {})) as client, \
                        streamable_http.streamable_http_client(url, http_client=client) as streams:
                    yield streams[0], streams[1]
            else:  # pragma: no cover - mcp 1.x
                async with streamable_http.streamablehttp_client(  # type: ignore[attr-defined]
                        url, headers=dict(headers or {})) as streams:
                    yield streams[0], streams[1]

        options.setdefault("name", options.get("prefix") or url.split("//")[-1].split("/")[0])
        return cls(transport, **options)

    # -- the tool provider -------------------------------------------------------------

    def bind(self, agent: Agent) -> None:
        """Attach to the agent whose clock and jobs the tools use."""
        self._agent = agent
        self._clock = agent.clock
        agent.jobs.resumers[self.resume_key] = self._resume
        agent.jobs.answerers[self.resume_key] = self._answer

    async def list_tools(self) -> list[MCPTool]:
        """The server's tools, listed at first use and again after ``list_changed``.

        Never raises: a server that cannot be reached is logged, and what was last
        listed (or nothing) is kept.
        """
        if self._tools is not None and not self._stale:
            return self._tools
        try:
            session = await self._session()
            listed: list[Any] = []
            cursor: str | None = None
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                listed.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
        except Exception as exc:
            if not isinstance(exc, ConnectionError):
                logger.warning("MCP server %s: listing its tools failed: %s", self.name, exc)
            return self._tools or []
        self._stale = False
        self._tools = [self._tool(item) for item in listed]
        return self._tools

    def lookup(self, name: str) -> Tool | None:
        """While the server is down: a tool for a name of its own that fails saying why."""
        if self._down is None:
            return None
        if self.prefix is not None and not name.startswith(f"{self.prefix}__"):
            return None
        if self._tools and not any(t.name == name for t in self._tools) and self.prefix is None:
            return None

        async def unavailable() -> Any:
            await self._session()  # raises while the server is down
            raise ToolError(f"the MCP server {self.name} has no tool {name!r}",
                            code="unknown_tool")

        return tool(name=name, description=f"{name} (its MCP server is down)", retries=0,
                    breaker=0)(unavailable)

    async def aclose(self) -> None:
        """Close the session (and stop the child process of a stdio server)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close(conn)

    # -- the session -------------------------------------------------------------------

    async def _session(self) -> ClientSession:
        """The open session, opened at first use and again after the server died; while
        starting it fails, tried again only after the reconnect delay."""
        conn = self._conn
        if conn is not None and conn.session is not None and not conn.closed.is_set():
            return conn.session
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.session is not None and not conn.closed.is_set():
                return conn.session
            now = self._clock.monotonic()
            if self._down is not None and now < self._retry_at:
                raise ConnectionError(
                    f"the MCP server {self.name} could not start ({self._down}); trying again "
                    f"in {self._retry_at - now:.1f} s")
            try:
                with anyio.fail_after(self.connect_timeout):
                    conn = await self._open()
            except Exception as exc:
                self._failures += 1
                self._down = _describe(exc)
                self._retry_at = self._clock.monotonic() + min(
                    self.reconnect.delay(self._failures, _NO_FAILURE), MAX_RECONNECT_DELAY)
                logger.warning("MCP server %s could not start: %s (next try in %.1f s)",
                               self.name, self._down, self._retry_at - self._clock.monotonic())
                raise ConnectionError(
                    f"the MCP server {self.name} could not start: {self._down}") from exc
            if self._failures or self.connects:
                logger.info("MCP server %s: connected again", self.name)
            self._failures, self._down = 0, None
            self._conn = conn
            self.connects += 1
            assert conn.session is not None
            return conn.session

    @property
    def _supervisor(self) -> Supervisor:
        """The group the connection's and the calls' tasks live in: the agent's."""
        if self._agent is not None:
            return self._agent.executor.supervisor
        if self._own is None:
            self._own = Supervisor()
        return self._own

    async def _open(self) -> _Connection:
        conn = _Connection()
        # Its own context: the session outlives the call (and the trace span) that opened it.
        conn.task = self._supervisor.spawn(
            functools.partial(self._hold, conn), name=f"MCP server {self.name}",
            context=contextvars.Context())
        try:
            await conn.ready.wait()
        except BaseException:
            await self._close(conn)
            raise
        if conn.error is not None:
            raise conn.error
        return conn

    async def _hold(self, conn: _Connection) -> None:
        """Hold one session open (its transport's and session's task groups live in this
        task) until the connection is closed."""
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(
                    read, write, message_handler=functools.partial(self._on_message, conn),
                    **_CLAIMS))
                await _negotiate(session)
                listening = await stack.enter_async_context(anyio.create_task_group())
                listening.start_soon(self._listen, session)
                conn.session = session
                conn.ready.set()
                await conn.closed.wait()
                listening.cancel_scope.cancel()
        except BaseException as exc:
            if not conn.ready.is_set():
                conn.error = (exc if isinstance(exc, Exception)
                              else ConnectionError(f"{type(exc).__name__}"))
                conn.ready.set()
            if not isinstance(exc, Exception):
                raise
            if conn.session is not None:
                logger.warning("MCP server %s: the connection ended: %s", self.name,
                               _describe(exc))
        finally:
            conn.closed.set()

    async def _close(self, conn: _Connection) -> None:
        conn.closed.set()
        task = conn.task
        if task is not None and not task.finished:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(5):
                    await task.wait()
                if not task.finished:
                    task.cancel()
                    with anyio.move_on_after(2):
                        await task.wait()

    def _drop(self, session: ClientSession) -> None:
        """The connection behind ``session`` failed: the next call opens another."""
        conn = self._conn
        if conn is not None and conn.session is session:
            self._conn = None
            conn.closed.set()

    async def _listen(self, session: ClientSession) -> None:
        """On a 2026-07-28 connection, ``list_changed`` comes on a ``subscriptions/listen``
        stream (earlier versions send it unasked: :meth:`_on_message`)."""
        try:
            from mcp.client.subscriptions import ListenNotSupportedError, listen
        except ImportError:  # pragma: no cover - mcp 1.x
            return
        try:
            async with listen(session, tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._stale = True
        except ListenNotSupportedError:
            return
        except Exception as exc:
            logger.info("MCP server %s: no tools/list_changed subscription: %s", self.name,
                        _describe(exc))

    async def _on_message(self, conn: _Connection, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self._stale = True

    # -- calls ---------------------------------------------------------------------------

    def _tool(self, item: Any) -> MCPTool:
        options = {**self._policy, **self._tool_options.get(item.name, {})}
        annotations = item.annotations
        read_only = bool(annotations is not None and annotations.read_only_hint)
        # [mcp] a tool is a write unless it says it only reads: early dispatch is for reads.
        side_effects = options.pop("side_effects", not read_only)
        schema = dict(item.input_schema or {"type": "object", "properties": {}})
        validator_cls = jsonschema.validators.validator_for(schema)
        name = f"{self.prefix}__{item.name}" if self.prefix else item.name
        return MCPTool(
            fn=functools.partial(self._run, item.name),
            name=name,
            description=item.description or getattr(item, "title", None) or item.name,
            parameters=schema,
            kind=Kind.STREAM,
            side_effects=side_effects,
            reduce=_reduce,
            wants_job=True,
            idle_timeout=True,
            remote=item.name,
            _schema_validator=validator_cls(schema),
            **options,
        )

    async def _run(self, remote: str, **arguments: Any) -> AsyncIterator[Any]:
        """A call's body: its progress as chunks, then its result."""
        job = arguments.pop("job") if isinstance(arguments.get("job"), Job) else None
        send, receive = anyio.create_memory_object_stream[Any](math.inf)
        ended: list[Any] = []
        failed: list[Exception] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            if job is not None:
                await job.progress(value, total, message)
            else:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    send.send_nowait(_progress_chunk(value, total, message))

        async def call() -> None:
            with send:
                try:
                    ended.append(await self._call(remote, arguments, progress))
                except Exception as exc:
                    failed.append(exc)

        # A task of the agent's group (the SDK awaits the response), not of this body: a
        # generator's yields must not cross a task group. It starts with this call's
        # context, so the call's trace span is current in it; cancelling it sends the
        # server `notifications/cancelled`.
        task = self._supervisor.spawn(call, name=f"MCP call {self._label(remote)}")
        try:
            with receive:
                async for chunk in receive:
                    yield chunk
        finally:
            if not task.finished:
                task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await task.wait()
            send.close()  # (a task cancelled before it began never closed it)
        if failed:
            raise failed[0]
        if not ended:
            raise ConnectionError(f"the call to the MCP server {self.name} was stopped")
        result = ended[0]
        if isinstance(result, _TaskHandle):
            result = await self._adopt_task(remote, arguments, result, job)
        elif isinstance(result, _INPUT_REQUIRED):
            result = self._adopt_input(remote, arguments, result, job)
        else:
            result = _output(result, self._label(remote))
        yield result

    async def _call(self, remote: str, arguments: dict[str, Any],
                    progress: Callable[..., Any] | None, **extra: Any) -> Any:
        """``tools/call``, its failures classified: transport failures and timeouts are
        transient, invalid params (-32602) permanent."""
        session = await self._session()
        try:
            return await session.call_tool(
                remote, arguments, progress_callback=progress,
                **_call_options(session), **extra)
        except MCPError as exc:
            raise self._failure(session, remote, exc.error.code, exc.error.message) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                OSError) as exc:
            self._drop(session)
            raise ConnectionError(f"the MCP server {self.name} went away: "
                                  f"{_describe(exc)}") from exc

    def _failure(self, session: ClientSession, remote: str, code: int,
                 message: str) -> Exception:
        label = self._label(remote)
        if code == _CONNECTION_CLOSED:
            self._drop(session)
            return ConnectionError(f"the MCP server {self.name} went away: {message}")
        if code == _REQUEST_TIMEOUT:
            return TimeoutError(f"{label}: {message}")
        if code == _INVALID_PARAMS:
            return ToolError(f"{label}: invalid params: {message}", code="invalid_args")
        return ToolError(f"{label}: {message} (MCP error {code})")

    def _label(self, remote: str) -> str:
        return f"{self.prefix}__{remote}" if self.prefix else remote

    # -- tasks: a call answered with a task becomes a `poll` job -------------------------

    async def _adopt_task(self, remote: str, arguments: dict[str, Any], handle: _TaskHandle,
                          job: Job | None) -> Any:
        extra = handle.model_extra or {}
        state = {"resume": self.resume_key, "tool": remote, "arguments": arguments,
                 "task_id": str(extra.get("taskId")),
                 "poll_ms": extra.get("pollIntervalMs")}
        running = current_call.get(None)
        if job is not None or running is None:
            # Already a job (mode="job", or "auto" past its budget): poll it to its end here.
            return await self._poll_to_end(state, job)
        assert self._agent is not None
        call, session, emit = running
        output = self._agent.jobs.adopt(call, session, emit, via="poll", state=state,
                                        message=extra.get("statusMessage"))
        handle_ = self._agent.jobs.handle(output["job_id"])
        assert handle_ is not None
        self._agent.executor.supervisor.spawn(functools.partial(self._resume, handle_, state))
        return output

    async def _resume(self, job: Job, state: dict[str, Any]) -> None:
        """Poll an adopted task until it ends, and end its job the same way (after a
        restart too: :meth:`~toolplex.jobs.JobManager.recover` calls this)."""
        assert self._agent is not None
        jobs = self._agent.jobs
        try:
            output = await self._poll_to_end(state, job)
        except Exception as exc:
            failure = classify(exc)
            await jobs.complete_now(job.id, "failed", error=failure.to_error(), wait=False)
        else:
            await jobs.complete_now(job.id, "succeeded", output=output, wait=False)

    async def _poll_to_end(self, state: dict[str, Any], job: Job | None) -> Any:
        """``tasks/get`` at the server's ``pollIntervalMs`` until the task ends: its status
        message as the job's progress, its result (or failure) as the job's end."""
        task_id = state["task_id"]
        interval = (state.get("poll_ms") or 1000) / 1000
        label = self._label(state["tool"])
        polls, said, failures = 0, None, 0
        while True:
            if self._agent is not None and job is not None:
                jobs = self._agent.jobs
                row = await jobs.ask(jobs.store.job, job.id)  # (a shared store: off the loop)
                if row is not None and row["status"] not in ("pending", "running"):
                    return None  # ended elsewhere (expired, cancelled): stop polling
            try:
                session = await self._session()
                found = await session.send_request(
                    types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id)),
                    _TaskState)
            except MCPError as exc:
                if exc.error.code in (_INVALID_PARAMS, _METHOD_NOT_FOUND):
                    raise ToolError(f"{label}: task {task_id}: {exc.error.message}") from exc
                failures += 1
            except (ConnectionError, OSError, anyio.ClosedResourceError,
                    anyio.BrokenResourceError) as exc:
                failures += 1
                logger.info("MCP server %s: polling task %s: %s", self.name, task_id,
                            _describe(exc))
            else:
                failures = 0
                task = found.model_extra or {}
                polls += 1
                interval = (task.get("pollIntervalMs") or interval * 1000) / 1000
                status = task.get("status")
                message = task.get("statusMessage")
                if message and message != said and job is not None:
                    said = message
                    await job.progress(polls, None, message)
                if status == "completed":
                    result = types.CallToolResult.model_validate(task.get("result") or {
                        "content": []})
                    return _output(result, label)
                if status in ("failed", "cancelled"):
                    raise ToolError(f"{label}: task {task_id} {status}: "
                                    f"{message or task.get('error') or 'no reason given'}",
                                    code="tool_error")
            delay = interval if not failures else min(
                self._clock.real(self.reconnect.delay(failures, _NO_FAILURE)), 30.0)
            await anyio.sleep(delay)

    # -- input required: a `human` job whose answer calls the tool again ----------------

    def _adopt_input(self, remote: str, arguments: dict[str, Any],
                     result: Any, job: Job | None) -> Any:
        requests = {k: v.model_dump(by_alias=True, mode="json", exclude_none=True)
                    for k, v in (result.input_requests or {}).items()}
        question = "; ".join(
            str(r.get("params", {}).get("message") or r.get("method")) for r in requests.values()
        ) or f"{self._label(remote)} needs input"
        running = current_call.get(None)
        if job is not None or running is None:
            raise ToolError(f"{self._label(remote)} asked for input ({question}), which a "
                            "background job cannot give", code="tool_error")
        assert self._agent is not None
        state = {"resume": self.resume_key, "tool": remote, "arguments": arguments,
                 "input_requests": requests, "request_state": result.request_state}
        call, session, emit = running
        output = self._agent.jobs.adopt(call, session, emit, via="human", state=state,
                                        message=question)
        return {**output, "input_requests": requests}

    async def _answer(self, job: Job, state: dict[str, Any], answer: Any) -> None:
        """A person answered: call the tool again with ``input_responses`` and the echoed
        ``request_state``; its result ends the job (or it asks again)."""
        assert self._agent is not None
        state = self._rounds.get(job.id, state)
        requests = state.get("input_requests") or {}
        if isinstance(answer, dict) and requests and set(answer) == set(requests):
            responses = {k: v if isinstance(v, dict) and "action" in v
                         else {"action": "accept", "content": v} for k, v in answer.items()}
        else:
            responses = {k: {"action": "accept", "content": answer} for k in requests}
        result = await self._call(state["tool"], state["arguments"], None,
                                  input_responses=responses,
                                  request_state=state.get("request_state"))
        jobs = self._agent.jobs
        if isinstance(result, _INPUT_REQUIRED):
            again = {**state, "request_state": result.request_state, "input_requests": {
                k: v.model_dump(by_alias=True, mode="json", exclude_none=True)
                for k, v in (result.input_requests or {}).items()}}
            self._rounds[job.id] = again
            await job.progress(len(self._rounds), None, "; ".join(
                str(r.get("params", {}).get("message")) for r in again["input_requests"].values()))
            return
        self._rounds.pop(job.id, None)
        if isinstance(result, _TaskHandle):
            extra = result.model_extra or {}
            output = await self._poll_to_end({**state, "task_id": str(extra.get("taskId")),
                                              "poll_ms": extra.get("pollIntervalMs")}, job)
        else:
            try:
                output = _output(result, self._label(state["tool"]))
            except ToolError as exc:
                await jobs.complete_now(job.id, "failed", error=classify(exc).to_error(),
                                        wait=False)
                return
        await jobs.complete_now(job.id, "succeeded", output=output, wait=False)


_NO_FAILURE = Failure(True, "error", "upstream", "")


async def _negotiate(session: ClientSession) -> None:
    """The modern handshake (``server/discover``, where tasks and input-required live)
    when the server has it, else ``initialize``."""
    if hasattr(session, "discover"):
        try:
            await session.discover()
            return
        except MCPError:
            pass
    await session.initialize()


@functools.cache
def _accepts_claims() -> bool:
    params = inspect.signature(ClientSession.call_tool).parameters
    return "allow_claimed" in params and "allow_input_required" in params


def _call_options(session: ClientSession) -> dict[str, Any]:
    return {"allow_input_required": True, "allow_claimed": True} if _accepts_claims() else {}


def _output(result: Any, label: str) -> Any:
    """A ``CallToolResult`` as ``tool.result`` output: ``structuredContent``, else the
    content blocks (text joined; images and resources as typed objects).

    Raises:
        ToolError: ``isError: true`` (code ``tool_error``: shown to the model, not retried).
    """
    blocks = [b.model_dump(by_alias=True, mode="json", exclude_none=True)
              for b in (result.content or [])]
    text = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    if result.is_error:
        raise ToolError(text or f"{label} reported an error", code="tool_error")
    if result.structured_content is not None:
        return result.structured_content
    if all(b.get("type") == "text" for b in blocks):
        return text
    return blocks


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
