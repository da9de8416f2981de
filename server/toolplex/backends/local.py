"""The one-process backend: event logs in memory, sessions and jobs in SQLite.

The embedded default of ``toolplex serve``: runs execute where they were started, a
session's log is an :class:`~toolplex.log.EventLog`, and what must survive a restart
(sessions' history and log head, jobs) is in a :class:`~toolplex.store.Store` file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ..exceptions import ProtocolError
from ..journal import Journal, interrupt, restore
from ..log import EventLog
from ..session import Session
from ..store import Store

if TYPE_CHECKING:
    from ..jobs import JobStore
    from ..runner import Agent, Run


class LocalBackend:
    """Everything in this process.

    Args:
        path: The SQLite file sessions and jobs are kept in (WAL); None keeps the agent's
            own job store (in memory unless the agent was given one).
    """

    unreachable: tuple[type[Exception], ...] = ()

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        store = Store(path) if path is not None else Store()
        self.jobs: JobStore = store
        self.journal = Journal(store) if path not in (None, ":memory:") else None
        """With a file: every event is stored before readers see it (seq survives)."""
        self._conversations: dict[str, str] = {}
        self._runs: TaskGroup | None = None

    def bind(self, agent: Agent, sessions: Callable[[str], Session | None]) -> None:
        if self.path is not None:
            agent.jobs.use(self.jobs)
        else:
            self.jobs = agent.jobs.store

    async def log_for(self, session_id: str, retain: int) -> EventLog:
        log = EventLog(session_id, retain=retain)
        if self.journal is not None:
            self.journal.follow(log)
        return log

    def restore(self, retain: int) -> list[Session]:
        sessions = []
        for row in self.jobs.sessions():
            session = Session(id=row["id"], token=None, token_hash=row["token_hash"],
                              retain=retain, head_seq=row["head_seq"], history=row["history"])
            # Idle since its row was written (wall clock): one that expired while the
            # server was down goes at the first sweep.
            session.last_active -= max(0.0, time.time() - row.get("updated", time.time()))
            sessions.append(session)
        if self.journal is not None:
            for session in sessions:
                session.log = restore(self.journal.store, session.id, retain, session.head_seq)
                self.journal.follow(session.log)
                # [protocol] every run.started gets its terminal event, also when the
                # process running it was killed: here, as the server starts again.
                interrupt(session.log)
        return sessions

    def load(self, session_id: str, retain: int) -> Session | None:
        return None  # every stored session was restored at startup

    async def fetch(self, session_id: str, retain: int) -> Session | None:
        return None

    def save(self, session: Session) -> None:
        self.jobs.save_session(session.id, session.token_hash, session.history,
                               session.log.head_seq)

    async def created(self, session: Session) -> None:
        self.save(session)

    async def token_hash(self, session: Session) -> str | None:
        return session.token_hash  # (one process: what it holds is the truth)

    def forget(self, session_id: str) -> None:
        # One process: a session leaves memory only when it expired; it is gone for good.
        self.jobs.delete_session(session_id)
        if self.journal is not None:
            self.journal.forget(session_id)

    async def conversation(self, kind: str, key: str,
                           session_id: str | None = None) -> str | None:
        field = f"{kind}:{key}"
        if session_id is not None:
            self._conversations[field] = session_id  # (the one it stood for expired)
        return self._conversations.get(field)

    async def start(self, run: Run) -> None:
        if self._runs is None:
            raise RuntimeError("the app is not running: serve it with its lifespan")
        self._runs.start_soon(run.execute)

    async def cancel_run(self, session: Session, run_id: str) -> None:
        raise ProtocolError("unknown_run", f"no active run {run_id!r} in this session")

    async def cancel_call(self, session: Session, call_id: str) -> None:
        raise ProtocolError("unknown_call", f"no running call {call_id!r} in this session")

    async def healthy(self) -> bool:
        return True

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            if self.journal is not None:
                tg.start_soon(self.journal.serve)
            self._runs = tg
            task_status.started()
            await anyio.sleep_forever()

    def closing(self) -> None:
        pass

    async def shutdown(self, sessions: Iterable[Session]) -> None:
        if self.journal is not None:
            self.journal.flush()
        for session in sessions:
            self.save(session)
