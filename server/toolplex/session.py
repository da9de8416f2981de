"""A session: one conversation's history, event log, breakers and memo cache.

The data layer under runs and the executor: it knows neither (its active calls and runs
are kept as what a command can stop).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .breaker import CircuitBreaker
from .log import EventLog


class Cancellable(Protocol):
    """An active call as its session keeps it: ``tool.cancel`` stops it by id."""

    def cancel(self, reason: Literal["user"]) -> bool:
        """Ask the call to stop; False when it has already ended."""


def hash_token(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_id(prefix: str) -> str:
    """A short random id with a readable prefix: ``new_id("r") -> "r_5f0c1a9e2b7d"``."""
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass(eq=False)
class Session:
    """Everything toolplex keeps about one conversation.

    Runs of a session append to its :attr:`log`; the history is what the model
    sees on the next step; breakers and the memo cache last as long as it does.
    """

    id: str = field(default_factory=lambda: new_id("s"))
    token: str | None = field(default_factory=lambda: secrets.token_urlsafe(24))
    """The bearer token readers and commands must present (None once restored:
    only its hash is stored)."""
    token_hash: str = ""
    retain: int = 10_000
    head_seq: int = 0
    """Where the log starts (a session restored after a restart keeps its seq)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    cache: dict[tuple[str, str], tuple[float, Any]] = field(default_factory=dict)
    calls: dict[str, Cancellable] = field(default_factory=dict)
    """Calls of active runs, by call_id (for ``tool.cancel``)."""
    runs: dict[str, Any] = field(default_factory=dict)
    """Active runs by run_id."""
    running_calls: int = 0
    last_active: float = field(default_factory=time.monotonic)
    log: EventLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = EventLog(self.id, retain=self.retain, head=self.head_seq)
        if self.token is not None and not self.token_hash:
            self.token_hash = hash_token(self.token)

    def touch(self) -> None:
        """Mark the session as used now (idle expiry reads this)."""
        self.last_active = time.monotonic()
