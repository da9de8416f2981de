"""The server's state and the commands every transport shares."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..exceptions import ProtocolError
from ..runner import Agent, Run
from ..session import Session
from ..shared import UNREACHABLE
from ..store import Store
from .cluster import Cluster, unavailable
from .commands import JobComplete, RunCancel, RunStart, Subscribe, ToolCancel
from .metrics import Metrics
from .sessions import SessionStore
from .settings import Settings
from .webhooks import check_secret

logger = logging.getLogger("toolplex.server")


class Hub:
    """One server's agent, sessions, metrics and the task group its runs live in."""

    def __init__(self, agent: Agent, settings: Settings) -> None:
        self.agent = agent
        self.settings = settings
        self.metrics = Metrics()
        self.store = SessionStore(retain=settings.log_retain, idle_ttl=settings.session_idle_ttl)
        self._tg: TaskGroup | None = None
        self.jobs = agent.jobs
        self.cluster: Cluster | None = None
        """Set when several processes share sessions through Redis (``redis_url``)."""
        if settings.redis_url:
            self.cluster = Cluster(self, settings.redis_url, lease_ttl=settings.lease_ttl)
            self.store.logs = self.cluster.logs
            self.store.load = self._load
            self.jobs.use_store(self.cluster.store)  # type: ignore[arg-type]
            self.jobs.find_session = self.store.get
            self.jobs.start_turns = self.cluster.pump
        elif settings.db_path is not None:
            self.jobs.use_store(Store(settings.db_path))
        self.jobs.callback_base = settings.public_url.rstrip("/")
        if settings.webhook_secret:
            check_secret(settings.webhook_secret)
        agent.run_end_hooks.append(lambda run: self.save(run.session))
        for session in self.store.restore(self.jobs.store.sessions()):
            self._adopt(session)

    def _load(self, session_id: str) -> Session | None:
        assert self.cluster is not None
        session = self.cluster.load(session_id)
        if session is not None:
            self._adopt(session)
        return session

    def _adopt(self, session: Session) -> None:
        session.log.observers.append(self.metrics.observe)
        self.jobs.attach(session)
        self.metrics.sessions.set(len(self.store))

    def save(self, session: Session) -> None:
        """Persist a session's history and log head (they survive a restart)."""
        if self.cluster is not None:
            try:
                self.cluster.save(session)
            except UNREACHABLE:
                logger.error("session not saved: Redis is unreachable",
                             extra={"session_id": session.id})
            return
        self.jobs.store.save_session(session.id, session.token_hash, session.history,
                                     session.log.head_seq)

    @property
    def task_group(self) -> TaskGroup:
        """The lifespan's task group (runs outlive the connection that started them)."""
        if self._tg is None:
            raise RuntimeError("the app is not running: serve it with its lifespan")
        return self._tg

    def create_session(self) -> Session:
        """A new session whose log feeds the metrics."""
        try:
            session = self.store.create()
            self._adopt(session)
            if self.cluster is not None:
                self.cluster.save(session)
            else:
                self.save(session)
        except UNREACHABLE:
            raise unavailable() from None
        logger.info("session created", extra={"session_id": session.id})
        return session

    def start_run(self, session: Session, input: Any) -> Run:
        """Start a run; one run at a time per session.

        Raises:
            ProtocolError: ``run_active`` while another run of the session is going.
        """
        if session.runs:
            active = next(iter(session.runs))
            raise ProtocolError("run_active", f"run {active} is still going; cancel it first")
        if self.cluster is not None:
            run = Run(self.agent, session, input, "user")
            self.cluster.start(run)
        else:
            run = self.agent.start(session, input, self.task_group)
        logger.info("run started", extra={"session_id": session.id, "run_id": run.id})
        return run

    def cancel_run(self, session: Session, run_id: str) -> None:
        """Cancel a run of the session.

        Raises:
            ProtocolError: ``unknown_run`` when it is not an active run of this session.
        """
        run = session.runs.get(run_id)
        if run is not None:
            run.cancel()
        elif self.cluster is not None:
            self.cluster.cancel_run(session, run_id)
        else:
            raise ProtocolError("unknown_run", f"no active run {run_id!r} in this session")

    def cancel_call(self, session: Session, call_id: str) -> None:
        """Cancel one running call.

        Raises:
            ProtocolError: ``unknown_call`` when it is not a running call of this session.
        """
        call = session.calls.get(call_id)
        if call is None and self.cluster is not None:
            self.cluster.cancel_call(session, call_id)
        elif call is None or not call.cancel("user"):
            raise ProtocolError("unknown_call", f"no running call {call_id!r} in this session")

    def session_of_job(self, job_id: str, token: str | None) -> Session | None:
        """The session owning a job if ``token`` is its token, else None.

        Raises:
            ProtocolError: ``unknown_job``.
        """
        row = self.jobs.store.job(job_id)
        if row is None:
            raise ProtocolError("unknown_job", f"no job {job_id!r}")
        return self.store.authorize(row["session_id"], token)

    def complete_job(self, session: Session, job_id: str, output: Any) -> None:
        """A person finishes a human-in-the-loop job of this session.

        Raises:
            ProtocolError: ``unknown_job``, ``not_human`` or ``job_finished``.
        """
        row = self.jobs.store.job(job_id)
        if row is None or row["session_id"] != session.id:
            raise ProtocolError("unknown_job", f"no job {job_id!r} in this session")
        if row["via"] != "human":
            raise ProtocolError("not_human", f"job {job_id} is finished by {row['via']}")
        if not self.jobs.complete(job_id, "succeeded", output=output):
            raise ProtocolError("job_finished", f"job {job_id} has already ended")

    def execute(
        self, session: Session, command: RunStart | RunCancel | ToolCancel | JobComplete | Subscribe
    ) -> dict[str, Any]:
        """Carry out a command (all but ``subscribe``, which belongs to the transport)."""
        session.touch()
        if isinstance(command, RunStart):
            return {"run_id": self.start_run(session, command.input).id}
        if isinstance(command, RunCancel):
            self.cancel_run(session, command.run_id)
        elif isinstance(command, ToolCancel):
            self.cancel_call(session, command.call_id)
        elif isinstance(command, JobComplete):
            self.complete_job(session, command.job_id, command.output)
        return {}

    async def serve(self, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the runs' task group until cancelled; then cancel runs gracefully."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._expire_idle)
            tg.start_soon(self.jobs.serve)
            if self.cluster is not None:
                tg.start_soon(self.cluster.serve)
            self.jobs.recover()
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._shutdown()
                tg.cancel_scope.cancel()

    async def _shutdown(self) -> None:
        if self.cluster is not None:
            self.cluster.closing = True
        runs = [run for session in self.store for run in list(session.runs.values())]
        for run in runs:
            run.cancel()
        with anyio.move_on_after(self.settings.shutdown_grace):
            for run in runs:
                await run.finished.wait()
        if self.cluster is not None:
            # Runs saved their sessions as they ended; a session this process only read
            # may have run elsewhere since: saving it here would undo that run.
            await self.cluster.shutdown()
        else:
            for session in self.store:
                self.save(session)
        for session in self.store:
            session.log.close()
        await self.agent.aclose()

    async def _expire_idle(self) -> None:
        while True:
            await anyio.sleep(min(60.0, self.settings.session_idle_ttl / 2))
            for session_id in self.store.expire():
                logger.info("session expired", extra={"session_id": session_id})
            self.metrics.sessions.set(len(self.store))
