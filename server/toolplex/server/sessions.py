"""The server's sessions: creation, token checks, idle expiry."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..session import Session, hash_token

if TYPE_CHECKING:
    from ..shared import SharedLogs


class SessionStore:
    """Sessions by id, each guarded by its bearer token.

    A wrong token and an unknown session look the same to the caller, so a
    refusal reveals nothing about which sessions exist.
    """

    def __init__(self, *, retain: int = 10_000, idle_ttl: float = 3600.0,
                 logs: SharedLogs | None = None,
                 load: Callable[[str], Session | None] | None = None) -> None:
        self.retain = retain
        self.idle_ttl = idle_ttl
        self.logs = logs
        """Where session logs live when several processes share them (else in memory)."""
        self.load = load
        """Finds a session this process does not hold (several processes: in Redis)."""
        self._sessions: dict[str, Session] = {}
        self.readers: dict[str, int] = {}

    def create(self) -> Session:
        """A new session with a fresh token."""
        session = Session(retain=self.retain)
        if self.logs is not None:
            session.log = self.logs.log_for(session.id, self.retain)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The session, without any token check (internal use)."""
        session = self._sessions.get(session_id)
        if session is None and self.load is not None:
            session = self.load(session_id)
            if session is not None:
                self._sessions[session_id] = session
        return session

    def authorize(self, session_id: str, token: str | None) -> Session | None:
        """The session if ``token`` is its token, else None."""
        session = self.get(session_id)
        expected = session.token_hash if session else "0" * 64
        ok = hmac.compare_digest(hash_token(token or "").encode(), expected.encode())
        return session if ok and session is not None else None

    def restore(self, rows: list[dict[str, Any]]) -> list[Session]:
        """Sessions stored before a restart: history kept, log going on from its head."""
        restored = []
        for row in rows:
            session = Session(id=row["id"], token=None, token_hash=row["token_hash"],
                              retain=self.retain, head_seq=row["head_seq"],
                              history=row["history"])
            self._sessions[session.id] = session
            restored.append(session)
        return restored

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def expire(self) -> list[str]:
        """Forget idle sessions (no run, no reader, idle past the TTL)."""
        now = time.monotonic()
        gone = [
            s.id for s in self._sessions.values()
            if not s.runs and not self.readers.get(s.id) and now - s.last_active > self.idle_ttl
        ]
        for session_id in gone:
            self._sessions.pop(session_id).log.close()
            if self.logs is not None:
                self.logs.forget(session_id)
        return gone
