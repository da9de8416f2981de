"""The server's sessions: creation, token checks, idle expiry."""

from __future__ import annotations

import hmac
import time

from ..session import Session


class SessionStore:
    """Sessions by id, each guarded by its bearer token.

    A wrong token and an unknown session look the same to the caller, so a
    refusal reveals nothing about which sessions exist.
    """

    def __init__(self, *, retain: int = 10_000, idle_ttl: float = 3600.0) -> None:
        self.retain = retain
        self.idle_ttl = idle_ttl
        self._sessions: dict[str, Session] = {}
        self.readers: dict[str, int] = {}

    def create(self) -> Session:
        """A new session with a fresh token."""
        session = Session(retain=self.retain)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The session, without any token check (internal use)."""
        return self._sessions.get(session_id)

    def authorize(self, session_id: str, token: str | None) -> Session | None:
        """The session if ``token`` is its token, else None."""
        session = self._sessions.get(session_id)
        expected = session.token if session else "x" * 32
        ok = hmac.compare_digest((token or "").encode(), expected.encode())
        return session if ok and session is not None else None

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
        return gone
