"""A session: one conversation's history, event log, breakers and memo cache."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .breaker import CircuitBreaker
from .log import EventLog

if TYPE_CHECKING:
    from .calls import ToolCall


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
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    """The bearer token readers and commands of this session must present."""
    retain: int = 10_000
    history: list[dict[str, Any]] = field(default_factory=list)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    cache: dict[tuple[str, str], tuple[float, Any]] = field(default_factory=dict)
    calls: dict[str, ToolCall] = field(default_factory=dict)
    """Calls of active runs, by call_id (for ``tool.cancel``)."""
    runs: dict[str, Any] = field(default_factory=dict)
    """Active runs by run_id."""
    running_calls: int = 0
    last_active: float = field(default_factory=time.monotonic)
    log: EventLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = EventLog(self.id, retain=self.retain)

    def touch(self) -> None:
        """Mark the session as used now (idle expiry reads this)."""
        self.last_active = time.monotonic()
