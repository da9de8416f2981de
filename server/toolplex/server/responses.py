"""What every HTTP route answers with: one JSON error shape, one kind of SSE response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sse_starlette import EventSourceResponse
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from .hub import Hub

STATUS = {"bad_json": 400, "bad_command": 422, "bad_input": 422, "unknown_command": 400,
          "run_active": 409, "unknown_run": 404, "unknown_call": 404, "unknown_job": 404,
          "job_finished": 409, "not_human": 409, "not_webhook": 409,
          "bad_callback_token": 401, "too_large": 413, "too_deep": 400,
          "bad_cursor": 400,
          "unauthorized": 401, "store_unavailable": 503,
          "forbidden_origin": 403, "unsupported_media": 415, "too_many_sessions": 503,
          "shutting_down": 503}
"""HTTP status by error code (400 for any other)."""

RETRY_SESSIONS = 60
"""Seconds a client refused for ``too_many_sessions`` is told to wait: the idle sweep's
period, after which expired sessions have made room."""


def error_response(code: str, message: str, status: int | None = None) -> JSONResponse:
    """``{"error": {code, message}}`` with the code's status."""
    headers = ({"www-authenticate": "Bearer"} if code == "unauthorized"
               else {"retry-after": str(RETRY_SESSIONS)} if code == "too_many_sessions"
               else None)
    return JSONResponse({"error": {"code": code, "message": message}},
                        status_code=status or STATUS.get(code, 400), headers=headers)


def event_stream(hub: Hub, content: AsyncIterator[Any],
                 headers: dict[str, str] | None = None) -> EventSourceResponse:
    """An SSE response with the server's heartbeat and send timeout."""
    # [protocol] LF line endings only; heartbeats are transport-level comments.
    return EventSourceResponse(
        content, ping=hub.settings.heartbeat, sep="\n", send_timeout=hub.settings.send_timeout,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})
