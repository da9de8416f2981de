"""The exceptions toolplex raises or understands.

::

    ToolplexError
    ├── ToolError               a tool says how it failed (raised by tool code)
    │   └── ToolTimeout         a call ran past its hard timeout (TimeoutError)
    ├── InvalidArguments        the model's arguments do not fit the tool (ValueError)
    ├── ModelError              the model's endpoint failed or sent what no dialect allows
    │   └── ModelTimeout        no chunk from the model within its idle timeout (TimeoutError)
    ├── UsageError              the library was used wrongly (TypeError)
    ├── UnserializableOutput    a value has no JSON form (TypeError)
    ├── EventTooLarge           an event is over its byte bound (ValueError)
    └── ProtocolError           a client frame or command is not acceptable (ValueError)

Failures never leave a run as exceptions: the runner turns each into a typed
``tool.error`` or ``run.error`` event. These classes are how tools and callers
*describe* a failure.
"""

from __future__ import annotations

from typing import Any


class ToolplexError(Exception):
    """Base class of every toolplex exception."""


class ToolError(ToolplexError):
    """Raised by a tool to say how it failed.

    ``status`` 5xx and 429 are transient (retried with backoff; a 429's
    ``retry_after`` seconds replace the backoff step); any other status is
    permanent and never retried.

    Args:
        message: What went wrong, for the model and the client.
        status: The upstream's HTTP status, when there is one.
        retry_after: Seconds the upstream asked us to wait (429).
        code: The ``tool.error`` code of a permanent failure (default ``upstream``), e.g.
            ``tool_error`` for a tool that reported its own failure.
    """

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None,
        *, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.code = code


class ToolTimeout(ToolError, TimeoutError):
    """A call ran past its hard timeout. Raised by the call wrapper, never by tools.

    Args:
        tool_name: The tool that timed out.
        seconds: The timeout it had.
        partial: The chunks it had yielded before the timeout.
    """

    def __init__(self, tool_name: str, seconds: float, partial: list[Any]) -> None:
        super().__init__(f"{tool_name} timed out after {seconds:g} s")
        self.tool_name = tool_name
        self.seconds = seconds
        self.partial = partial


class InvalidArguments(ToolplexError, ValueError):
    """The model's arguments are not valid JSON or do not match the tool's schema.

    Raised by ``Tool.validate``; the runner reports it as ``tool.error`` code
    ``invalid_args`` so the model can correct itself on its next step.
    """

    def __init__(self, tool_name: str, detail: str) -> None:
        super().__init__(f"invalid arguments for {tool_name}: {detail}")
        self.tool_name = tool_name
        self.detail = detail


class ModelError(ToolplexError):
    """The model's stream failed: an error sent after HTTP 200, a line no dialect
    allows, a failed response. Raised by the providers; the run ends ``run.error``
    with :attr:`code`.

    Args:
        message: What went wrong, for the client.
        code: The ``run.error`` code (``model_error``, ``model_timeout``).
        transient: The same request may succeed if sent again (5xx, 429, overload);
            the provider retries it while none of the response was used.
    """

    def __init__(self, message: str, *, code: str = "model_error",
                 transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.transient = transient


class ModelTimeout(ModelError, TimeoutError):
    """No chunk arrived from the model within its idle timeout (the request
    included). Raised by the providers; the run ends ``run.error model_timeout``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no chunk from the model within {seconds:g} s",
                         code="model_timeout")
        self.seconds = seconds


class UsageError(ToolplexError, TypeError):
    """The library was used wrongly: raised at definition time, never during a run."""


class ProtocolError(ToolplexError, ValueError):
    """A client command cannot be accepted; the server answers ``command.error``.

    Args:
        code: A stable machine-readable code (``bad_json``, ``unknown_command``, ...).
        message: What is wrong, for a person.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnserializableOutput(ToolplexError, TypeError):
    """A value has no JSON form. Raised as an event enters the log (``toolplex.encoding``);
    a call whose chunk or result it is ends with ``tool.error`` ``unserializable_output``.

    Args:
        type_name: The type that has no JSON form.
        detail: Why, when it is not just the type.
    """

    def __init__(self, type_name: str, detail: str = "") -> None:
        super().__init__(f"the tool's output has no JSON form: {type_name}"
                         + (f" ({detail})" if detail else ""))
        self.type_name = type_name
        self.detail = detail


class EventTooLarge(ToolplexError, ValueError):
    """An event's JSON is over the log's byte bound (``Settings.max_event_bytes``). Raised
    on append; a call whose chunk or result it is ends with ``tool.error``
    ``output_too_large``.

    Args:
        size: The event's size in bytes (at least this many).
        limit: The bound.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the output is {size} bytes of JSON, over the {limit}-byte "
                         "bound on one event")
        self.size = size
        self.limit = limit
