"""The events of PROTOCOL.md as frozen dataclasses, and their wire encoding.

Every event a run produces is one of these. The runner creates them without a
``seq``; the session's :class:`~toolplex.log.EventLog` stamps ``seq``, ``ts``
and ``session_id`` on append. ``to_dict()`` gives the wire envelope::

    {"v": 1, "seq": 7, "type": "tool.output.delta", "ts": 1764000000123,
     "session_id": "s_1", "run_id": "r_1", "call_id": "c_1", "attempt": 1, ...}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

from .encoding import Sized, jsonable
from .exceptions import EventTooLarge

PROTOCOL_VERSION = 1

_ENVELOPE = ("seq", "type", "ts", "session_id", "run_id", "call_id")


_last_ms = [0]


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every ``ts`` on the wire."""
    ms = time.time_ns() // 1_000_000
    # The events of one millisecond share one int: a log retains thousands of them.
    if ms == _last_ms[0]:
        return _last_ms[0]
    _last_ms[0] = ms
    return ms


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseEvent:
    """Fields every logged event carries (the envelope)."""

    type: ClassVar[str]
    seq: int = 0
    """Per-session position in the log, gapless from 1; 0 until appended."""
    ts: int = 0
    """Milliseconds since the epoch at append."""
    session_id: str = ""
    """The session whose log holds the event."""
    run_id: str | None = None
    """The run the event belongs to; absent for session-level events."""

    def stamp(self, seq: int, ts: int, session_id: str) -> BaseEvent:
        """This event with its log position; done in place while it is still unstamped
        (nobody else holds a fresh event), else on a copy."""
        if self.seq:
            return dataclasses.replace(self, seq=seq, ts=ts, session_id=session_id)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "session_id", session_id)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The wire envelope: snake_case, optional fields omitted, never ``null``."""
        # [protocol] Optional fields are omitted, never `null`.
        out: dict[str, Any] = {"v": PROTOCOL_VERSION, "seq": self.seq, "type": self.type,
                               "ts": self.ts, "session_id": self.session_id}
        if self.run_id is not None:
            out["run_id"] = self.run_id
        for name in _payload(type(self)):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def to_json(self) -> str:
        """Compact UTF-8 JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


_ENVELOPE_BYTES = 160
"""About what the envelope adds to a payload (seq, type, ts, ids), in bytes."""


def checked(event: BaseEvent, max_bytes: int | None = None) -> tuple[BaseEvent, int]:
    """The event with every payload value in its JSON form, and its size in bytes.

    The size is exact when it comes near ``max_bytes``, else a lower bound.

    Raises:
        UnserializableOutput: A value has no JSON form.
        EventTooLarge: The event's JSON is over ``max_bytes``.
    """
    sized: Sized | None = None
    size = _ENVELOPE_BYTES
    changes: dict[str, Any] | None = None
    for name in _payload(type(event)):
        value = getattr(event, name)
        kind = type(value)
        # Most payload values are ids, names and counters: no walk for them.
        if kind is str:
            size += len(value) + 2
            continue
        if value is None or kind is int or kind is bool:
            size += 4
            continue
        sized = sized or Sized()
        safe = jsonable(value, sized)
        if safe is not value:
            changes = changes or {}
            changes[name] = safe
    if changes:
        event = dataclasses.replace(event, **changes)
    if sized is not None:
        size += sized.bytes
    if max_bytes is not None and size > max_bytes:
        raise EventTooLarge(size, max_bytes)
    # A character is 1 to 6 bytes of JSON (UTF-8, escapes): measure only when that matters.
    if max_bytes is not None and size * 6 > max_bytes:
        size = len(event.to_json().encode())
        if size > max_bytes:
            raise EventTooLarge(size, max_bytes)
    return event, size


