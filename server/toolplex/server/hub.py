"""The server's state and the commands every transport shares (the server layer).

The hub holds one :class:`~toolplex.backends.Backend` and never asks which: where
sessions and jobs live and which process runs a run are the backend's.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import anyio

from ..backends import Backend
from ..backends.local import LocalBackend
from ..exceptions import ProtocolError
from ..runner import Agent, Run
from ..session import Session
from ..store import OPEN
from .commands import JobComplete, RunCancel, RunStart, Subscribe, ToolCancel
from .metrics import Metrics
from .sessions import SessionStore
from .settings import Settings
from .webhooks import callback_token, check_secret

logger = logging.getLogger("toolplex.server")


class Hub:
    """One server's agent, sessions, metrics and the task group its runs live in."""

    def __init__(self, agent: Agent, settings: Settings) -> None:
        self.agent = agent
        self.settings = settings
        self.metrics = Metrics()
        self.backend = open_backend(settings)
        self._draining: anyio.Event | None = None
        self.store = SessionStore(self.backend, retain=settings.log_retain,
                                  idle_ttl=settings.session_idle_ttl, adopt=self._adopt)
        self.jobs = agent.jobs
        self.backend.bind(agent, self.store.get)
        self.jobs.callback_base = settings.public_url.rstrip("/")
        self.jobs.max_event_bytes = settings.max_event_bytes
        if settings.webhook_secret:
            check_secret(settings.webhook_secret)
            self.jobs.callback_token = partial(callback_token, settings.webhook_secret)
        agent.run_end_hooks.append(lambda run: self.save(run.session))
        for session in self.store.restore():
            self._adopt(session)

    def _adopt(self, session: Session) -> None:
        session.log.max_event_bytes = self.settings.max_event_bytes
        session.log.retain_bytes = self.settings.log_retain_bytes
        session.log.observers.append(self.metrics.observe)
        self.jobs.attach(session)
        self.metrics.sessions.set(len(self.store))

    def save(self, session: Session) -> None:
        """Persist a session's history and log head (they survive a restart)."""
        try:
            self.backend.save(session)
        except ProtocolError as exc:
            logger.error("session not saved: %s", exc.message, extra={"session_id": session.id})

    async def create_session(self) -> Session:
        """A new session whose log feeds the metrics.

        Raises:
            ProtocolError: ``too_many_sessions`` when ``max_sessions`` are live (after
                forgetting the expired ones).
        """
        if len(self.store) >= self.settings.max_sessions:
            await self.expire_idle()
            if len(self.store) >= self.settings.max_sessions:
                raise ProtocolError("too_many_sessions", f"{len(self.store)} sessions are "
                                    "live, the most this server holds; retry later")
        session = await self.store.create()
        self._adopt(session)
        await self.backend.created(session)
        logger.info("session created", extra={"session_id": session.id})
        return session

    async def start_run(self, session: Session, input: Any) -> Run:
        """Start a run; one run at a time per session.

        Raises:
            ProtocolError: ``run_active`` while another run of the session is going.
        """
        if self._draining is not None:
            raise ProtocolError("shutting_down", "the server is shutting down; retry shortly")
        if session.runs:
            active = next(iter(session.runs))
            raise ProtocolError("run_active", f"run {active} is still going; cancel it first")
        run = Run(self.agent, session, input, "user")
        await self.backend.start(run)
        logger.info("run started", extra={"session_id": session.id, "run_id": run.id})
        return run

    async def cancel_run(self, session: Session, run_id: str) -> None:
        """Cancel a run of the session.

        Raises:
            ProtocolError: ``unknown_run`` when it is not an active run of this session.
        """
        run = session.runs.get(run_id)
        if run is not None:
            run.cancel()
        else:
            await self.backend.cancel_run(session, run_id)

    async def cancel_call(self, session: Session, call_id: str) -> None:
        """Cancel one running call.

        Raises:
            ProtocolError: ``unknown_call`` when it is not a running call of this session.
        """
        call = session.calls.get(call_id)
        if call is None:
            await self.backend.cancel_call(session, call_id)
        elif not call.cancel("user"):
            raise ProtocolError("unknown_call", f"no running call {call_id!r} in this session")

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """A job row, read from a worker thread when the store is shared (a stalled
        Redis must not freeze the event loop)."""
        return await self.jobs.ask(self.jobs.store.job, job_id)

    async def session_of_job(self, job_id: str, token: str | None) -> Session | None:
        """The session owning a job if ``token`` is its token, else None.

        [protocol] an unknown job and a wrong token look the same (None): a refusal
        reveals nothing about which jobs exist.
        """
        row = await self.job(job_id)
        return await self.store.authorize(row["session_id"] if row else "", token)

    async def cursor(self, session: Session, raw: object) -> int:
        """A reader's resume cursor, by the one rule WebSocket and SSE share.

        [protocol] a cursor is a seq the session has reached: an integer from 0 to the
        log's head. Anything else (not a number, negative, beyond the head) is refused
        rather than read as 0 or waited on.

        Raises:
            ProtocolError: ``bad_cursor``.
        """
        text = str(raw) if isinstance(raw, (int, str)) and not isinstance(raw, bool) else ""
        if not text.isdigit():
            raise ProtocolError("bad_cursor", f"a cursor is a seq (0 or more), got {raw!r}")
        value = int(text)
        head = session.log.head_seq
        if value > head:
            head = await session.log.reached()  # (with Redis, this process's view may lag)
        if value > head:
            raise ProtocolError("bad_cursor", f"cursor {value} is beyond the log's head "
                                f"({head}): resume from a seq you received")
        return value

    async def complete_job(self, session: Session, job_id: str, output: Any) -> None:
        """A person finishes a human-in-the-loop job of this session.

        Raises:
            ProtocolError: ``unknown_job``, ``not_human`` or ``job_finished``.
        """
        row = await self.job(job_id)
        if row is None or row["session_id"] != session.id:
            raise ProtocolError("unknown_job", f"no job {job_id!r} in this session")
        if row["via"] != "human":
            raise ProtocolError("not_human", f"job {job_id} is finished by {row['via']}")
        if not await self.jobs.complete_now(job_id, "succeeded", output=output):
            raise ProtocolError("job_finished", f"job {job_id} has already ended")

    async def execute(
        self, session: Session, command: RunStart | RunCancel | ToolCancel | JobComplete | Subscribe
    ) -> dict[str, Any]:
        """Carry out a command (all but ``subscribe``, which belongs to the transport)."""
        session.touch()
        if isinstance(command, RunStart):
            return {"run_id": (await self.start_run(session, command.input)).id}
        if isinstance(command, RunCancel):
            await self.cancel_run(session, command.run_id)
        elif isinstance(command, ToolCancel):
            await self.cancel_call(session, command.call_id)
        elif isinstance(command, JobComplete):
            await self.complete_job(session, command.job_id, command.output)
        return {}

    async def serve(self, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the runs' task group until cancelled; then cancel runs gracefully."""
        async with anyio.create_task_group() as tg:
            # The agent's supervised tasks (tool bodies, job work and turns) are the
            # lifespan's, like its runs.
            await tg.start(self.agent.executor.supervisor.serve)
            await tg.start(self.backend.serve)
            tg.start_soon(self._expire_idle)
            tg.start_soon(self.jobs.serve)
            self.jobs.recover()
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._shutdown()
                tg.cancel_scope.cancel()

    async def drain(self) -> None:
        """The first half of a shutdown, while transports are still open: no new run,
        every run cancelled to its terminal event, every log stored and closed, and each
        reader sent its log to the end (a WebSocket then closes 1001, an SSE stream ends).

        Each stage waits at most ``shutdown_grace``. Safe to call twice.
        """
        if self._draining is not None:
            await self._draining.wait()
            return
        self._draining = anyio.Event()
        try:
            self.backend.closing()
            runs = [run for session in self.store for run in list(session.runs.values())]
            for run in runs:
                run.cancel()
            with anyio.move_on_after(self.settings.shutdown_grace):
                for run in runs:
                    await run.finished.wait()
            await self.backend.shutdown(self.store)
            for session in self.store:
                session.log.close()
            # [protocol] every reader gets the terminal event before its socket closes.
            with anyio.move_on_after(self.settings.shutdown_grace):
                await self.store.readers_gone()
        finally:
            self._draining.set()

    async def _shutdown(self) -> None:
        await self.drain()
        await self.agent.aclose()

    async def expire_idle(self, now: float | None = None) -> list[str]:
        """Forget the sessions idle past their TTL (the local backend deletes them from its
        SQLite file; Redis expires its own copy).

        A session with an open or undelivered job stays: the job's end starts a turn in it
        (a shared job store is asked from a worker thread).
        """
        now = time.monotonic() if now is None else now
        idle = set(self.store.idle(now))
        waiting = await self.jobs.ask(self._with_jobs, idle) if idle else set()
        # (one that went idle while the store was asked stays until the next sweep)
        gone = self.store.expire(now, keep=lambda s: s in waiting or s not in idle)
        for session_id in gone:
            logger.info("session expired", extra={"session_id": session_id})
        self.metrics.sessions.set(len(self.store))
        return gone

    def _with_jobs(self, session_ids: set[str]) -> set[str]:
        """Of these sessions, those with an open or undelivered job."""
        return {session_id for session_id in session_ids
                if any(row["status"] in OPEN or not row["delivered"]
                       for row in self.jobs.store.jobs(session_id=session_id))}

    async def _expire_idle(self) -> None:
        while True:
            await anyio.sleep(min(60.0, self.settings.session_idle_ttl / 2))
            try:
                await self.expire_idle()
            except self.backend.unreachable as exc:  # (the next sweep tries again)
                logger.warning("idle sessions not expired: %s", exc)


def open_backend(settings: Settings) -> Backend:
    """The backend ``settings`` ask for: Redis with ``redis_url``, else this process."""
    if settings.redis_url:
        from ..backends.redis import RedisBackend  # (loads redis-py only when asked for)

        return RedisBackend(settings.redis_url, retain=settings.log_retain,
                            session_ttl=max(settings.session_idle_ttl, 24 * 3600.0),
                            lease_ttl=settings.lease_ttl)
    return LocalBackend(settings.db_path)
