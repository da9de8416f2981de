"""One execution path: every tool call is a stream of chunks with one terminal outcome.

Sync functions run in a bounded thread pool, coroutine functions and async
generators as supervised background tasks (so a body that ignores cancellation
can be abandoned); the call reads their chunks under the tool's policy: upstream
limit, hard timeout, transient-only retries (tenacity), the session's circuit
breaker and memo cache. The call emits ``tool.exec.started``,
``tool.output.delta``, ``tool.timeout``, ``tool.retrying`` and exactly one of
``tool.result`` / ``tool.error`` / ``tool.cancelled``.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from .breaker import CircuitBreaker
from .dependent import Ref
from .events import (
    BaseEvent,
    ToolCancelled,
    ToolCircuitOpen,
    ToolExecStarted,
    ToolFailed,
    ToolOutputDelta,
    ToolQueued,
    ToolResult,
    ToolRetrying,
    ToolTimedOut,
    error_dict,
)
from .exceptions import EventTooLarge, UnserializableOutput
from .limits import ThreadPool, Upstream
from .policy import Backoff, Clock, Failure, classify
from .session import Session
from .supervisor import Supervisor
from .tools import Kind, Tool

logger = logging.getLogger("toolplex.calls")

Emit = Callable[..., BaseEvent]
"""``emit(EventClass, **fields)``: append an event of the current run to the log."""

CancelReason = Literal["short_circuit", "user", "run_cancelled", "discarded"]

current_call: contextvars.ContextVar[tuple[ToolCall, Session, Emit]] = (
    contextvars.ContextVar("toolplex_current_call"))
"""The call a tool body runs for, with its session and emit (set around each call's
execution): a tool that turns into a job mid-call (an MCP server answering with a
task) hands it to :meth:`~toolplex.jobs.JobManager.adopt`."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended, as the model will be told."""

    kind: Literal["result", "error", "cancelled"]
    output: Any = None
    partial: bool = False
    error: dict[str, Any] | None = None
    reason: str | None = None
    by_call_id: str | None = None
    stopped_by: str | None = None
    """``predicate``: the tool's ``stop_when`` ended the stream (a partial result)."""

    @property
    def failed(self) -> bool:
        """True for an error or a partial result cut by a timeout (what the breaker
        counts); a stream its own predicate stopped did what it was asked."""
        return self.kind == "error" or (self.partial and self.stopped_by is None)

    def for_model(self) -> str:
        """The content of the tool message the model receives for this call."""
        # [protocol] The model always receives one tool message per tool call: the
        # output, the partial output marked as partial, or the error/cancel reason.
        if self.kind == "result" and not self.partial:
            body: Any = self.output
        elif self.kind == "result":
            note = ("stopped early by the tool's stop_when rule; this is the output so far"
                    if self.stopped_by else "timed out; this is the output so far")
            body = {"partial": True, "note": note, "output": self.output}
        elif self.kind == "error":
            body = {"error": self.error}
        else:
            body = {"cancelled": True, "reason": self.reason}
            if self.by_call_id:
                body["by_call_id"] = self.by_call_id
            if self.output is not None:
                body["partial_output"] = self.output
        return body if isinstance(body, str) else json.dumps(body, default=str)


@dataclass(eq=False)
class ToolCall:
    """One call the model made: its arguments as they stream, then its execution."""

    call_id: str
    name: str
    index: int
    model_call_id: str
    message_id: str
    run_id: str
    args_text: str = ""
    kwargs: dict[str, Any] | None = None
    tool: Tool | None = None
    chunks: list[Any] = field(default_factory=list)
    """The current attempt's chunks."""
    outcome: Outcome | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_reason: CancelReason | None = None
    cancelled_by: str | None = None
    stopped: bool = False
    """The tool's ``stop_when`` ended the stream."""
    provider_fields: dict[str, Any] | None = None
    """Fields the provider sent with the call and wants back on it in the next
    request (Gemini's ``extra_content.google.thought_signature``)."""
    depends: tuple[Ref, ...] = ()
    """The other calls of the response its arguments refer to (``$from``)."""
    resolved_args: dict[str, Any] | None = None
    """Its arguments with those references filled in (what ``tool.exec.started`` shows)."""
    ended: anyio.Event | None = None
    """Made by a call that waits for this one; set when this one has ended."""
    timeout: float | None = None
    """Seconds each attempt may take; None: the tool's, capped by the executor (a job's
    work sets its own: the tool's ``timeout=`` or the job's TTL)."""

    def cancel(self, reason: CancelReason, by_call_id: str | None = None) -> bool:
        """Ask the call to stop. Returns False when it has already ended."""
        if self.outcome is not None or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        self.cancelled_by = by_call_id
        self.scope.cancel()
        return True

    def partial_output(self) -> Any:
        """What the call has yielded so far, reduced like its result (None if nothing)."""
        if not self.chunks:
            return None
        if self.tool is not None and self.tool.kind is Kind.STREAM:
            return self.tool.reduce(self.chunks)
        return self.chunks[0]


