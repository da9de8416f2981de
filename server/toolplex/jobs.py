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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from .calls import Emit, Executor, Outcome, ToolCall
from .events import (
    JobCompleted,
    JobPending,
    JobProgress,
    ToolExecStarted,
    ToolFailed,
    ToolOutputDelta,
    ToolResult,
    error_dict,
)
from .policy import classify
from .session import Session, new_id
from .store import Store
from .tools import Kind, Tool, tool

logger = logging.getLogger("toolplex.jobs")

StartTurn = Callable[[Session, list[dict[str, Any]]], None]
"""``start_turn(session, messages)``: start a ``trigger: "job"`` run with these inputs
(the agent's; the jobs layer never imports the runner)."""



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

    def first_webhook(self, webhook_id: str, job_id: str) -> bool:
        """True the first time ``webhook_id`` is seen; a replay returns False."""

    def forget_webhook(self, webhook_id: str) -> None:
        """Un-see ``webhook_id``: its delivery was not applied, and a retry must be."""

    def delete_session(self, session_id: str) -> None:
        """Forget a stored session."""


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
        self._manager.progress(self.id, progress, total, message)

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
        self.callback_base = callback_base.rstrip("/")
        self.callback_token: Callable[[str], str] | None = None
        """The per-job token a ``callback_url`` carries (``?token=``), when the server
        binds webhook deliveries to their job."""
        self.sessions: dict[str, Session] = {}
        """Sessions in memory, by id, that completions are delivered to."""
        self._find: Callable[[str], Session | None] = self.sessions.get
        self._deliver: Callable[[Session], None] = self._deliver_here
        self._bound: tuple[Mapping[str, Tool], Executor, StartTurn] | None = None
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

    def use(self, store: JobStore, *, sessions: Callable[[str], Session | None] | None = None,
            deliver: Callable[[Session], None] | None = None) -> None:
        """Keep jobs in ``store`` from now on (a backend's).

        Args:
            sessions: Finds the session a completion is logged to (default: those this
                manager has seen; several processes load it from the shared store).
            deliver: Starts a session's turn for its waiting completions (default: the
                agent's run once the session is idle; several processes: whichever takes
                the session's run lease).
        """
        self.store = store
        if sessions is not None:
            self._find = sessions
        if deliver is not None:
            self._deliver = deliver
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

    def _create(self, session: Session, call: ToolCall, tool: Tool, status: str) -> Job:
        now = time.time()
        row = {"id": new_id("j"), "session_id": session.id, "call_id": call.call_id,
               "tool": tool.name, "via": VIA[tool.mode], "args": call.kwargs or {},
               "status": status, "created": now, "expires": now + self.ttl}
        self.store.insert_job(row)
        self.sessions[session.id] = session
        self._open.add(session.id)
        return self._handle(row)

    async def run_call(self, call: ToolCall, session: Session, emit: Emit,
                       limit: float) -> Outcome:
        """Execute a call of a job-mode tool: it ends pending (or inline, for ``auto``)."""
        tool = call.tool
        assert tool is not None
        assert call.kwargs is not None
        if tool.mode == "auto":
            return await self._auto(call, tool, session, emit)
        job = self._create(session, call, tool, "running" if tool.mode == "job" else "pending")
        kwargs = {**call.kwargs, "job": job} if tool.wants_job else dict(call.kwargs)
        emit(JobPending, call_id=call.call_id, job_id=job.id, via=job.via)
        if tool.mode == "job":
            self.executor.supervisor.spawn(functools.partial(self._work, job, tool, kwargs))
        else:
            # The body starts the external work (or notifies a person); if that fails,
            # the call fails and the job with it.
            try:
                with anyio.fail_after(self.executor.clock.real(limit)):
                    await _call(tool, kwargs, self.executor)
            except Exception as exc:
                failure = classify(exc)
                self.complete(job.id, "failed", error=failure.to_error(), deliver=False)
                emit(ToolFailed, call_id=call.call_id, error=failure.to_error())
                call.outcome = Outcome("error", error=failure.to_error())
                return call.outcome
        return _pending(call, emit, job.id)

    async def _auto(self, call: ToolCall, tool: Tool, session: Session, emit: Emit) -> Outcome:
        """Run inline; past the budget, become a job without restarting the work."""
        budget = tool.budget or 3.0
        state: dict[str, Any] = {"done": anyio.Event(), "job": None}
        kwargs = dict(call.kwargs or {})

        async def work() -> None:
            try:
                state["output"] = await _call(tool, kwargs, self.executor)
            except Exception as exc:
                state["error"] = classify(exc).to_error()
            state["done"].set()
            job: Job | None = state["job"]
            if job is not None:
                if "error" in state:
                    self.complete(job.id, "failed", error=state["error"])
                else:
                    self.complete(job.id, "succeeded", output=state.get("output"))

        emit(ToolExecStarted, call_id=call.call_id, attempt=1, timeout_ms=round(budget * 1000),
             args=call.resolved_args)
        self.executor.supervisor.spawn(work)
        with anyio.move_on_after(self.executor.clock.real(budget)):
            await state["done"].wait()
        if state["done"].is_set():
            if "error" in state:
                emit(ToolFailed, call_id=call.call_id, error=state["error"])
                call.outcome = Outcome("error", error=state["error"])
                return call.outcome
            output = {} if state.get("output") is None else state["output"]
            emit(ToolOutputDelta, call_id=call.call_id, attempt=1, index=0, data=output)
            emit(ToolResult, call_id=call.call_id, output=output, partial=False)
            call.outcome = Outcome("result", output=output)
            return call.outcome
        # [jobs] the budget ran out: the same work goes on as a job.
        job = self._create(session, call, tool, "running")
        state["job"] = job
        emit(JobPending, call_id=call.call_id, job_id=job.id, via=job.via)
        logger.info("%s promoted to job %s after %.1f s", tool.name, job.id, budget,
                    extra={"session_id": session.id, "call_id": call.call_id, "job_id": job.id})
        return _pending(call, emit, job.id)

    async def _work(self, job: Job, tool: Tool, kwargs: dict[str, Any]) -> None:
        try:
            output = await _call(tool, kwargs, self.executor)
        except Exception as exc:
            self.complete(job.id, "failed", error=classify(exc).to_error())
        else:
            self.complete(job.id, "succeeded", output=output)

    def progress(self, job_id: str, progress: float, total: float | None = None,
                 message: str | None = None) -> None:
        """Record and log a job's progress."""
        row = self.store.job(job_id)
        if row is None or row["status"] in FINAL:
            return
        self.store.progress(job_id, progress, total, message)
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
        if not self.store.finish(job_id, status, output, error):
            return False
        row = self.store.job(job_id)
        assert row is not None
        if not deliver:
            self.store.mark_delivered([job_id])
        else:
            self._waiting.add(row["session_id"])
        session = self._find(row["session_id"])
        if session is not None:
            session.log.append(JobCompleted(job_id=job_id, status=status, output=output,  # type: ignore[arg-type]
                                            error=error))
            self.pump(session)
        return True

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
        self.store.mark_delivered([r["id"] for r in rows])
        self._bound[2](session, [completion_message(r) for r in rows])

    def expire(self, now: float | None = None) -> list[str]:
        """End open jobs past their TTL with status ``expired``."""
        now = time.time() if now is None else now
        gone = [r["id"] for r in self.store.jobs(open_only=True) if r["expires"] <= now]
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
            if row["via"] != "worker":
                continue
            tool_ = self.tools.get(row["tool"])
            if tool_ is not None and tool_.rerun_on_restart:
                job = self._handle(row)
                kwargs = {**row["args"], "job": job} if tool_.wants_job else dict(row["args"])
                self.executor.supervisor.spawn(
                    functools.partial(self._work, job, tool_, kwargs))
            else:
                self.complete(row["id"], "failed", error=error_dict(
                    "interrupted", "the server restarted while the job was running"))

    async def serve(self, interval: float = 1.0) -> None:
        """Expire jobs past their TTL until cancelled."""
        while True:
            try:
                self.expire()
            except Exception as exc:  # a store that is briefly unreachable: try again later
                logger.warning("job expiry skipped: %s", exc)
            await anyio.sleep(interval)

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


def _pending(call: ToolCall, emit: Emit, job_id: str) -> Outcome:
    output = {"job_id": job_id, "status": "pending"}
    emit(ToolResult, call_id=call.call_id, output=output, partial=False)
    call.outcome = Outcome("result", output=output)
    return call.outcome


def completion_message(row: dict[str, Any]) -> dict[str, Any]:
    """The model input that tells the agent a job ended."""
    result = {"job_id": row["id"], "tool": row["tool"], "status": row["status"]}
    if row.get("output") is not None:
        result["output"] = row["output"]
    if row.get("error") is not None:
        result["error"] = row["error"]
    text = f"Job update: {row['tool']} {row['status']}. " + json.dumps(result, default=str)
    return {"role": "user", "content": text}


async def _call(tool: Tool, kwargs: dict[str, Any], executor: Executor) -> Any:
    if tool.kind is Kind.ASYNC:
        return await tool.fn(**kwargs)
    if tool.kind is Kind.SYNC:
        return await executor.pool.run(functools.partial(tool.fn, **kwargs))
    chunks = [chunk async for chunk in tool.fn(**kwargs)]
    return tool.reduce(chunks)
