"""One run: the model's stream and every tool call's stream merged into one channel.

A call starts the moment its arguments are complete in the model's stream,
read from the stream's structure (the next call begins, or the finish reason
arrives), never from "the JSON happens to parse". Side-effecting tools wait for
a clean end of the response. A decisive chunk cancels its siblings. The next
model request carries one tool message per call, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import anyio
import sniffio
from anyio.abc import TaskGroup

from . import dependent
from .calls import Executor, Outcome, PredicateFailed, ToolCall
from .events import (
    BaseEvent,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    RunError,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolShortCircuit,
    error_dict,
)
from .exceptions import (
    EventTooLarge,
    InvalidArguments,
    ModelError,
    ModelTimeout,
    UnserializableOutput,
    UsageError,
)
from .jobs import JobManager
from .limits import ThreadPool, Upstream, UpstreamLimit
from .model import (
    CallArgs,
    CallBegin,
    CallEnd,
    CallFields,
    Finish,
    Model,
    ReasoningChunk,
    TextChunk,
    Usage,
)
from .policy import Backoff, Clock
from .session import Session, new_id
from .supervisor import Supervisor
from .tools import Tool

if TYPE_CHECKING:
    from .telemetry import RunTrace

logger = logging.getLogger("toolplex.runner")

Trigger = Literal["user", "job", "resume"]


@runtime_checkable
class ToolProvider(Protocol):
    """A source of tools listed lazily, such as an MCP server
    (:class:`toolplex.mcp.MCPServer`); ``Agent(tools=[...])`` takes one beside ``@tool``s.

    The agent asks for :meth:`list_tools` before each model step (a provider answers
    from its cache until its tools change) and :meth:`lookup` for a name no listed tool
    has; :meth:`aclose` runs at ``agent.aclose()``.
    """

    def bind(self, agent: Agent) -> None:
        """Attach to the agent whose clock, jobs and executor the tools use."""

    async def list_tools(self) -> Sequence[Tool]:
        """The tools as of now. Never raises: a provider that is down logs and answers
        what it last knew (or nothing)."""

    def lookup(self, name: str) -> Tool | None:
        """A tool for a name no listing has, e.g. one failing with why the provider is
        down; None when the name is not this provider's."""

    async def aclose(self) -> None:
        """Release connections and processes."""



@dataclass(frozen=True, slots=True)
class Limits:
    """Run-level guards. Each ends the run or refuses a call with a typed error.

    Example::

        Agent(tools=[...], limits=Limits(max_steps=8, run_deadline=120))
    """

    max_steps: int = 20
    """Model calls per run (the loop guard): ``run.error`` code ``max_steps``."""
    max_calls_per_step: int = 16
    """Calls beyond it get ``tool.error`` code ``limit_exceeded``."""
    max_concurrent_calls: int = 64
    """Running calls per session beyond it get ``limit_exceeded``."""
    run_deadline: float | None = None
    """Nominal seconds for a whole run: ``run.error`` code ``deadline_exceeded``."""
    max_history_messages: int | None = 200
    """The newest messages of the session's history each model request carries (None: all),
    so a long conversation's requests stop growing; a tool message is never sent without
    the call it answers (the window widens back to it). The session keeps the whole
    history (snapshots, restarts)."""
    max_result_chars: int = 100_000
    """A tool message longer than this reaches the model cut to this length, with a note
    saying so. Clients still receive every chunk and the whole ``tool.result``."""


class _RunFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


