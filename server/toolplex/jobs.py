"""Long-running tools: jobs finished by a worker, a signed webhook, a person, or polling.

The call ends at once with ``job.pending`` and ``tool.result`` ``{"job_id": ...,
"status": "pending"}``; the run moves on. When the job ends, ``job.completed``
is logged and, once the session has no active run, a new run starts with
``trigger: "job"`` whose input carries the result. Jobs live in the
:class:`~toolplex.store.Store`, so a completion arriving after a restart still
finds its job, and is delivered exactly once.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import anyio

from .calls import Emit, Executor, Outcome, ToolCall
from .events import (
    BaseEvent,
    JobCompleted,
    JobPending,
    JobProgress,
    ToolCircuitOpen,
    ToolExecStarted,
    ToolOutputDelta,
    checked,
    error_dict,
)
from .exceptions import EventTooLarge, UnserializableOutput
from .policy import classify
from .session import Session, new_id
from .store import Store
from .tools import Tool, tool

logger = logging.getLogger("toolplex.jobs")

StartTurn = Callable[[Session, list[dict[str, Any]]], None]
"""``start_turn(session, messages)``: start a ``trigger: "job"`` run with these inputs
(the agent's; the jobs layer never imports the runner)."""
T = TypeVar("T")



class JobStore(Protocol):
    """Where jobs (and the sessions they belong to) live: :class:`~toolplex.store.Store`
    (SQLite) in one process, a backend's shared store across processes."""

    shared: bool
    """Other processes change it too: nothing about it may be cached."""

    def save_session(self, session_id: str, token_hash: str, history: list[dict[str, Any]],
                     head_seq: int) -> None:
        """Write a session's history and log head."""

    def sessions(self) -> list[dict[str, Any]]:
        """The sessions to hold in memory at startup."""

    def insert_job(self, job: dict[str, Any]) -> None:
        """Store a new job row."""

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job row, JSON fields decoded."""

    def jobs(self, *, session_id: str | None = None, open_only: bool = False,
             undelivered: bool = False) -> list[dict[str, Any]]:
        """Jobs matching the filters, oldest first."""

    def progress(self, job_id: str, progress: float, total: float | None,
                 message: str | None) -> None:
        """Record a job's progress."""

    def finish(self, job_id: str, status: str, output: Any = None,
               error: dict[str, Any] | None = None) -> bool:
        """End an open job; False when it had already ended."""

    def mark_delivered(self, job_ids: list[str]) -> None:
        """The jobs' completions reached a run: never hand them over again."""

    def deliver_on_start(self, session_id: str, job_ids: list[str]) -> None:
        """Mark the jobs delivered once the session's job turn has started (its
        ``run.started`` is stored), or now."""

    def first_webhook(self, webhook_id: str, job_id: str) -> bool:
        """True the first time ``webhook_id`` is seen; a replay returns False."""

    def forget_webhook(self, webhook_id: str) -> None:
        """Un-see ``webhook_id``: its delivery was not applied, and a retry must be."""

    def delete_session(self, session_id: str) -> None:
        """Forget a stored session."""

    def hold_workers(self, owner: str, job_ids: list[str], ttl: float) -> None:
        """Say that ``owner`` (a process) still runs these worker jobs, for ``ttl`` seconds
        (a shared store; one process's file needs none: its restart recovers them)."""

    def claim_lost_workers(self, owner: str, ttl: float) -> list[dict[str, Any]]:
        """Running worker jobs nobody holds any more (their process died), now held by
        ``owner``: each is claimed by one process only."""


VIA = {"job": "worker", "auto": "worker", "webhook": "webhook", "human": "human"}
FINAL = ("succeeded", "failed", "cancelled", "expired")


@dataclass(eq=False)
class Job:
    """The handle a long-running tool gets as its ``job`` parameter.

    Example::

        @tool(mode="webhook")
        async def start_export(table: str, job: Job) -> None:
            await partner.submit(table, callback_url=job.callback_url)
    """

    id: str
    session_id: str
    call_id: str
    tool: str
    via: str
    callback_url: str
    _manager: JobManager = field(repr=False)

    async def progress(self, progress: float, total: float | None = None,
                       message: str | None = None) -> None:
        """Report progress: logged as ``job.progress`` and kept for polling."""
        await self._manager.progress_now(self.id, progress, total, message)

    def complete(self, output: Any) -> bool:
        """Finish the job successfully. False when it had already ended."""
        return self._manager.complete(self.id, "succeeded", output=output)

    def fail(self, message: str, code: str = "job_failed") -> bool:
        """Finish the job as failed. False when it had already ended."""
        return self._manager.complete(self.id, "failed", error=error_dict(code, message))


class JobManager:
    """Creates, finishes and delivers jobs for one agent.

    Args:
        store: Where jobs live (default: in memory).
        ttl: Seconds a job may stay open before it ends ``expired``.
        callback_base: The public base URL webhooks are posted to.
    """

    def __init__(self, store: JobStore | None = None, *, ttl: float = 24 * 3600.0,
                 callback_base: str = "http://127.0.0.1:8000") -> None:
        self.store: JobStore = store or Store()
        """Where jobs live; a backend changes it with :meth:`use`."""
        self.ttl = ttl
        self.worker_id = new_id("w")
        """Names this process's hold on the worker jobs it runs (a shared store)."""
        self.worker_ttl = 10.0
        """Seconds a worker job's hold lasts unrenewed: how long the job of a process
        that died stays running before another process takes it over."""
        self._held: set[str] = set()
        self.callback_base = callback_base.rstrip("/")
        self.callback_token: Callable[[str], str] | None = None
        """The per-job token a ``callback_url`` carries (``?token=``), when the server
        binds webhook deliveries to their job."""
        self.max_event_bytes: int | None = 1 << 20
        """A job's output larger than this as JSON fails the job ``output_too_large``."""
        self.sessions: dict[str, Session] = {}
        """Sessions in memory, by id, that completions are delivered to."""
        self._find: Callable[[str], Session | None] = self.sessions.get
        self._deliver: Callable[[Session], None] = self._deliver_here
        self._deliver_now: Callable[[Session], Awaitable[None]] | None = None
        self._bound: tuple[Mapping[str, Tool], Executor, StartTurn] | None = None
        self.resumers: dict[str, Callable[[Job, dict[str, Any]], Awaitable[None]]] = {}
        """Who polls an adopted ``poll`` job, by the ``resume`` key of its state: after a
        restart, :meth:`recover` hands them the job again."""
        self.answerers: dict[str, Callable[[Job, dict[str, Any], Any], Awaitable[None]]] = {}
        """Who takes a person's answer to an adopted ``human`` job, by its ``resume`` key
        (an MCP server asking for input is called again with it)."""
        self._answering: set[str] = set()
        # Which sessions have open or undelivered jobs, so a step asks the store only
        # when there may be something to find.
        self._open: set[str] = set()
        self._waiting: set[str] = set()
        self._load()

    def bind(self, tools: Mapping[str, Tool], executor: Executor, start_turn: StartTurn) -> None:
        """Attach to an agent: the tools jobs belong to, the executor their bodies run on,
        and how to start the turn that delivers their completions."""
        self._bound = (tools, executor, start_turn)

    @property
    def executor(self) -> Executor:
        """The executor job bodies run on (the agent's)."""
        assert self._bound is not None, "JobManager.bind(...) first (Agent does it)"
        return self._bound[1]

    @property
    def tools(self) -> Mapping[str, Tool]:
        """The agent's tools, by name."""
        assert self._bound is not None, "JobManager.bind(...) first (Agent does it)"
        return self._bound[0]

    def attach(self, session: Session) -> None:
        """Make a session reachable for completions (and deliver what waits for it)."""
        self.sessions[session.id] = session
        self.pump(session)

    @property
    def shared(self) -> bool:
        """The store is shared with other processes: nothing about it may be cached."""
        return self.store.shared

    def open_jobs(self, session: Session) -> list[dict[str, Any]]:
        """The session's jobs that have not ended."""
        if not self.shared and session.id not in self._open:
            return []
        rows = self.store.jobs(session_id=session.id, open_only=True)
        if not rows:
            self._open.discard(session.id)
        return rows

    async def any_open(self, session: Session) -> bool:
        """Whether a job of the session has not ended (what a run asks before each model
        step). A shared store is asked from a worker thread: a stalled Redis must not
        freeze every other stream of the process while the question waits."""
        if not self.shared:
            return bool(self.open_jobs(session))
        return bool(await self.ask(functools.partial(self.store.jobs, session_id=session.id,
                                                     open_only=True)))

    def use(self, store: JobStore, *, sessions: Callable[[str], Session | None] | None = None,
            deliver: Callable[[Session], None] | None = None,
            deliver_now: Callable[[Session], Awaitable[None]] | None = None) -> None:
        """Keep jobs in ``store`` from now on (a backend's).

        Args:
            sessions: Finds the session a completion is logged to (default: those this
                manager has seen; several processes load it from the shared store).
            deliver: Starts a session's turn for its waiting completions (default: the
                agent's run once the session is idle; several processes: whichever takes
                the session's run lease).
            deliver_now: ``deliver``, returning once the turn has started (what
                :meth:`complete_now` awaits; default: ``deliver``).
        """
        self.store = store
        if sessions is not None:
            self._find = sessions
        if deliver is not None:
            self._deliver = deliver
        self._deliver_now = deliver_now
        self._load()

    def _load(self) -> None:
        """Learn from the store which sessions have open or undelivered jobs."""
        if self.shared:
            return
        self._open = {r["session_id"] for r in self.store.jobs(open_only=True)}
        self._waiting = {r["session_id"] for r in self.store.jobs(undelivered=True)}

    def _handle(self, row: dict[str, Any]) -> Job:
        url = f"{self.callback_base}/v1/webhooks/{row['id']}"
        if self.callback_token is not None:
            url += f"?token={self.callback_token(row['id'])}"
        return Job(row["id"], row["session_id"], row["call_id"], row["tool"], row["via"],
                   url, self)

    def _row(self, session: Session, call: ToolCall, tool: Tool, status: str,
             via: str | None, args: dict[str, Any] | None) -> dict[str, Any]:
        now = time.time()
        return {"id": new_id("j"), "session_id": session.id, "call_id": call.call_id,
                "tool": tool.name, "via": via or VIA[tool.mode],
                "args": (call.kwargs or {}) if args is None else args,
                "status": status, "created": now, "expires": now + self.ttl}

    def _insert(self, row: dict[str, Any]) -> None:
        if row["via"] == "worker":  # held before it exists: no sweeper may claim it
            self.store.hold_workers(self.worker_id, [row["id"]], self.worker_ttl)
        self.store.insert_job(row)

    def _created(self, session: Session, row: dict[str, Any]) -> Job:
        """A job just stored: renew its worker hold from now on, know its session open."""
        if row["via"] == "worker":
            self._held.add(row["id"])  # (its hold is in the store already)
        self.sessions[session.id] = session
        self._open.add(session.id)
        return self._handle(row)

    def _create(self, session: Session, call: ToolCall, tool: Tool, status: str,
                *, via: str | None = None, args: dict[str, Any] | None = None) -> Job:
        row = self._row(session, call, tool, status, via, args)
        self._insert(row)
        return self._created(session, row)

    async def _create_now(self, session: Session, call: ToolCall, tool: Tool,
                          status: str) -> Job:
        """:meth:`_create` on a run's path: a shared store is written from a worker
        thread, so a stalled Redis does not stand the loop still."""
        row = self._row(session, call, tool, status, None, None)
        await self.ask(self._insert, row)
        return self._created(session, row)

    def _work_timeout(self, tool: Tool) -> float:
        """What bounds a job's work: the tool's ``timeout=`` if it set one, else the TTL."""
        return min(tool.timeout, self.ttl)

    def _work_call(self, call: ToolCall, kwargs: dict[str, Any], timeout: float) -> ToolCall:
        """The executor's call for a job's body: the model's call, run on its own (the
        model's call ends pending; nothing of this one reaches the run's log)."""
        return ToolCall(call_id=call.call_id, name=call.name, index=call.index,
                        model_call_id=call.model_call_id, message_id=call.message_id,
                        run_id=call.run_id, args_text=call.args_text, kwargs=kwargs,
                        tool=call.tool, timeout=timeout)

    def _kwargs(self, tool: Tool, kwargs: dict[str, Any], job: Job) -> dict[str, Any]:
        return {**kwargs, "job": job} if tool.wants_job else dict(kwargs)

    async def run_call(self, call: ToolCall, session: Session, emit: Emit) -> Outcome:
        """Execute a call of a job-mode tool: it ends pending (or inline, for ``auto``).

        Every body runs on the executor, as an inline call's does: its timeout, transient
        retries with backoff, the session's breaker and the upstream limit apply.
        """
        tool = call.tool
        assert tool is not None
        assert call.kwargs is not None
        if self.executor.refuse_open_circuit(call, session, emit):
            assert call.outcome is not None
            return call.outcome
        if tool.mode == "auto":
            return await self._auto(call, tool, session, emit)
        job = await self._create_now(session, call, tool,
                                     "running" if tool.mode == "job" else "pending")
        kwargs = self._kwargs(tool, call.kwargs, job)
        emit(JobPending, call_id=call.call_id, job_id=job.id, via=job.via)
        if tool.mode == "job":
            work = self._work_call(call, kwargs, self._work_timeout(tool))
            self.executor.supervisor.spawn(functools.partial(self._work, job, work, session))
        else:
            # The body starts the external work (or notifies a person), under the tool's
            # own timeout; if that fails, the call fails and the job with it.
            starter = self._work_call(call, kwargs, self.executor.timeout_for(tool))
            outcome = await self.executor.run(starter, session, _circuit_only(emit), _ignore)
            if outcome.kind != "result" or outcome.failed:
                error = outcome.error or error_dict(
                    "timeout", f"{tool.name} did not start its job in time")
                self.complete(job.id, "failed", error=error, deliver=False)
                return self.executor.fail(call, emit, error)
        return self._pending(call, emit, job.id)

    def adopt(self, call: ToolCall, session: Session, emit: Emit, *,
              via: Literal["poll", "human"], state: dict[str, Any],
              message: str | None = None) -> dict[str, Any]:
        """Turn a call that is running inline into a job, from inside its body (a server
        answered with a task to poll, or asked a person for input).

        ``state`` is stored with the job and must name, under ``"resume"``, the key of a
        :attr:`resumers` (``poll``) or :attr:`answerers` (``human``) entry. Logs
        ``job.pending`` (and ``job.progress`` with ``message``); the body returns the
        pending output this gives, so its call ends like any job's.
        """
        assert call.tool is not None
        job = self._create(session, call, call.tool, "running" if via == "poll" else "pending",
                           via=via, args=state)
        emit(JobPending, call_id=call.call_id, job_id=job.id, via=via)
        if message is not None:
            self.progress(job.id, 0, None, message)
        logger.info("%s became job %s (%s)", call.tool.name, job.id, via,
                    extra={"session_id": session.id, "call_id": call.call_id, "job_id": job.id})
        return {"job_id": job.id, "status": "pending"}

    def handle(self, job_id: str) -> Job | None:
        """The :class:`Job` handle of a stored job (None when there is none)."""
        row = self.store.job(job_id)
        return None if row is None else self._handle(row)

    async def _auto(self, call: ToolCall, tool: Tool, session: Session, emit: Emit) -> Outcome:
        """Run inline; past the budget, become a job without restarting the work."""
        budget = tool.budget or 3.0
        work = self._work_call(call, dict(call.kwargs or {}), self._work_timeout(tool))
        done = anyio.Event()
        promoted: list[Job] = []

        async def run() -> None:
            outcome = await self.executor.run(work, session, _unlogged, _ignore)
            done.set()
            if promoted:
                await self._finish(promoted[0], work, outcome)

        emit(ToolExecStarted, call_id=call.call_id, attempt=1, timeout_ms=round(budget * 1000),
             args=call.resolved_args)
        self.executor.supervisor.spawn(run)
        with anyio.move_on_after(self.executor.clock.real(budget)):
            await done.wait()
        if done.is_set():
            outcome = work.outcome
            assert outcome is not None
            if outcome.kind == "error" and outcome.error is not None:
                return self.executor.fail(call, emit, outcome.error)
            output = {} if outcome.output is None else outcome.output
            emit(ToolOutputDelta, call_id=call.call_id, attempt=1, index=0, data=output)
            return self.executor.succeed(call, emit, output, partial=outcome.partial)
        # [jobs] the budget ran out: the same work goes on as a job.
        job = await self._create_now(session, call, tool, "running")
        promoted.append(job)
        emit(JobPending, call_id=call.call_id, job_id=job.id, via=job.via)
        logger.info("%s promoted to job %s after %.1f s", tool.name, job.id, budget,
                    extra={"session_id": session.id, "call_id": call.call_id, "job_id": job.id})
        return self._pending(call, emit, job.id)

    async def _work(self, job: Job, work: ToolCall, session: Session) -> None:
        await self._finish(job, work, await self.executor.run(work, session, _unlogged, _ignore))

    async def _finish(self, job: Job, work: ToolCall, outcome: Outcome) -> None:
        """End a job as its work's outcome says (a shared store written from a worker
        thread: :meth:`complete_now` without waiting for the turn)."""
        output: Any = None
        error: dict[str, Any] | None = None
        if outcome.kind == "result" and not outcome.failed:
            status, output = "succeeded", outcome.output
        elif outcome.kind == "result":  # timed out after yielding: what it had, as failed
            status, output = "failed", outcome.output
            error = error_dict("timeout", f"{job.tool} timed out after {work.timeout or 0.0:g} s")
        elif outcome.kind == "error":
            status, error = "failed", outcome.error
        else:
            status, error = "cancelled", error_dict("cancelled", f"{job.tool} was cancelled")
        # Shielded: a job cancelled by shutdown still records how it ended.
        with anyio.CancelScope(shield=True):
            await self.complete_now(job.id, status, output=output, error=error, wait=False)

    def _pending(self, call: ToolCall, emit: Emit, job_id: str) -> Outcome:
        return self.executor.succeed(call, emit, {"job_id": job_id, "status": "pending"})

    def progress(self, job_id: str, progress: float, total: float | None = None,
                 message: str | None = None) -> None:
        """Record and log a job's progress."""
        self._progressed(self._record_progress(job_id, progress, total, message),
                         job_id, progress, total, message)

    async def progress_now(self, job_id: str, progress: float, total: float | None = None,
                           message: str | None = None) -> None:
        """:meth:`progress` from a job's body: a shared store is written from a worker
        thread."""
        row = await self.ask(self._record_progress, job_id, progress, total, message)
        self._progressed(row, job_id, progress, total, message)

    def _record_progress(self, job_id: str, progress: float, total: float | None,
                         message: str | None) -> dict[str, Any] | None:
        """Store a job's progress: its row, or None when it has ended (nothing stored)."""
        row = self.store.job(job_id)
        if row is None or row["status"] in FINAL:
            return None
        self.store.progress(job_id, progress, total, message)
        return row

    def _progressed(self, row: dict[str, Any] | None, job_id: str, progress: float,
                    total: float | None, message: str | None) -> None:
        if row is None:
            return
        session = self._find(row["session_id"])
        if session is not None:
            session.log.append(JobProgress(job_id=job_id, progress=progress, total=total,
                                           message=message))

    def complete(self, job_id: str, status: str, *, output: Any = None,
                 error: dict[str, Any] | None = None, deliver: bool = True) -> bool:
        """End a job once: log ``job.completed`` and start its turn when the session is idle.

        Returns:
            False when the job had already ended (nothing changes).
        """
        if self._asks(job_id, status) and self._answered(self.store.job(job_id), output):
            return True
        status, output, error = self._checked(job_id, status, output, error)
        row = self._record_end(job_id, status, output, error, deliver)
        if row is None:
            return False
        session = self._ended(row, status, output, error, deliver)
        if session is not None:
            self.pump(session)
        return True

    def _record_end(self, job_id: str, status: str, output: Any, error: dict[str, Any] | None,
                    deliver: bool) -> dict[str, Any] | None:
        """Store a job's end: its row, or None when it had already ended."""
        if not self.store.finish(job_id, status, output, error):
            return None
        row = self.store.job(job_id)
        if not deliver:
            self.store.mark_delivered([job_id])
        return row

    async def complete_now(self, job_id: str, status: str, *, output: Any = None,
                           error: dict[str, Any] | None = None, wait: bool = True) -> bool:
        """:meth:`complete` for a request handler or a job's own work: a shared store is
        asked from worker threads (a stalled store must not freeze the event loop). With
        ``wait`` (a request handler, whose job's session is held in memory), the turn the
        completion starts has started when it returns; without (a job's work), it is
        pumped as :meth:`complete` does.

        Returns:
            False when the job had already ended (nothing changes).
        """
        if self._asks(job_id, status) and self._answered(await self.ask(self.store.job, job_id),
                                                         output):
            return True
        status, output, error = self._checked(job_id, status, output, error)
        row = await self.ask(self._record_end, job_id, status, output, error, True)
        if row is None:
            return False
        session = self._ended(row, status, output, error, True)
        if session is not None:
            if wait and self._deliver_now is not None:
                await self._deliver_now(session)
            else:
                self.pump(session)
        return True

    async def ask(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, a method of the store: from a worker thread when the store is
        shared (a stalled Redis must not freeze the event loop); else here, as always."""
        if self.shared:
            return await anyio.to_thread.run_sync(call, *args)
        return call(*args)

    def _asks(self, job_id: str, status: str) -> bool:
        """Whether a person's answer to the job may go back to who asked."""
        return bool(self.answerers) and status == "succeeded" and job_id not in self._answering

    def _answered(self, row: dict[str, Any] | None, output: Any) -> bool:
        """Hand a person's answer to an adopted job to who asked; False when it is not one."""
        answer = None
        if row is not None and row["via"] == "human" and row["status"] == "pending":
            answer = self.answerers.get(row["args"].get("resume", ""))
        if answer is None or row is None:
            return False
        # [jobs] a person's answer to an adopted job goes back to who asked; the
        # job ends when that says so (with the final result, or failed).
        self._answering.add(row["id"])
        self.executor.supervisor.spawn(functools.partial(self._answer, answer, row, output))
        return True

    def _checked(self, job_id: str, status: str, output: Any,
                 error: dict[str, Any] | None) -> tuple[str, Any, dict[str, Any] | None]:
        # [protocol] valid JSON before it enters the log (and the store): an output with
        # no JSON form, or over the bound on one event, fails the job instead.
        try:
            event, _ = checked(JobCompleted(job_id=job_id, status=status,  # type: ignore[arg-type]
                                            output=output, error=error), self.max_event_bytes)
            output = event.output  # type: ignore[attr-defined]
        except (UnserializableOutput, EventTooLarge) as exc:
            status, output = "failed", None
            error = classify(exc).to_error()
        return status, output, error

    def _ended(self, row: dict[str, Any] | None, status: str, output: Any,
               error: dict[str, Any] | None, deliver: bool) -> Session | None:
        """A job just ended in the store: log it; its session, to pump."""
        assert row is not None
        self._held.discard(row["id"])
        if deliver:
            self._waiting.add(row["session_id"])
        session = self._find(row["session_id"])
        if session is not None:
            session.log.append(JobCompleted(job_id=row["id"], status=status,  # type: ignore[arg-type]
                                            output=output, error=error))
        return session

    async def _answer(self, answer: Callable[[Job, dict[str, Any], Any], Awaitable[None]],
                      row: dict[str, Any], output: Any) -> None:
        try:
            await answer(self._handle(row), row["args"], output)
        except Exception as exc:
            logger.exception("answering job %s failed", row["id"])
            self.complete(row["id"], "failed", error=classify(exc).to_error())
        finally:
            self._answering.discard(row["id"])

    def pump(self, session: Session) -> None:
        """Start a ``trigger: "job"`` run for completions not yet delivered, if idle."""
        self._deliver(session)

    def _deliver_here(self, session: Session) -> None:
        # [protocol] a completion waits for the session's active run to end; it is
        # marked delivered as its run starts, so it is never lost nor handled twice.
        if session.runs or self._bound is None:
            return
        if session.id not in self._waiting:
            return
        rows = self.store.jobs(session_id=session.id, undelivered=True)
        self._waiting.discard(session.id)
        if not rows:
            return
        self.store.deliver_on_start(session.id, [r["id"] for r in rows])
        self._bound[2](session, [completion_message(r) for r in rows])

    def expire(self, now: float | None = None,
               open_jobs: list[dict[str, Any]] | None = None) -> list[str]:
        """End open jobs past their TTL with status ``expired`` (of ``open_jobs`` when
        given: the store's open jobs, read already)."""
        now = time.time() if now is None else now
        if open_jobs is None:
            open_jobs = self.store.jobs(open_only=True)
        gone = [r["id"] for r in open_jobs if r["expires"] <= now]
        for job_id in gone:
            self.complete(job_id, "expired", error=error_dict(
                "expired", "the job did not complete before its time-to-live"))
        return gone

    def recover(self) -> None:
        """After a restart: worker jobs that were running re-run or fail, per their tool.

        Not with a shared store: its running jobs belong to processes still alive.
        """
        if self.shared:
            return
        for row in self.store.jobs(open_only=True):
            if row["via"] == "poll":
                resume = self.resumers.get(row["args"].get("resume", ""))
                if resume is not None:
                    self.executor.supervisor.spawn(
                        functools.partial(resume, self._handle(row), row["args"]))
                else:
                    self.complete(row["id"], "failed", error=error_dict(
                        "interrupted", "the server restarted and nothing polls this job now"))
                continue
            if row["via"] == "worker":
                self._resume(row, "the server restarted while the job was running")

    def _resume(self, row: dict[str, Any], why: str) -> None:
        """A worker job whose body stopped with its process: run it again here when its
        tool says ``rerun_on_restart``, else end it ``failed`` ``interrupted``."""
        tool_ = self.tools.get(row["tool"])
        if tool_ is not None and tool_.rerun_on_restart:
            job = self._handle(row)
            self._held.add(job.id)
            # (a session that expired meanwhile: its breaker went with it)
            session = self._find(row["session_id"]) or Session(id=row["session_id"])
            work = ToolCall(call_id=row["call_id"], name=tool_.name, index=0,
                            model_call_id="", message_id="", run_id="",
                            kwargs=self._kwargs(tool_, row["args"], job), tool=tool_,
                            timeout=self._work_timeout(tool_))
            self.executor.supervisor.spawn(functools.partial(self._work, job, work, session))
        else:
            self.complete(row["id"], "failed", error=error_dict(
                "interrupted", why))

    def _keep_workers(self) -> None:
        """Shared store: renew this process's hold on its running worker jobs, and take
        over those of a process that died (their hold ran out)."""
        self.store.hold_workers(self.worker_id, list(self._held), self.worker_ttl)
        for row in self.store.claim_lost_workers(self.worker_id, self.worker_ttl):
            logger.warning("job %s: the process running it stopped", row["id"],
                           extra={"session_id": row["session_id"], "job_id": row["id"]})
            self._resume(row, "the process running the job stopped")

    async def serve(self, interval: float = 1.0) -> None:
        """Expire jobs past their TTL (and, on a shared store, keep worker jobs held and
        take over lost ones) until cancelled."""
        while True:
            try:
                # Read from a worker thread: a stalled store must not freeze the loop.
                open_jobs = await anyio.to_thread.run_sync(
                    functools.partial(self.store.jobs, open_only=True))
                self.expire(open_jobs=open_jobs)
                if self.shared:
                    self._keep_workers()
            except Exception as exc:  # a store that is briefly unreachable: try again later
                logger.warning("job expiry skipped: %s", exc)
            await anyio.sleep(min(interval, self.worker_ttl / 3))

    def check_tool(self, session: Session) -> Tool:
        """The built-in ``check_job`` tool, scoped to one session's jobs."""

        @tool(name="check_job", retries=0)
        async def check_job(job_id: str) -> dict[str, Any]:
            """Check a long-running job: its status, progress and, once done, its result.

            Args:
                job_id: The job_id a pending tool result gave you.
            """
            row = self.store.job(job_id)
            if row is None or row["session_id"] != session.id:
                raise LookupError(f"no job {job_id!r} in this conversation")
            return status_of(row)

        return check_job


def status_of(row: dict[str, Any]) -> dict[str, Any]:
    """A job's public status: what polling and ``check_job`` return (no nulls)."""
    keys = ("status", "via", "tool", "progress", "total", "message", "output", "error")
    out = {"job_id": row["id"], **{k: row[k] for k in keys if row.get(k) is not None}}
    out["status"] = "pending" if row["status"] in ("pending", "running") else row["status"]
    return out


def completion_message(row: dict[str, Any]) -> dict[str, Any]:
    """The model input that tells the agent a job ended."""
    result = {"job_id": row["id"], "tool": row["tool"], "status": row["status"]}
    if row.get("output") is not None:
        result["output"] = row["output"]
    if row.get("error") is not None:
        result["error"] = row["error"]
    text = f"Job update: {row['tool']} {row['status']}. " + json.dumps(result, default=str)
    return {"role": "user", "content": text}


def _unlogged(cls: type[BaseEvent], **fields: Any) -> BaseEvent:
    """The emitter of a job's work in the background: its call has ended (pending), so
    nothing of it reaches the log; the job's own events say how it goes."""
    return cls(**fields)


def _circuit_only(emit: Emit) -> Emit:
    """The emitter of a webhook or human job's starting body: the run logs only an open
    circuit (the call itself ends pending, or with the body's error)."""

    def forward(cls: type[BaseEvent], **fields: Any) -> BaseEvent:
        return emit(cls, **fields) if cls is ToolCircuitOpen else cls(**fields)

    return forward


def _ignore(call: ToolCall, chunk: Any) -> None:
    """A job's chunks go nowhere but its result."""
