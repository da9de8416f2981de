"""Which failures are transient, how long to wait before a retry, and the clock.

The one rule: retry what the upstream may do differently next time (timeouts,
5xx, 429, connection errors), never what it will refuse again (other 4xx,
invalid arguments) nor a bug (any other exception).
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from .exceptions import EventTooLarge, ToolError, ToolTimeout, UnserializableOutput

Reason = Literal["timeout", "error", "rate_limited"]


@dataclass(frozen=True, slots=True)
class Clock:
    """Time as the policy sees it: every wait and timeout is multiplied by ``scale``.

    Events always report nominal durations (``delay_ms=2000``); only the real
    waits shrink, so tests run the 1/2/4 s schedule in milliseconds.

    Example::

        Agent(tools=[...], clock=Clock(scale=0.001))   # 10 s timeout -> 10 ms
    """

    scale: float = 1.0

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` nominal seconds."""
        await anyio.sleep(seconds * self.scale)

    def real(self, seconds: float) -> float:
        """Real seconds for ``seconds`` nominal seconds."""
        return seconds * self.scale

    def monotonic(self) -> float:
        """Nominal seconds on a monotonic clock."""
        return time.monotonic() / self.scale


@dataclass(frozen=True, slots=True)
class Failure:
    """An exception classified for the retry, breaker and error-reporting rules."""

    transient: bool
    reason: Reason
    code: str
    """The ``tool.error`` code it ends with when not retried."""
    message: str
    status: int | None = None
    retry_after: float | None = None

    def to_error(self) -> dict[str, Any]:
        """The ``{code, message, status?}`` payload of ``tool.error``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.status is not None:
            out["status"] = self.status
        return out


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _from_status(status: int, message: str, retry_after: float | None) -> Failure:
    if status == 429:
        return Failure(True, "rate_limited", "upstream", message, status, retry_after)
    if status >= 500:
        return Failure(True, "error", "upstream", message, status, retry_after)
    return Failure(False, "error", "upstream", message, status)


def _http_status_error(exc: BaseException) -> tuple[int, str | None] | None:
    """(status, Retry-After) of an httpx/httpx2/openai status error, else None."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if not isinstance(status, int) or response is None:
        return None
    headers = getattr(response, "headers", None) or {}
    return status, headers.get("retry-after")


def _is_transport_error(exc: BaseException) -> bool:
    # httpx, httpx2 (what openai>=3 uses) and openai's own connection error,
    # matched by name so none of them is a hard dependency of this layer.
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__.split(".")[0]
    if module in {"httpx", "httpx2"} and "TransportError" in names:
        return True
    return module == "openai" and "APIConnectionError" in names


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by a tool attempt."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ToolTimeout) or isinstance(exc, TimeoutError):
        return Failure(True, "timeout", "timeout", message)
    if isinstance(exc, UnserializableOutput):
        return Failure(False, "error", "unserializable_output", message)
    if isinstance(exc, EventTooLarge):
        return Failure(False, "error", "output_too_large", message)
    if isinstance(exc, ToolError):
        if exc.status is None:
            return Failure(False, "error", exc.code or "upstream", exc.message)
        return _from_status(exc.status, exc.message, exc.retry_after)
    if isinstance(exc, ConnectionError) or _is_transport_error(exc):
        return Failure(True, "error", "upstream", f"connection error: {message}")
    status = _http_status_error(exc)
    if status is not None and type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "openai"}:
        code, header = status
        return _from_status(code, message, parse_retry_after(header))
    return Failure(False, "error", "internal", f"{type(exc).__name__}: {message}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``base * 2**(n-1)`` before retry n (1, 2, 4 s by default).

    A 429's ``Retry-After`` replaces the step, bounded by ``max_retry_after``.
    """

    base: float = 1.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, failure: Failure) -> float:
        """Nominal seconds to wait before retry number ``retry`` (from 1)."""
        if failure.retry_after is not None:
            return min(failure.retry_after, self.max_retry_after)
        return float(self.base * 2 ** (retry - 1))