class Agent:
    """Tools, a model and the policy to run them: the library's entry point.

    Args:
        tools: The tools the model may call: ``@tool`` functions, and tool providers
            (:class:`toolplex.mcp.MCPServer`) whose tools are listed at first use.
        model: Default: :class:`~toolplex.ScriptedModel` (no key, no network).
        instructions: A system message put before the history on every step.
        limits: Run-level guards.
        clock: Scales every timeout and backoff wait (tests use ``Clock(scale=0.001)``).
        timeout_cap: No tool's timeout may exceed this (seconds, default 30).
        upstreams: Rate/concurrency limits by upstream name.
        threads: Worker threads sync tools may occupy (hung ones included).
        cancel_grace: Real seconds a cancelled tool gets before it is abandoned.
        backoff: The retry delay schedule (1, 2, 4 s).
        jobs: Where long-running tools' jobs live (default: in memory).
        name: The agent's name in traces (``invoke_agent {name}``).
        dependent_calls: Let the model chain calls in one response: an argument written
            ``{"$from": <an earlier call's position or id>, "path": "contact.email"}``
            waits for that call and receives the value there (the system prompt says how).
        prompts: Example messages a chat UI may offer (the demo page's suggestion
            chips, from ``GET /v1/agent``); none: it offers none.

    Example::

        agent = Agent(tools=[lookup, search])
        async for event in agent.run("enrich acme.com"):
            print(event.to_dict())
    """

    def __init__(
        self,
        tools: Iterable[Tool | ToolProvider] = (),
        model: Model | None = None,
        *,
        instructions: str | None = None,
        limits: Limits | None = None,
        clock: Clock | None = None,
        timeout_cap: float = 30.0,
        upstreams: Mapping[str, UpstreamLimit] | None = None,
        threads: int = 16,
        cancel_grace: float = 0.5,
        backoff: Backoff | None = None,
        jobs: JobManager | None = None,
        name: str = "toolplex",
        dependent_calls: bool = False,
        prompts: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.prompts: tuple[str, ...] = tuple(prompts)
        self.tools: dict[str, Tool] = {}
        self.providers: list[ToolProvider] = []
        """Sources of tools listed lazily (MCP servers), asked before each step."""
        self._provided: dict[str, Tool] = {}
        self._specs: tuple[tuple[Tool, ...], list[dict[str, Any]]] = ((), [])
        """The specs of the tools last visible (most steps see the same tools)."""
        self._shadowed: set[str] = set()
        for item in tools:
            if not isinstance(item, Tool) and isinstance(item, ToolProvider):
                self.providers.append(item)
                continue
            if not isinstance(item, Tool):
                raise UsageError(f"{item!r} is not a tool: decorate it with @tool")
            if item.name in self.tools:
                raise UsageError(f"two tools are named {item.name!r}")
            self.tools[item.name] = item
        if model is None:
            from .scripted import ScriptedModel

            model = ScriptedModel()
        self.model = model
        self.instructions = instructions
        self.dependent_calls = dependent_calls
        self.limits = limits or Limits()
        self.clock = clock or Clock()
        self.executor = Executor(
            clock=self.clock,
            timeout_cap=timeout_cap,
            backoff=backoff or Backoff(),
            pool=ThreadPool(threads),
            upstreams={name: Upstream(name, lim) for name, lim in (upstreams or {}).items()},
            supervisor=Supervisor(cancel_grace),
        )
        self.run_end_hooks: list[Callable[[Run], None]] = []
        """Called with each run as it ends (the job manager delivers what waited)."""
        self.jobs = jobs or JobManager()
        self.jobs.bind(self.tools, self.executor, self._start_job_turn)
        self.run_end_hooks.append(lambda run: self.jobs.pump(run.session))
        for provider in self.providers:
            provider.bind(self)

    def session(self, session_id: str | None = None) -> Session:
        """A new session (history, log, breakers) for a series of runs."""
        return Session(id=session_id) if session_id else Session()

    def tool_specs(self, session: Session, *,
                   jobs_open: bool | None = None) -> list[dict[str, Any]]:
        """The tools the model sees in this session: open circuits are hidden, and
        ``check_job`` is offered while a job of the session is pending (``jobs_open``
        when the caller has asked :meth:`JobManager.any_open` already)."""
        breakers = session.breakers  # (a tool with no breaker yet has a closed one)
        visible = tuple(
            tool
            for tools in (self.tools, self._provided)
            for tool in tools.values()
            if (breaker := breakers.get(tool.name)) is None or breaker.allows_calls
        )
        if visible != self._specs[0]:
            self._specs = (visible, [tool.spec() for tool in visible])
        specs = list(self._specs[1])
        if jobs_open is None:
            jobs_open = bool(self.jobs.open_jobs(session))
        if "check_job" not in self.tools and jobs_open:
            specs.append(self.jobs.check_tool(session).spec())
        return specs

    def tool_for(self, name: str, session: Session) -> Tool | None:
        """The tool a call names, built-ins included."""
        found = self.tools.get(name) or self._provided.get(name)
        if found is None and name == "check_job":
            return self.jobs.check_tool(session)
        for provider in self.providers if found is None else ():
            found = provider.lookup(name)
            if found is not None:
                break
        return found

    def _start_job_turn(self, session: Session, messages: list[dict[str, Any]]) -> None:
        """Deliver job completions: a ``trigger: "job"`` run with them as input."""
        run = Run(self, session, messages, "job")
        self.executor.supervisor.spawn(run.execute, name=f"job turn {run.id}")

    def tool_names(self) -> list[str]:
        """The names of every tool the model may call now, sorted."""
        return sorted({*self.tools, *self._provided})

    async def refresh_tools(self) -> None:
        """Ask every tool provider for its tools (at once; each answers from its cache
        until its tools change). A provider's tool never replaces an agent's own."""
        listed: list[list[Tool]] = [[] for _ in self.providers]

        async def one(index: int, provider: ToolProvider) -> None:
            listed[index] = list(await provider.list_tools())

        async with anyio.create_task_group() as tg:
            for index, provider in enumerate(self.providers):
                tg.start_soon(one, index, provider)
        provided: dict[str, Tool] = {}
        for tools in listed:
            for item in tools:
                if item.name in self.tools or item.name in provided:
                    if item.name not in self._shadowed:
                        self._shadowed.add(item.name)
                        logger.warning("a provided tool named %r is hidden by another tool "
                                       "of that name (give its server a prefix)", item.name)
                    continue
                provided[item.name] = item
        self._provided = provided

    def start(
        self, session: Session, input: Any, task_group: TaskGroup, *, trigger: Trigger = "user"
    ) -> Run:
        """Start a run in ``task_group``; its events go to the session's log."""
        run = Run(self, session, input, trigger)
        task_group.start_soon(run.execute)
        return run

    async def run(
        self, input: Any, *, session: Session | None = None, trigger: Trigger = "user"
    ) -> AsyncIterator[BaseEvent]:
        """Run the agent on ``input`` and yield every event as it happens.

        Leaving the loop early (``break``, ``aclose()``, ``contextlib.aclosing``) cancels
        the run: it ends with ``run.finished{outcome: "cancelled"}`` and each open call
        with ``tool.cancelled``, and nothing is raised into the caller. After a plain
        ``break`` that happens when the event loop finalises the iterator; to wait for
        it, use :meth:`stream` or ``aclosing``.

        Args:
            input: A user message, or a list of chat messages.
            session: Continue this session (default: a new one).
        """
        if sniffio.current_async_library_cvar.get() is None:
            # Declared for the caller's task, where the reader waits (an async generator
            # runs in its caller's context): anyio's primitives then skip sniffio's
            # detection, a getpid() system call each on 3.11. It only says what is true.
            sniffio.current_async_library_cvar.set(sniffio.current_async_library())
        run = Run(self, session or self.session(), input, trigger)
        feed = _Feed()
        run.listeners.append(feed)
        # [runner] the run lives in the agent's supervised group, not in a task group held
        # across this generator's yields: a generator may be closed from another task
        # (the loop's finaliser after a plain break), and a scope left in another task
        # than the one that entered it cancels that task: the caller's. Its iterator
        # cancels it; aclose() does not.
        self.executor.supervisor.spawn(run.execute, name=f"run {run.id}", closes=False)
        try:
            events = feed.events
            while True:
                # No checkpoint while events wait: the reader takes every event appended
                # since it last ran, then sleeps until the next append.
                while events:
                    yield events.popleft()
                if feed.closed:
                    return
                await feed.wait()
        finally:
            feed.closed = True
            if not run.finished.is_set():
                run.cancel()
                with anyio.CancelScope(shield=True):
                    await run.finished.wait()

    @contextlib.asynccontextmanager
    async def stream(
        self, input: Any, *, session: Session | None = None, trigger: Trigger = "user"
    ) -> AsyncIterator[AsyncIterator[BaseEvent]]:
        """:meth:`run` as a context: leaving the block cancels the run if it is still
        going, and waits for its terminal event.

        Example::

            async with agent.stream("enrich acme.com") as events:
                async for event in events:
                    if event.type == "tool.result":
                        break  # the run is cancelled cleanly
        """
        events = self.run(input, session=session, trigger=trigger)
        try:
            yield events
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        """Stop tool bodies still running in the background and close tool providers
        (MCP sessions and their processes)."""
        await self.executor.supervisor.aclose()
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception:
                logger.exception("closing tool provider %r failed", provider)


@dataclass(eq=False)
class _Step:
    number: int
    message_id: str
    calls: dict[int, ToolCall] = field(default_factory=dict)
    waiting: list[ToolCall] = field(default_factory=list)
    """Calls begun whose arguments may still be streaming, in the order they began."""
    dispatched: int = 0
    text: list[str] = field(default_factory=list)
    text_open: bool = False
    reasoning: list[str] = field(default_factory=list)
    reasoning_id: str | None = None
    """The open reasoning message, if any."""
    finish: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    short_circuit_by: str | None = None
    hedge: anyio.Event | None = None
    """Set once the step's head-start window is over early: its decisive call ended or hit."""
    hedge_until: float = 0.0
    """Loop time at which the window ends."""
    hedged_by: ToolCall | None = None
    tg: TaskGroup | None = None
    """The group of the step's call tasks, opened with its first call."""
    pending: list[ToolCall] = field(default_factory=list)
    """Calls dispatched before the group opened (their tasks start when it does)."""
    closed: bool = False
    """The response's stream has been closed."""

    @property
    def clean(self) -> bool:
        return self.finish in {"stop", "tool_calls", "function_call"}


class Listener(Protocol):
    """What a run hands its events to, as they are appended (a memory stream, a trace)."""

    def send_nowait(self, item: BaseEvent, /) -> None: ...

    def close(self) -> None: ...


class _Feed:
    """:meth:`Agent.run`'s listener: the run's events in a queue its reader takes them
    from, woken only when it waits (no stream, no task switch per event)."""

    __slots__ = ("_wake", "closed", "events")

    def __init__(self) -> None:
        self.events: deque[BaseEvent] = deque()
        self.closed = False
        """The run ended, or the reader left: nothing more comes."""
        # A future of the loop, as the log's readers park on (lighter than an
        # anyio.Event per wait): the reader is the caller's task, cancelled as any await.
        self._wake: asyncio.Future[None] | None = None

    def send_nowait(self, item: BaseEvent, /) -> None:
        if not self.closed:
            self.events.append(item)
            self._set()

    def close(self) -> None:
        self.closed = True
        self._set()

    def _set(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def wait(self) -> None:
        """Return once an event is queued or nothing more comes."""
        if not self.events and not self.closed:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None


class _Untraced:
    """A run's hooks when no tracing is set up: each gives back what it was given."""

    @staticmethod
    def model_stream(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return stream

    @staticmethod
    def start_call(tg: TaskGroup, call: ToolCall,
                   fn: Callable[..., Coroutine[Any, Any, None]], *args: Any, name: str) -> None:
        tg.start_soon(fn, *args, name=name)


_UNTRACED = _Untraced()


def _trace(run: Run) -> RunTrace | _Untraced:
    # [telemetry] OpenTelemetry is loaded by the application, never by toolplex: without
    # it in sys.modules, or without a TracerProvider set, nothing is imported nor done.
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None or isinstance(otel.get_tracer_provider(),
                                  (otel.ProxyTracerProvider, otel.NoOpTracerProvider)):
        return _UNTRACED
    from .telemetry import trace_run

    return trace_run(run) or _UNTRACED


class Run:
    """One run of an agent in a session. Made by :meth:`Agent.start` or :meth:`Agent.run`."""

    def __init__(self, agent: Agent, session: Session, input: Any, trigger: Trigger) -> None:
        self.agent = agent
        self.session = session
        self.input = input
        self.trigger = trigger
        self.id = new_id("r")
        self.scope = anyio.CancelScope()
        self.cancel_requested = False
        self.listeners: list[Listener] = []
        self.usage: dict[str, int] = {}
        self.finished = anyio.Event()
        self.failure: dict[str, Any] | None = None
        session.runs[self.id] = self  # at once: a second start must see this run
        self.trace = _trace(self)

    def emit(self, cls: type[BaseEvent], **fields: Any) -> BaseEvent:
        """Append an event of this run to the session's log and hand it to listeners."""
        event = self.session.log.append(cls(run_id=self.id, **fields))
        for listener in self.listeners:
            try:
                listener.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # [runner] a listener that stopped reading (an iterator left early) never
                # fails the run: the log still gets every event.
                listener.close()
                self.listeners = [item for item in self.listeners if item is not listener]
        return event

    def cancel(self) -> None:
        """Cancel the run: running calls end ``run_cancelled``, the run ``cancelled``."""
        self.cancel_requested = True
        self.scope.cancel()

    def fail(self, error: dict[str, Any]) -> None:
        """Stop the run from outside: running calls end ``run_cancelled``, the run with
        ``run.error`` ``error`` (the server uses it when its store becomes unreachable)."""
        self.failure = self.failure or error
        self.scope.cancel()

    async def execute(self) -> None:
        """Run to exactly one ``run.finished`` or ``run.error``."""
        # Declared for the run's tasks (its calls and their bodies inherit it): anyio's
        # primitives then skip sniffio's detection, a getpid() system call each on 3.11.
        sniffio.current_async_library_cvar.set(sniffio.current_async_library())
        self.session.touch()
        ended = False
        try:
            try:
                self.emit(RunStarted, trigger=self.trigger, input=self.input)
                error = await self._guarded() or self.failure
            except (UnserializableOutput, EventTooLarge) as exc:  # only the input can be
                self.emit(RunStarted, trigger=self.trigger)
                error = error_dict("invalid_input", str(exc))
            ended = True
            if error is not None:
                self.emit(RunError, error=error)
            else:
                usage = dict(self.usage) or None
                outcome = "cancelled" if self.cancel_requested else "success"
                self.emit(RunFinished, outcome=outcome, usage=usage)
        finally:
            if not ended:
                # [protocol] every run.started gets exactly one terminal event, also
                # when an enclosing scope (server shutdown) cancels the run.
                self.emit(RunFinished, outcome="cancelled")
            self.session.runs.pop(self.id, None)
            self.session.touch()
            self.finished.set()
            for listener in self.listeners:
                listener.close()
            for hook in self.agent.run_end_hooks:
                try:
                    hook(self)
                except Exception:
                    logger.exception("run-end hook failed")

    async def _guarded(self) -> dict[str, Any] | None:
        deadline = self.agent.limits.run_deadline
        try:
            self._add_input()
            with self.scope:
                timer = anyio.move_on_after(self.agent.clock.real(deadline)) if deadline else None
                with timer or nullcontext():
                    await self._loop()
                if timer is not None and timer.cancelled_caught:
                    return error_dict("deadline_exceeded",
                                      f"the run did not finish within {deadline:g} s")
        except Exception as group:
            exc = _leaf(group)
            if isinstance(exc, _RunFailed):
                return exc.error
            if isinstance(exc, ModelError):
                return error_dict(exc.code, exc.message)
            logger.error("run failed: %r", exc, exc_info=exc,
                         extra={"session_id": self.session.id, "run_id": self.id})
            return error_dict("model_error" if _from_model(exc) else "internal",
                              f"{type(exc).__name__}: {exc}")
        return None

    def _add_input(self) -> None:
        if isinstance(self.input, str):
            self.session.history.append({"role": "user", "content": self.input})
            return
        if not isinstance(self.input, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in self.input
        ):
            raise _RunFailed(error_dict(
                "invalid_input", "input must be a string or a list of {role, content} messages"))
        self.session.history.extend(self.input)

    async def _loop(self) -> None:
        limit = self.agent.limits.max_steps
        for number in range(1, limit + 1):
            self.emit(StepStarted, step=number)
            try:
                more = await self._step(number)
            finally:
                self.emit(StepFinished, step=number)
            if not more:
                return
        raise _RunFailed(error_dict(
            "max_steps", f"stopped after {limit} steps: the model kept calling tools"))

    def _messages(self) -> list[dict[str, Any]]:
        parts = [self.agent.instructions or ""]
        if self.agent.dependent_calls:
            parts.append(dependent.CONVENTION)
        content = "\n\n".join(p for p in parts if p)
        system = [{"role": "system", "content": content}] if content else []
        history = self.session.history
        start, limit = 0, self.agent.limits.max_history_messages
        if limit is not None and len(history) > limit:
            start = len(history) - limit
            # A tool message whose assistant tool_calls were cut off is refused by providers:
            # the window widens back to the message that made the calls.
            while start > 0 and history[start].get("role") == "tool":
                start -= 1
        return system + history[start:]

    async def _step(self, number: int) -> bool:
        step = _Step(number, new_id("m"))
        if self.agent.providers:
            await self.agent.refresh_tools()
        jobs_open = "check_job" not in self.agent.tools and await self.agent.jobs.any_open(
            self.session)
        specs = self.agent.tool_specs(self.session, jobs_open=jobs_open)
        try:
            stream = self.trace.model_stream(self.agent.model.stream(self._messages(), specs))
            try:
                await self._read(step, stream)
                if step.pending:
                    # [runner] the step's task group opens with its first call: a response
                    # of text alone (each run's last) needs none, nor its exit's checkpoint.
                    async with anyio.create_task_group() as step.tg:
                        for call in step.pending:
                            self._start_call(step, call)
                        step.pending.clear()
                        try:
                            await self._read(step, stream)
                        finally:
                            await self._close_response(step, stream)
                        self._end_response(step)  # (in the group: its calls still run)
            finally:
                await self._close_response(step, stream)
            self._end_response(step)
        finally:
            # Dispatched, never started: _run_call's finally would have given these back.
            self.session.running_calls -= len(step.pending)
            for call in step.calls.values():
                if call.outcome is None:  # never dispatched, or refused while waiting
                    self.agent.executor.cancelled(call, self.emit)
                self.session.calls.pop(call.call_id, None)
            self._record(step)
        if not step.clean:
            raise _RunFailed(error_dict(
                "model_truncated",
                f"the model's response ended with finish_reason={step.finish!r}; "
                f"its {len(step.calls)} tool call(s) were discarded"))
        return bool(step.calls)

    async def _close_response(self, step: _Step, stream: AsyncIterator[Any]) -> None:
        """Close the response's stream once, and end its open text."""
        if step.closed:
            return
        step.closed = True
        try:
            await stream.aclose()  # type: ignore[attr-defined]
        finally:
            self._end_text(step)

    def _end_response(self, step: _Step) -> None:
        """A response that ended without a finish reason is ``incomplete``."""
        if step.finish is None:
            step.finish = "incomplete"
            self._finish_response(step)

    async def _read(self, step: _Step, stream: AsyncIterator[Any]) -> None:
        """Hand each chunk of the response on, under the model's idle timeout, to its end,
        or until a call is dispatched while the step has no task group yet."""
        idle: float | None = getattr(self.agent.model, "idle_timeout", None)
        if not idle:
            async for chunk in stream:
                self._on_model_chunk(step, chunk)
                if step.pending and step.tg is None:
                    return
            return
        # [protocol] model_timeout: no chunk within the model's idle timeout (the request
        # included). One deadline for the whole response, moved forward only once a tenth
        # of the timeout has passed: a timer rescheduled per chunk costs more than the
        # chunk's own handling. So the timeout fires between 0.9 and 1.0 times it.
        with anyio.CancelScope(deadline=anyio.current_time() + idle) as reading:
            renew_at = time.monotonic() + idle / 10
            async for chunk in stream:
                now = time.monotonic()
                if now >= renew_at:
                    reading.deadline = anyio.current_time() + idle
                    renew_at = now + idle / 10
                self._on_model_chunk(step, chunk)
                if step.pending and step.tg is None:
                    break
        if reading.cancelled_caught:
            raise ModelTimeout(idle)

    def _on_model_chunk(self, step: _Step, chunk: Any) -> None:
        if isinstance(chunk, TextChunk):
            self._end_reasoning(step)
            if not step.text_open:
                step.text_open = True
                self.emit(TextStart, message_id=step.message_id, role="assistant")
            step.text.append(chunk.text)
            self.emit(TextDelta, message_id=step.message_id, delta=chunk.text)
        elif isinstance(chunk, ReasoningChunk):
            if step.text_open:
                step.text_open = False
                self.emit(TextEnd, message_id=step.message_id)
            if step.reasoning_id is None:
                step.reasoning_id = new_id("m")
                self.emit(ReasoningStart, message_id=step.reasoning_id)
            step.reasoning.append(chunk.text)
            self.emit(ReasoningDelta, message_id=step.reasoning_id, delta=chunk.text)
        elif isinstance(chunk, CallBegin):
            self._end_text(step)
            # [runner] a new call index means every earlier call's arguments are complete.
            complete = [c for c in step.waiting if c.index < chunk.index]
            step.waiting = [c for c in step.waiting if c.index >= chunk.index]
            for earlier in complete:
                self._dispatch(step, earlier)
            self._begin_call(step, chunk.index, chunk.id, chunk.name)
        elif isinstance(chunk, CallArgs):
            call = step.calls.get(chunk.index) or self._begin_call(
                step, chunk.index, f"call_{chunk.index}", "")
            if call not in step.waiting and (call.kwargs is not None or call.outcome):
                # A fragment after the stream's structure completed the call (a later
                # call began): the tool already runs with what came before, and the
                # replay must say what it ran with. [protocol] no delta after call.end.
                logger.warning("model sent arguments for call %s after it was complete; "
                               "ignored: %r", call.call_id, chunk.fragment[:80])
                return
            call.args_text += chunk.fragment
            self.emit(ToolCallDelta, call_id=call.call_id, delta=chunk.fragment)
        elif isinstance(chunk, CallEnd):
            # [runner] the stream's structure closed the call: its arguments are complete.
            ended = step.calls.get(chunk.index)
            if ended is not None and ended in step.waiting:
                step.waiting.remove(ended)
                self._dispatch(step, ended)
        elif isinstance(chunk, CallFields):
            fields_of = step.calls.get(chunk.index)
            if fields_of is not None:
                fields_of.provider_fields = dict(chunk.fields)
        elif isinstance(chunk, Finish):
            step.finish = chunk.reason
            self._finish_response(step)
        elif isinstance(chunk, Usage):
            for key, value in chunk.usage.items():
                if isinstance(value, int):
                    self.usage[key] = self.usage.get(key, 0) + value

    def _begin_call(self, step: _Step, index: int, model_id: str, name: str) -> ToolCall:
        call = ToolCall(call_id=new_id("c"), name=name, index=index, model_call_id=model_id,
                        message_id=step.message_id, run_id=self.id)
        step.calls[index] = call
        step.waiting.append(call)
        self.session.calls[call.call_id] = call
        self.emit(ToolCallStart, call_id=call.call_id, name=name, message_id=step.message_id)
        if step.short_circuit_by is not None:
            call.cancel("short_circuit", step.short_circuit_by)
        return call

    def _end_reasoning(self, step: _Step) -> None:
        if step.reasoning_id is not None:
            self.emit(ReasoningEnd, message_id=step.reasoning_id)
            step.reasoning_id = None

    def _end_text(self, step: _Step) -> None:
        """End the open text and the open reasoning: a call or the finish came."""
        self._end_reasoning(step)
        if step.text_open:
            step.text_open = False
            self.emit(TextEnd, message_id=step.message_id)

    def _finish_response(self, step: _Step) -> None:
        self._end_text(step)
        if step.clean:
            for call in step.calls.values():
                self._dispatch(step, call)
        else:
            # [runner] a response cut off (length, content_filter) may have truncated
            # arguments: calls already started are cancelled and discarded.
            for call in step.calls.values():
                call.cancel("discarded")
        step.done.set()

    def _dispatch(self, step: _Step, call: ToolCall) -> None:
        if call.kwargs is not None or call.outcome is not None:
            return
        executor = self.agent.executor
        try:
            parsed = json.loads(call.args_text) if call.args_text.strip() else {}
        except json.JSONDecodeError:
            parsed = None
        self.emit(ToolCallEnd, call_id=call.call_id,
                  args=parsed if isinstance(parsed, dict) else {})
        tool = self.agent.tool_for(call.name, self.session)
        if tool is None:
            known = ", ".join(self.agent.tool_names()) or "none"
            executor.fail(call, self.emit, error_dict(
                "unknown_tool", f"there is no tool named {call.name!r} (tools: {known})"))
            return
        call.tool = tool
        try:
            if self.agent.dependent_calls and isinstance(parsed, dict) and self._depends(
                    call, parsed):
                # [runner] a reference passes as it is; the schema checks what it resolves to.
                call.kwargs = parsed
            else:
                # Parsed once: validate() reports a text that is not a JSON object itself.
                call.kwargs = tool.validate(
                    parsed if isinstance(parsed, dict) else call.args_text)
        except InvalidArguments as exc:
            executor.fail(call, self.emit, error_dict("invalid_args", str(exc)))
            return
        if call.cancel_reason is not None:
            executor.cancelled(call, self.emit)
            return
        limits = self.agent.limits
        if step.dispatched >= limits.max_calls_per_step:
            executor.fail(call, self.emit, error_dict(
                "limit_exceeded", f"more than {limits.max_calls_per_step} calls in one step"))
            return
        if self.session.running_calls >= limits.max_concurrent_calls:
            executor.fail(call, self.emit, error_dict(
                "limit_exceeded",
                f"the session already runs {limits.max_concurrent_calls} calls"))
            return
        step.dispatched += 1
        self.session.running_calls += 1
        if tool.head_start is not None and step.hedge is None:
            # [runner] a hedged start: the step's other calls give this one a head start.
            step.hedge = anyio.Event()
            step.hedge_until = anyio.current_time() + self.agent.clock.real(tool.head_start)
            step.hedged_by = call
        self._start_call(step, call)

    def _start_call(self, step: _Step, call: ToolCall) -> None:
        if step.tg is None:
            step.pending.append(call)
            return
        # A name given is a name anyio need not work out from the method once per call.
        self.trace.start_call(step.tg, call, self._run_call, step, call,
                              name=f"{call.name} ({call.call_id})")

    async def _run_call(self, step: _Step, call: ToolCall) -> None:
        assert call.tool is not None
        try:
            if call.tool.side_effects:
                # [runner] a write never starts before the response ends cleanly.
                with call.scope:
                    await step.done.wait()
                call.scope = anyio.CancelScope()  # a scope serves one `with` block only
            if call.depends and not await self._resolve(step, call):
                return
            if step.hedge is not None and call.tool.decisive is None:
                await self._give_head_start(step, call)
            if call.cancel_reason is not None:
                self.agent.executor.cancelled(call, self.emit)
                return
            if call.tool.mode != "inline":
                await self._run_job_call(call)
                return
            check = self._on_chunk(step) if call.tool.decisive else _ignore_chunk
            await self.agent.executor.run(call, self.session, self.emit, check)
        finally:
            self.session.running_calls -= 1
            if call.ended is not None:
                call.ended.set()
            if step.hedged_by is call:
                assert step.hedge is not None
                step.hedge.set()  # it ended without a decisive chunk: the others go now

    @staticmethod
    def _depends(call: ToolCall, args: dict[str, Any]) -> bool:
        """Whether the arguments refer to other calls (``$from``); notes them on the call.

        Raises:
            InvalidArguments: A ``$from`` that is not a reference.
        """
        try:
            call.depends = tuple(dependent.refs(args))
        except dependent.BadReference as exc:
            raise InvalidArguments(call.name, str(exc)) from None
        return bool(call.depends)

    async def _resolve(self, step: _Step, call: ToolCall) -> bool:
        """Wait for the calls ``call`` refers to and fill their values into its arguments,
        then validate them (it starts once they have ended, without waiting for the response's
        end when every call it leads to is known). False when it has ended (``dependency_failed``,
        ``invalid_args``); a cancel while waiting is left to the caller."""
        assert call.tool is not None
        values: dict[tuple[str | int, str], Any] = {}
        problem: str | None = None
        with call.scope:
            if not step.done.is_set() and not _known(step, call):
                # A reference names a call not yet written, or one whose arguments are
                # still streaming: a cycle shows only once those are known.
                await step.done.wait()
            for ref in call.depends:
                target = _referred(step, ref)
                if target is None:
                    problem = f"{ref.target!r} names no call of this response"
                elif _reaches(step, target, call):
                    problem = f"{ref.target!r} depends on this call: a cycle"
                else:
                    if target.outcome is None:
                        target.ended = target.ended or anyio.Event()
                        await target.ended.wait()
                    problem = _value_of(target, ref, values)
                if problem is not None:
                    break
        call.scope = anyio.CancelScope()
        if call.cancel_reason is not None:
            return True
        executor = self.agent.executor
        if problem is not None:
            executor.fail(call, self.emit, error_dict("dependency_failed", problem))
            return False
        assert isinstance(call.kwargs, dict)
        call.resolved_args = dependent.fill(call.kwargs, values)
        try:
            call.kwargs = call.tool.validate(call.resolved_args)
        except InvalidArguments as exc:
            executor.fail(call, self.emit, error_dict("invalid_args", str(exc)))
            return False
        return True

    async def _give_head_start(self, step: _Step, call: ToolCall) -> None:
        """Wait until the step's hedged call hits, ends, or its head start runs out."""
        assert step.hedge is not None
        wait = step.hedge_until - anyio.current_time()
        if wait <= 0 or step.hedge.is_set():
            return
        with call.scope, anyio.move_on_after(wait):
            await step.hedge.wait()  # a short circuit cancels call.scope: it never starts
        call.scope = anyio.CancelScope()

    async def _run_job_call(self, call: ToolCall) -> None:
        assert call.tool is not None
        executor = self.agent.executor
        try:
            with call.scope:
                await self.agent.jobs.run_call(call, self.session, self.emit)
        finally:
            if call.outcome is None:
                executor.cancelled(call, self.emit)

    def _on_chunk(self, step: _Step) -> Any:
        def check(call: ToolCall, chunk: Any) -> None:
            decisive = call.tool.decisive if call.tool else None
            if decisive is None or step.short_circuit_by is not None:
                return
            try:
                hit = bool(decisive(chunk))
            except Exception as exc:
                # [protocol] a predicate that raises ends its call with predicate_failed.
                raise PredicateFailed(call.name, "decisive", exc) from exc
            if not hit:
                return
            step.short_circuit_by = call.call_id
            if step.hedge is not None:
                step.hedge.set()
            siblings = [c for c in step.calls.values() if c is not call and c.outcome is None]
            self.emit(ToolShortCircuit, call_id=call.call_id,
                      cancelled_call_ids=[c.call_id for c in siblings])
            for sibling in siblings:
                sibling.cancel("short_circuit", call.call_id)

        return check

    def _record(self, step: _Step) -> None:
        """Put the step's assistant message and one tool message per call into history."""
        text = "".join(step.text)
        calls = sorted(step.calls.values(), key=lambda c: c.index)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls and step.clean:
            # [protocol] per-call provider fields go back on that call, as they came.
            message["tool_calls"] = [
                {**(c.provider_fields or {}), "id": c.model_call_id, "type": "function",
                 "function": {"name": c.name, "arguments": c.args_text or "{}"}}
                for c in calls
            ]
            if step.reasoning:
                # Kept for the providers that require it back (DeepSeek, on messages with
                # tool calls); each model strips it from what it sends otherwise.
                message["reasoning_content"] = "".join(step.reasoning)
        if text or message.get("tool_calls"):
            self.session.history.append(message)
        if calls and step.clean:
            for call in calls:
                outcome = call.outcome or Outcome("cancelled", reason="run_cancelled")
                content = _cut(outcome.for_model(), self.agent.limits.max_result_chars)
                self.session.history.append({"role": "tool", "tool_call_id": call.model_call_id,
                                             "content": content})


def _referred(step: _Step, ref: dependent.Ref) -> ToolCall | None:
    """The call of the step a reference names: by position, else by the model's id."""
    if isinstance(ref.target, int):
        return step.calls.get(ref.target)
    return next((c for c in step.calls.values() if c.model_call_id == ref.target), None)


def _known(step: _Step, call: ToolCall) -> bool:
    """Whether every call ``call`` leads to by references exists with complete arguments
    (so its own references are known)."""
    seen: set[str] = set()
    todo = [call]
    while todo:
        current = todo.pop()
        if current.call_id in seen:
            continue
        seen.add(current.call_id)
        for ref in current.depends:
            target = _referred(step, ref)
            if target is None or (target.kwargs is None and target.outcome is None):
                return False
            todo.append(target)
    return True


def _reaches(step: _Step, start: ToolCall, goal: ToolCall) -> bool:
    """Whether following references from ``start`` leads to ``goal`` (or ``start`` is it)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        if current is goal:
            return True
        if current.call_id in seen:
            continue
        seen.add(current.call_id)
        todo.extend(t for r in current.depends if (t := _referred(step, r)) is not None)
    return False


def _value_of(target: ToolCall, ref: dependent.Ref,
              values: dict[tuple[str | int, str], Any]) -> str | None:
    """Put the value ``ref`` names into ``values``; or say why there is none."""
    outcome = target.outcome
    assert outcome is not None
    if outcome.kind != "result":
        how = "failed" if outcome.kind == "error" else "was cancelled"
        return f"{ref.target!r} ({target.name}) {how}: nothing to pass on"
    try:
        values[ref.key] = dependent.at(outcome.output, ref.path)
    except LookupError as exc:
        return f"{ref.target!r} ({target.name}) has no {ref.path!r}: {exc}"
    return None


def _ignore_chunk(call: ToolCall, chunk: Any) -> None:
    """What a call's chunks go to when its tool has no decisive predicate."""


def _cut(content: str, limit: int) -> str:
    """The model's copy of a tool message: at most `limit` characters, marked when cut."""
    # [hardening] A tool may stream megabytes to the client; the model's context (and the
    # session's history in memory) gets a bounded head of it and is told it was cut.
    if len(content) <= limit:
        return content
    return (content[:limit]
            + f"\n[toolplex: output truncated to {limit} of {len(content)} characters]")


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _from_model(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in {"openai", "httpx", "httpx2"}
