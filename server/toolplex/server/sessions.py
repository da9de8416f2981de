"""The server's sessions in memory: creation, token checks, idle expiry (over a backend)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator

import anyio

from ..backends import Backend
from ..backends.local import LocalBackend
from ..session import Session, hash_token


class SessionStore:
    """Sessions by id, each guarded by its bearer token.

    A wrong token and an unknown session look the same to the caller, so a
    refusal reveals nothing about which sessions exist.
    """

    def __init__(self, backend: Backend | None = None, *, retain: int = 10_000,
                 idle_ttl: float = 3600.0,
                 adopt: Callable[[Session], None] | None = None) -> None:
        self.backend = backend or LocalBackend()
        """Where sessions are stored and their logs live."""
        self.retain = retain
        self.idle_ttl = idle_ttl
        self._adopt = adopt or (lambda session: None)
        self._sessions: dict[str, Session] = {}
        self.readers: dict[str, int] = {}
        """Open readers (WebSocket, SSE) by session id."""
        self._no_readers = anyio.Event()

    def leave(self, session_id: str) -> None:
        """A reader of the session went away."""
        self.readers[session_id] -= 1
        if not any(self.readers.values()):
            self._no_readers.set()
            self._no_readers = anyio.Event()

    async def readers_gone(self) -> None:
        """Return once no reader is open."""
        while any(self.readers.values()):
            await self._no_readers.wait()

    async def create(self) -> Session:
        """A new session with a fresh token."""
        session = Session(retain=self.retain)
        session.log = await self.backend.log_for(session.id, self.retain)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The session, without any token check (internal use: background work); one
        stored but not held in this process is loaded from the backend."""
        session = self._sessions.get(session_id)
        if session is None:
            session = self._held(session_id, self.backend.load(session_id, self.retain))
        return session

    async def fetch(self, session_id: str) -> Session | None:
        """:meth:`get` for a request: the event loop never waits on the backend's store."""
        session = self._sessions.get(session_id)
        if session is None:
            session = self._held(session_id, await self.backend.fetch(session_id, self.retain))
        return session

    def _held(self, session_id: str, loaded: Session | None) -> Session | None:
        held = self._sessions.get(session_id)  # (another request may have loaded it since)
        if held is not None or loaded is None:
            return held
        self._sessions[session_id] = loaded
        self._adopt(loaded)
        return loaded

    async def authorize(self, session_id: str, token: str | None) -> Session | None:
        """The session if ``token`` is its token, else None."""
        session = await self.fetch(session_id)
        current = await self.backend.token_hash(session) if session is not None else None
        expected = current or "0" * 64
        ok = hmac.compare_digest(hash_token(token or "").encode(), expected.encode())
        if not ok or session is None or current is None:
            return None
        session.token_hash = current  # (what this process saves next is the current one)
        return session

    def restore(self) -> list[Session]:
        """Sessions stored before a restart: history kept, log going on from its head."""
        restored = self.backend.restore(self.retain)
        for session in restored:
            self._sessions[session.id] = session
        return restored

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def idle(self, now: float | None = None) -> list[str]:
        """The sessions with no run and no reader, idle past the TTL at ``now``."""
        now = time.monotonic() if now is None else now
        return [
            s.id for s in self._sessions.values()
            if not s.runs and not self.readers.get(s.id) and now - s.last_active > self.idle_ttl
        ]

    def expire(self, now: float | None = None,
               keep: Callable[[str], bool] = lambda session_id: False) -> list[str]:
        """Forget idle sessions (no run, no reader, idle past the TTL, not ``keep``)."""
        gone = [session_id for session_id in self.idle(now) if not keep(session_id)]
        for session_id in gone:
            self._sessions.pop(session_id).log.close()
            self.backend.forget(session_id)
        return gone