def _fields_of(cls: type[BaseEvent]) -> tuple[str, ...]:
    """A class's fields after the envelope, ``call_id`` first (the wire order)."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _ENVELOPE]
    has_call = any(f.name == "call_id" for f in dataclasses.fields(cls))
    return (("call_id",) if has_call else ()) + tuple(names)


# Cached per class. (Typed as a plain callable: mypy counts a class with a generated
# __hash__ as unhashable, though classes hash by identity.)
_payload = cast("Callable[[type[BaseEvent]], tuple[str, ...]]", functools.cache(_fields_of))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(BaseEvent):
    """A run began."""

    type: ClassVar[str] = "run.started"
    trigger: Literal["user", "job", "resume"]
    """What started it: a user message, a finished job, or a resume."""
    input: Any = None
    """The text or messages that started it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(BaseEvent):
    """A model call began (one step is one model call and its tool calls)."""

    type: ClassVar[str] = "step.started"
    step: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished(BaseEvent):
    """A step ended: every tool call of it has its terminal event."""

    type: ClassVar[str] = "step.finished"
    step: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TextStart(BaseEvent):
    """A message's text begins streaming."""

    type: ClassVar[str] = "text.start"
    message_id: str
    role: str = "assistant"


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta(BaseEvent):
    """A fragment of a message's text, in order."""

    type: ClassVar[str] = "text.delta"
    message_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TextEnd(BaseEvent):
    """A message's text is complete."""

    type: ClassVar[str] = "text.end"
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningStart(BaseEvent):
    """The model's reasoning begins streaming (its own message, beside the text)."""

    type: ClassVar[str] = "reasoning.start"
    message_id: str
    """The reasoning message; not the id of the text it precedes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta(BaseEvent):
    """A fragment of the model's reasoning or reasoning summary, in order."""

    type: ClassVar[str] = "reasoning.delta"
    message_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningEnd(BaseEvent):
    """The model's reasoning message is complete."""

    type: ClassVar[str] = "reasoning.end"
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStart(BaseEvent):
    """The model began a tool call."""

    type: ClassVar[str] = "tool.call.start"
    call_id: str
    name: str
    message_id: str
    """The assistant message; the same for parallel siblings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta(BaseEvent):
    """A fragment of a call's arguments JSON, as the model writes it."""

    type: ClassVar[str] = "tool.call.delta"
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallEnd(BaseEvent):
    """The call's arguments are complete (read from the stream's structure)."""

    type: ClassVar[str] = "tool.call.end"
    call_id: str
    args: Any
    """The parsed arguments object (the raw text when it is not JSON)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolQueued(BaseEvent):
    """The call waits for its upstream's concurrency or rate limit (extension)."""

    type: ClassVar[str] = "tool.queued"
    call_id: str
    upstream: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExecStarted(BaseEvent):
    """An attempt of the call started executing."""

    type: ClassVar[str] = "tool.exec.started"
    call_id: str
    attempt: int
    """From 1."""
    timeout_ms: int
    args: dict[str, Any] | None = None
    """The arguments it runs with, when they held ``$from`` references: resolved (the
    model's own are on ``tool.call.end``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutputDelta(BaseEvent):
    """A chunk of a call's output."""

    type: ClassVar[str] = "tool.output.delta"
    call_id: str
    attempt: int
    index: int
    """Per call and attempt, gapless from 0."""
    data: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolRetrying(BaseEvent):
    """An attempt failed transiently; another follows after ``delay_ms``."""

    type: ClassVar[str] = "tool.retrying"
    call_id: str
    attempt: int
    """The attempt that failed; a client drops its partial output."""
    delay_ms: int
    reason: Literal["timeout", "error", "rate_limited"]
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolTimedOut(BaseEvent):
    """An attempt ran past its hard timeout."""

    type: ClassVar[str] = "tool.timeout"
    call_id: str
    attempt: int
    timeout_ms: int
    will_retry: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult(BaseEvent):
    """Terminal: the call's output."""

    type: ClassVar[str] = "tool.result"
    call_id: str
    output: Any
    partial: bool = False
    """True when the output is what arrived before a timeout, or before ``stopped_by``."""
    stopped_by: Literal["predicate"] | None = None
    """``predicate``: the tool's ``stop_when`` ended its stream early (extension)."""
    cached: bool | None = None
    """True when a memoised earlier result was returned (extension)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFailed(BaseEvent):
    """Terminal: the call failed; ``error`` is ``{code, message, status?}``."""

    type: ClassVar[str] = "tool.error"
    call_id: str
    error: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCancelled(BaseEvent):
    """Terminal: the call was cancelled."""

    type: ClassVar[str] = "tool.cancelled"
    call_id: str
    reason: Literal["short_circuit", "user", "run_cancelled", "discarded"]
    """``discarded`` (extension): the model's response was cut off (``length``)."""
    by_call_id: str | None = None
    partial_output: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolShortCircuit(BaseEvent):
    """A decisive chunk or result cancelled its siblings."""

    type: ClassVar[str] = "tool.short_circuit"
    call_id: str
    cancelled_call_ids: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCircuitOpen(BaseEvent):
    """A tool failed too often in a row and is disabled for the session."""

    type: ClassVar[str] = "tool.circuit_open"
    tool: str
    failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPending(BaseEvent):
    """A long-running call became a job."""

    type: ClassVar[str] = "job.pending"
    call_id: str
    job_id: str
    via: Literal["worker", "webhook", "human", "poll"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress(BaseEvent):
    """A job reports progress."""

    type: ClassVar[str] = "job.progress"
    job_id: str
    progress: float
    total: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCompleted(BaseEvent):
    """A job ended."""

    type: ClassVar[str] = "job.completed"
    job_id: str
    status: Literal["succeeded", "failed", "cancelled", "expired"]
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(BaseEvent):
    """Terminal: the run ended."""

    type: ClassVar[str] = "run.finished"
    outcome: Literal["success", "cancelled"]
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunError(BaseEvent):
    """Terminal: the run failed; ``error`` is ``{code, message}``."""

    type: ClassVar[str] = "run.error"
    error: dict[str, Any]


Event = (
    RunStarted
    | StepStarted
    | StepFinished
    | TextStart
    | TextDelta
    | TextEnd
    | ReasoningStart
    | ReasoningDelta
    | ReasoningEnd
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ToolQueued
    | ToolExecStarted
    | ToolOutputDelta
    | ToolRetrying
    | ToolTimedOut
    | ToolResult
    | ToolFailed
    | ToolCancelled
    | ToolShortCircuit
    | ToolCircuitOpen
    | JobPending
    | JobProgress
    | JobCompleted
    | RunFinished
    | RunError
)
"""Any event of PROTOCOL.md: the union of the event classes (``event.type`` tells which)."""

EVENT_TYPES: dict[str, type[BaseEvent]] = {
    cls.type: cls for cls in BaseEvent.__subclasses__()
}

TERMINAL_CALL_TYPES = frozenset({"tool.result", "tool.error", "tool.cancelled"})
TERMINAL_RUN_TYPES = frozenset({"run.finished", "run.error"})


def from_dict(data: dict[str, Any]) -> BaseEvent:
    """Decode a wire envelope back into its event object.

    Raises:
        KeyError: The type is not a known event type.
    """
    cls = EVENT_TYPES[data["type"]]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def error_dict(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An ``{code, message}`` error payload, with optional extra keys that are set."""
    out: dict[str, Any] = {"code": code, "message": message}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out
