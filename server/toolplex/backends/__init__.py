"""Backends: where sessions, their logs and jobs live, and which process runs a run.

The layer above the runtime (runner, jobs) and below the server. One
:class:`Backend` protocol, two implementations: :class:`~.local.LocalBackend`
(one process: logs in memory, sessions and jobs in SQLite) and
:class:`~toolplex.backends.redis.RedisBackend` (any number of processes on one Redis).
The server holds one backend and never asks which; this package imports no backend's
dependencies until that backend is asked for. What a request or a stream waits on is
async: a stalled store (Redis) fails those requests, never the process's event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..exceptions import ProtocolError

if TYPE_CHECKING:
    from ..jobs import JobStore
    from ..log import EventLog
    from ..runner import Agent, Run
    from ..session import Session

__all__ = ["Backend", "unavailable"]


def unavailable() -> ProtocolError:
    """The error a request gets while a shared store is unreachable (HTTP 503)."""
    return ProtocolError("store_unavailable",
                         "the session store (Redis) is unreachable; try again shortly")


class Backend(Protocol):
    """Sessions, logs, the job store, run ownership and commands across processes."""

    jobs: JobStore
    """Where jobs and stored sessions live (the agent's job manager uses it)."""
    unreachable: tuple[type[Exception], ...]
    """What its calls raise while its store is down (the server answers 503)."""

    def bind(self, agent: Agent, sessions: Callable[[str], Session | None]) -> None:
        """Serve ``agent``; ``sessions`` finds a session held in this process's memory."""

    async def log_for(self, session_id: str, retain: int) -> EventLog:
        """The event log of a new session."""

    def restore(self, retain: int) -> list[Session]:
        """The sessions to hold in memory at startup (stored before a restart)."""

    def load(self, session_id: str, retain: int) -> Session | None:
        """A stored session this process does not hold (None when there is none); for
        background work (a sweep, a job's end), which may wait on the store."""

    async def fetch(self, session_id: str, retain: int) -> Session | None:
        """:meth:`load` for a request: the event loop never waits on the store."""

    async def token_hash(self, session: Session) -> str | None:
        """The session's token hash as stored now (None: the session was revoked); read
        on every check, so that a token changed on one process holds on all (while the
        store is down, one of :attr:`unreachable` is raised)."""

    def save(self, session: Session) -> None:
        """Persist a session's history and state (it survives a restart); called as a run
        ends (a shared store's backend saves its own runs off the event loop instead)."""

    async def created(self, session: Session) -> None:
        """Store a new session (its token hash: another process may be asked next)."""

    def forget(self, session_id: str) -> None:
        """The session left this process's memory."""

    async def conversation(self, kind: str, key: str,
                           session_id: str | None = None) -> str | None:
        """The session an adapter's conversation id stands for; with ``session_id``, store
        it (across processes the first one stored wins: the id returned is the one to use)."""

    async def start(self, run: Run) -> None:
        """Execute ``run`` in this process.

        Raises:
            ProtocolError: ``run_active`` (a run of the session is going elsewhere),
                ``store_unavailable``.
        """

    async def cancel_run(self, session: Session, run_id: str) -> None:
        """Cancel a run that this process does not execute.

        Raises:
            ProtocolError: ``unknown_run``, ``store_unavailable``.
        """

    async def cancel_call(self, session: Session, call_id: str) -> None:
        """Cancel a call of a run that this process does not execute.

        Raises:
            ProtocolError: ``unknown_call``, ``store_unavailable``.
        """

    async def healthy(self) -> bool:
        """The store answers."""

    async def serve(self, *, task_status: Any = ...) -> None:
        """Own the runs' task group and the backend's background work until cancelled."""

    def closing(self) -> None:
        """Shutdown began: start no new job turn here (another process delivers it)."""

    async def shutdown(self, sessions: Iterable[Session]) -> None:
        """The runs have ended: persist what must survive."""