class PredicateFailed(Exception):
    """A tool's ``stop_when`` or ``decisive`` predicate raised on a chunk: the call ends
    with ``tool.error`` ``predicate_failed``."""

    def __init__(self, tool_name: str, which: str, error: BaseException) -> None:
        super().__init__(f"the {which} predicate of {tool_name} raised "
                         f"{type(error).__name__}: {error}")


class _Stopped(Exception):
    """Raised by the chunk that met the tool's ``stop_when``: it ends the stream."""


class _Transient(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _Permanent(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(eq=False, slots=True)
class _Ended:
    """How a tool's body ended, once it has: ``finished``, with its value or error."""

    finished: bool = False
    value: Any = None
    error: BaseException | None = None
    closed: bool = False
    """The call stopped waiting (out of time, cancelled): nothing more is taken."""
    deadline: anyio.CancelScope | None = None
    """The call's wait (an ``idle_timeout`` tool's chunks move it)."""

    def settle(self, value: Any, error: BaseException | None) -> None:
        if not self.closed and not self.finished:
            self.finished, self.value, self.error = True, value, error


_YIELD_EVERY = 64


async def _body(tool: Tool, kwargs: dict[str, Any], take: Callable[[Any], None],
                ended: _Ended) -> None:
    """Run a tool's body to its end, settling ``ended``.

    A coroutine's value is what ``ended`` carries. A stream's chunks are each handed to
    ``take`` as they come, from this task: the chunk is logged in the loop pass it was
    yielded in, with no hand-over to the call's task (a queue and a task switch per
    chunk). Once the call stopped waiting (out of time, cancelled) nothing more is taken.
    """
    try:
        if tool.kind is Kind.STREAM:
            taken = 0
            stream = tool.fn(**kwargs)
            try:
                async for chunk in stream:
                    if ended.closed:
                        return
                    take(chunk)
                    taken += 1
                    if taken % _YIELD_EVERY == 0:
                        # A generator that never awaits still lets readers and its deadline
                        # run.
                        await anyio.lowlevel.checkpoint()
            except (_Stopped, PredicateFailed):
                # The generator is suspended at its yield: close it now, so its own
                # cleanup runs before the call ends, not whenever it is collected.
                await stream.aclose()
                raise
            ended.settle(None, None)
        else:
            ended.settle(await tool.fn(**kwargs), None)
    except Exception as exc:
        ended.settle(None, exc)
    except BaseException:
        ended.settle(None, RuntimeError(f"{tool.name} stopped without finishing"))
        raise


@dataclass
class Executor:
    """Runs calls under their tools' declared policy. One per agent.

    Args:
        clock: Scales every timeout and backoff wait.
        timeout_cap: No tool's timeout may exceed this many seconds.
        backoff: The retry delay schedule.
        pool: Threads for sync tools.
        upstreams: Limiters by upstream name.
        supervisor: Owns tool bodies.
    """

    clock: Clock = field(default_factory=Clock)
    timeout_cap: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    pool: ThreadPool = field(default_factory=ThreadPool)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    supervisor: Supervisor = field(default_factory=Supervisor)
    latency: dict[str, deque[float]] = field(default_factory=dict)
    """Recent durations (nominal seconds) of each tool's successful inline calls."""
    budget: float = 3.0
    """The UX budget: an inline tool whose p99 exceeds it is flagged as an async candidate."""
    _flagged: set[str] = field(default_factory=set)

    def quantiles(self, name: str) -> dict[str, float]:
        """p50/p95/p99 of the tool's recent successful call durations (nominal seconds)."""
        samples = sorted(self.latency.get(name, ()))
        if not samples:
            return {}

        def pick(q: float) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))]

        return {"0.5": pick(0.5), "0.95": pick(0.95), "0.99": pick(0.99)}

    def _record_latency(self, tool: Tool, seconds: float) -> None:
        window = self.latency.get(tool.name)
        if window is None:
            window = self.latency[tool.name] = deque(maxlen=1000)
        window.append(seconds)
        budget = tool.budget or self.budget
        if len(window) < 20 or tool.name in self._flagged:
            return
        # The p99 only rises past the budget with a sample over it, or as the window first
        # reaches 20: sorting up to 1,000 samples on every call would cost more than the call.
        if seconds <= budget and len(window) > 20:
            return
        p99 = self.quantiles(tool.name)["0.99"]
        if p99 > budget:
            self._flagged.add(tool.name)
            logger.warning(
                "tool %s: p99 latency %.2f s exceeds the %.1f s budget; it is a candidate "
                "for @tool(mode='auto', budget=...) or mode='job'", tool.name, p99, budget)

    def timeout_for(self, tool: Tool) -> float:
        """The tool's timeout, capped."""
        return min(tool.timeout, self.timeout_cap)

    async def run(
        self,
        call: ToolCall,
        session: Session,
        emit: Emit,
        on_chunk: Callable[[ToolCall, Any], None],
    ) -> Outcome:
        """Execute a validated call to its one terminal event, and return its outcome.

        Cancellation (``call.cancel`` or the run's) ends it with ``tool.cancelled``
        carrying the partial output; nothing else escapes as an exception.
        """
        tool = call.tool
        assert tool is not None
        assert call.kwargs is not None
        token = current_call.set((call, session, emit))
        try:
            with call.scope:
                await self._execute(call, tool, session, emit, on_chunk)
        except Exception as exc:  # a bug in toolplex itself: still one terminal event
            logger.exception("call crashed", extra={"run_id": call.run_id,
                                                    "call_id": call.call_id})
            if call.outcome is None:
                self.fail(call, emit, error_dict("internal", f"{type(exc).__name__}: {exc}"))
        finally:
            # [protocol] every tool.call.start gets exactly one terminal event, also
            # when the run's own scope is being cancelled around us.
            if call.outcome is None:
                self.cancelled(call, emit)
            current_call.reset(token)
        assert call.outcome is not None
        return call.outcome

    def cancelled(self, call: ToolCall, emit: Emit) -> Outcome:
        """End a call with ``tool.cancelled`` (its reason and partial output)."""
        reason = call.cancel_reason or "run_cancelled"
        partial = call.partial_output()
        try:
            emit(ToolCancelled, call_id=call.call_id, reason=reason,
                 by_call_id=call.cancelled_by, partial_output=partial)
        except (UnserializableOutput, EventTooLarge):
            # [protocol] exactly one terminal event: without the optional partial output.
            partial = None
            emit(ToolCancelled, call_id=call.call_id, reason=reason,
                 by_call_id=call.cancelled_by)
        call.outcome = Outcome("cancelled", output=partial, reason=reason,
                               by_call_id=call.cancelled_by)
        return call.outcome

    def fail(self, call: ToolCall, emit: Emit, error: dict[str, Any]) -> Outcome:
        """End a call with ``tool.error``."""
        emit(ToolFailed, call_id=call.call_id, error=error)
        call.outcome = Outcome("error", error=error)
        return call.outcome

    def succeed(self, call: ToolCall, emit: Emit, output: Any, *, partial: bool = False,
                cached: bool = False, stopped_by: str | None = None) -> Outcome:
        """End a call with ``tool.result``."""
        output = {} if output is None else output
        emit(ToolResult, call_id=call.call_id, output=output, partial=partial,
             stopped_by=stopped_by, cached=True if cached else None)
        call.outcome = Outcome("result", output=output, partial=partial, stopped_by=stopped_by)
        return call.outcome

    def breaker_for(self, session: Session, tool: Tool) -> CircuitBreaker:
        """The session's breaker for ``tool``."""
        breaker = session.breakers.get(tool.name)
        if breaker is None:
            breaker = session.breakers[tool.name] = CircuitBreaker(tool.breaker, clock=self.clock)
        return breaker

    def refuse_open_circuit(self, call: ToolCall, session: Session, emit: Emit) -> bool:
        """End the call with ``tool.error`` ``circuit_open`` if its tool's breaker is open
        in this session; False (nothing emitted) when the call may go ahead."""
        assert call.tool is not None
        breaker = self.breaker_for(session, call.tool)
        if breaker.allows_calls:
            return False
        self.fail(call, emit, error_dict(
            "circuit_open", f"{call.tool.name} is disabled for this session after "
            f"{breaker.failures} consecutive failures"))
        return True

    async def _execute(
        self, call: ToolCall, tool: Tool, session: Session, emit: Emit,
        on_chunk: Callable[[ToolCall, Any], None],
    ) -> Outcome:
        breaker = self.breaker_for(session, tool)
        if self.refuse_open_circuit(call, session, emit):
            assert call.outcome is not None
            return call.outcome
        key = ("", "")
        if tool.cache:  # the key is a JSON encoding: only made for tools that cache
            key = (tool.name, json.dumps(call.kwargs, sort_keys=True, default=str))
            hit = session.cache.get(key)
            if hit is not None and hit[0] > self.clock.monotonic():
                return self.succeed(call, emit, hit[1], cached=True)
        started = self.clock.monotonic()
        try:
            output, partial = await self._attempts(call, tool, emit, on_chunk)
        except _Permanent as exc:
            outcome = self.fail(call, emit, exc.failure.to_error())
        except _Transient as exc:
            outcome = self.fail(call, emit, self._exhausted(tool, exc.failure))
        else:
            try:
                outcome = self.succeed(call, emit, output, partial=partial,
                                       stopped_by="predicate" if call.stopped else None)
            except (UnserializableOutput, EventTooLarge) as exc:  # a reduced stream's result
                return self.fail(call, emit, classify(exc).to_error())
            if not partial and tool.mode == "inline":  # (a job is long by design)
                self._record_latency(tool, self.clock.monotonic() - started)
            if tool.cache and not partial:
                session.cache[key] = (self.clock.monotonic() + tool.cache, output)
        if outcome.failed:
            if breaker.record_failure():
                emit(ToolCircuitOpen, tool=tool.name, failures=breaker.failures)
        else:
            breaker.record_success()
        return outcome

    def _exhausted(self, tool: Tool, failure: Failure) -> dict[str, Any]:
        if tool.retries == 0:
            return failure.to_error()
        return error_dict(
            "retries_exhausted",
            f"{tool.name} failed {tool.retries + 1} times; last: {failure.message}",
            last=failure.to_error(),
        )

    async def _attempts(
        self, call: ToolCall, tool: Tool, emit: Emit, on_chunk: Callable[[ToolCall, Any], None]
    ) -> tuple[Any, bool]:
        # Most calls succeed at once: the first attempt runs outside tenacity, whose loop
        # (retry state, callbacks, awaits) costs more than a fast tool. A transient failure
        # with retries left hands over to it.
        try:
            return await self._attempt(call, tool, 1, emit, on_chunk, last=tool.retries == 0)
        except _Transient as exc:
            if tool.retries == 0:
                raise
            failure = exc.failure
        return await self._retry(call, tool, failure, emit, on_chunk)

    async def _retry(
        self, call: ToolCall, tool: Tool, first: Failure, emit: Emit,
        on_chunk: Callable[[ToolCall, Any], None],
    ) -> tuple[Any, bool]:
        """Attempts 2 and on, after the first attempt failed with ``first``."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(tool.retries + 1),
            wait=self._retry_delay,
            retry=retry_if_exception_type(_Transient),
            sleep=self.clock.sleep,
            before_sleep=self._retrying,
            reraise=True,
        )
        # The call reaches tenacity only as the arguments of its attempts (the retry
        # state's): the retrying object and its state reference each other, and a cycle
        # holding the call would keep it and its output alive until a full collection.
        tries: list[Any] = [first, 0]
        return await retrying(self._nth_attempt, call, tool, emit, on_chunk, tries)

    async def _nth_attempt(self, call: ToolCall, tool: Tool, emit: Emit,
                           on_chunk: Callable[[ToolCall, Any], None],
                           tries: list[Any]) -> tuple[Any, bool]:
        tries[1] += 1
        number = tries[1]
        if number == 1:  # it has run: tenacity waits and retries from its failure
            raise _Transient(tries[0])
        return await self._attempt(call, tool, number, emit, on_chunk,
                                   last=number > tool.retries)

    def _retry_delay(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        assert isinstance(exc, _Transient)
        return self.backoff.delay(state.attempt_number, exc.failure)

    @staticmethod
    def _retrying(state: RetryCallState) -> None:
        """Log ``tool.retrying`` before tenacity's wait."""
        exc = state.outcome.exception() if state.outcome else None
        assert isinstance(exc, _Transient)
        assert state.next_action is not None
        call, _, emit = state.args[:3]
        emit(ToolRetrying, call_id=call.call_id, attempt=state.attempt_number,
             delay_ms=round(state.next_action.sleep * 1000), reason=exc.failure.reason,
             error=exc.failure.to_error())

    async def _attempt(
        self, call: ToolCall, tool: Tool, number: int, emit: Emit,
        on_chunk: Callable[[ToolCall, Any], None], *, last: bool,
    ) -> tuple[Any, bool]:
        upstream = self.upstreams.get(tool.upstream) if tool.upstream else None
        if upstream is not None and upstream.would_wait():
            emit(ToolQueued, call_id=call.call_id, upstream=upstream.name)
        # [policy] waiting for the upstream's turn does not count against the timeout.
        async with upstream.slot() if upstream is not None else nullcontext():
            timeout = self.timeout_for(tool) if call.timeout is None else call.timeout
            emit(ToolExecStarted, call_id=call.call_id, attempt=number,
                 timeout_ms=round(timeout * 1000), args=call.resolved_args)
            call.chunks = []
            try:
                if tool.kind is Kind.SYNC:
                    with anyio.move_on_after(self.clock.real(timeout)) as deadline:
                        # The pool lets go of the thread on cancel: no task needed.
                        value = await self.pool.run(
                            functools.partial(tool.fn, **(call.kwargs or {})))
                        self._take(call, number, value, emit=emit, on_chunk=on_chunk)
                    timed_out = deadline.cancelled_caught
                else:
                    take = functools.partial(self._take, call, number, emit=emit,
                                             on_chunk=on_chunk)
                    finished, value = await self._supervised(
                        call, tool, self.clock.real(timeout), take)
                    if finished and tool.kind is Kind.ASYNC:
                        take(value)
                    timed_out = not finished
            except _Stopped:
                # [protocol] a stream stopped by its predicate ends with what it yielded.
                call.stopped = True
                return call.partial_output(), True
            except PredicateFailed as exc:
                raise _Permanent(Failure(False, "error", "predicate_failed", str(exc))) from exc
            except Exception as exc:
                failure = classify(exc)
                raise (_Transient if failure.transient else _Permanent)(failure) from exc
        if timed_out:
            # [protocol] A timed-out call that yielded chunks ends with its partial output.
            partial = bool(call.chunks)
            emit(ToolTimedOut, call_id=call.call_id, attempt=number,
                 timeout_ms=round(timeout * 1000), will_retry=not partial and not last)
            if partial:
                return call.partial_output(), True
            raise _Transient(Failure(True, "timeout", "timeout",
                                     f"{tool.name} timed out after {timeout:g} s"))
        if tool.kind is Kind.STREAM:
            return tool.reduce(call.chunks), False
        return (call.chunks[0] if call.chunks else None), False

    @staticmethod
    def _take_rearming(take: Callable[[Any], None], seconds: float, ended: _Ended,
                       chunk: Any) -> None:
        """``take`` for an ``idle_timeout`` tool: each chunk restarts its deadline."""
        if ended.deadline is not None:
            ended.deadline.deadline = anyio.current_time() + seconds
        take(chunk)

    @staticmethod
    def _take(call: ToolCall, number: int, chunk: Any, *, emit: Emit,
              on_chunk: Callable[[ToolCall, Any], None]) -> None:
        """Log a chunk of attempt ``number`` and hand it to the run.

        Raises:
            UnserializableOutput, EventTooLarge: The chunk cannot be logged (the attempt
                fails permanently with that code).
        """
        event = emit(ToolOutputDelta, call_id=call.call_id, attempt=number,
                     index=len(call.chunks), data=chunk)
        chunk = event.data  # type: ignore[attr-defined]  # its JSON form: results reduce it
        call.chunks.append(chunk)
        on_chunk(call, chunk)
        stop = call.tool.stop_when if call.tool is not None else None
        if stop is not None:
            try:
                hit = stop(chunk)
            except Exception as exc:
                raise PredicateFailed(call.name, "stop_when", exc) from exc
            if hit:
                raise _Stopped

    async def _supervised(self, call: ToolCall, tool: Tool, seconds: float,
                          take: Callable[[Any], None]) -> tuple[bool, Any]:
        """Run a coroutine or streaming tool's body as a supervised task and wait at most
        ``seconds`` (real) for it: ``(True, value)`` (a stream's value is None: its chunks
        went to ``take``), or ``(False, None)`` when the time ran out.

        Raises what the body raised. The body is stopped (abandoned past the grace)
        before this returns, also when the call is cancelled.
        """
        ended = _Ended()
        if tool.idle_timeout:
            take = functools.partial(self._take_rearming, take, seconds, ended)
        label = f"{tool.name} ({call.call_id})"
        task = self.supervisor.spawn(
            functools.partial(_body, tool, call.kwargs or {}, take, ended), name=label)
        try:
            with anyio.move_on_after(seconds) as ended.deadline:
                await task.wait()  # (the body settles `ended` as its last step)
        finally:
            ended.closed = True
            await self.supervisor.stop(task, label)
        if ended.error is not None:
            raise ended.error
        return ended.finished, ended.value
