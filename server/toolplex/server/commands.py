"""Client commands (PROTOCOL.md section 4), validated at the edge with pydantic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic

from ..decode import loads
from ..exceptions import ProtocolError


class _Command(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)
    ref: str | None = None
    """A client correlation id, echoed on ``command.error``."""


class RunStart(_Command):
    """Start a run with a user message or chat messages."""

    type: Literal["run.start"]
    input: str | list[dict[str, Any]]


class RunCancel(_Command):
    """Cancel a run."""

    type: Literal["run.cancel"]
    run_id: str


class ToolCancel(_Command):
    """Cancel one tool call."""

    type: Literal["tool.cancel"]
    call_id: str


class JobComplete(_Command):
    """A person finishes a human-in-the-loop job."""

    type: Literal["job.complete"]
    job_id: str
    output: Any = None


class Subscribe(_Command):
    """Replay everything after ``after``, then go live."""

    type: Literal["subscribe"]
    after: int | str = 0
    """A seq (a string of digits too), checked by the transport (``Hub.cursor``): from 0
    up to the log's head."""


Command = Annotated[
    RunStart | RunCancel | ToolCancel | JobComplete | Subscribe,
    pydantic.Field(discriminator="type"),
]
_adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Command)
KNOWN = ("run.start", "run.cancel", "tool.cancel", "job.complete", "subscribe")


def parse_json(text: str | bytes) -> Any:
    """Decode a frame's JSON, its nesting bounded (see :mod:`toolplex.decode`).

    Raises:
        ProtocolError: ``bad_json`` or ``too_deep``.
    """
    return loads(text)


def parse_command(data: Any) -> RunStart | RunCancel | ToolCancel | JobComplete | Subscribe:
    """Validate a decoded command.

    Raises:
        ProtocolError: ``unknown_command`` or ``bad_command`` (missing or wrong fields).
    """
    if not isinstance(data, dict):
        raise ProtocolError("bad_command", "a command is a JSON object with a `type`")
    if data.get("type") not in KNOWN:
        raise ProtocolError(
            "unknown_command", f"unknown command type {data.get('type')!r}; known: {KNOWN}")
    try:
        return _adapter.validate_python(data)  # type: ignore[no-any-return]
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'command'}: {err['msg']}"
            for err in exc.errors())
        raise ProtocolError("bad_command", f"{data['type']}: {problems}") from None


def command_error(exc: ProtocolError, ref: str | None = None) -> dict[str, Any]:
    """The ``command.error`` frame for a refused command (not logged)."""
    frame: dict[str, Any] = {"type": "command.error",
                             "error": {"code": exc.code, "message": exc.message}}
    if ref is not None:
        frame["ref"] = ref
    return frame
