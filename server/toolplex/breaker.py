"""The circuit breaker: a tool that keeps failing is disabled for the session."""

from __future__ import annotations

from enum import Enum

from .policy import Clock


class BreakerState(Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    """Calls run."""
    OPEN = "open"
    """Calls end at once with ``circuit_open``; the model no longer sees the tool."""
    HALF_OPEN = "half_open"
    """The cool-down passed: one trial call runs; its outcome closes or reopens."""


class CircuitBreaker:
    """Counts consecutive failed calls of one tool in one session.

    A call that failed after all its retries counts once; a success resets the
    count. With no ``cooldown`` (the default) an open breaker stays open for
    the rest of the session.

    Args:
        threshold: Consecutive failures that open it (0 disables the breaker).
        cooldown: Nominal seconds after which an open breaker lets one trial call through.
        clock: Reads time for the cool-down.
    """

    def __init__(
        self, threshold: int = 3, *, cooldown: float | None = None, clock: Clock | None = None
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self._clock = clock or Clock()
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """The current state, with the cool-down applied."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.cooldown is not None and self._clock.monotonic() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def allows_calls(self) -> bool:
        """False while open."""
        return self.state is not BreakerState.OPEN

    def record_success(self) -> None:
        """A call succeeded: close and reset the count."""
        self.failures = 0
        self._opened_at = None

    def record_failure(self) -> bool:
        """A call failed. Returns True when this failure opened the breaker."""
        self.failures += 1
        was_open = self._opened_at is not None
        if self.threshold and self.failures >= self.threshold:
            self._opened_at = self._clock.monotonic()
            return not was_open
        return False

    def snapshot(self) -> dict[str, int | bool]:
        """What another process needs to go on counting: ``{failures, open}``."""
        return {"failures": self.failures, "open": self._opened_at is not None}

    def restore(self, snapshot: dict[str, int | bool]) -> None:
        """Take over a :meth:`snapshot` (an open breaker's cool-down restarts now)."""
        self.failures = int(snapshot.get("failures", 0))
        self._opened_at = self._clock.monotonic() if snapshot.get("open") else None
