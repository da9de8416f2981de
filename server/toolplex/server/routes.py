"""The HTTP routes: sessions, SSE tail, runs, cancels, health and metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..backends import unavailable
from ..decode import loads
from ..events import TERMINAL_RUN_TYPES
from ..exceptions import ProtocolError
from ..jobs import status_of
from ..session import Session
from ..store import OPEN
from .auth import api_key_ok, query_token, token_of
from .bodies import read_body, read_json
from .commands import JobComplete, RunStart, parse_command
from .hub import Hub
from .readers import SlowReader, frames, hello
from .responses import error_response, event_stream
from .webhooks import WebhookRefused, bound_to, verify


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _refused() -> JSONResponse:
    # [protocol] the same answer for a wrong token and an unknown session.
    return error_response("unauthorized", "missing or invalid session token")


async def _session(request: Request) -> Session | None:
    return await _hub(request).store.authorize(request.path_params["session_id"], token_of(request))


async def _body(request: Request) -> Any:
    return await read_json(request, _hub(request).settings.max_body_bytes, {})


def _sse(frame: dict[str, Any]) -> ServerSentEvent:
    seq = frame.get("seq") if not frame["type"].startswith("stream.") else None
    data = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    # [protocol] id: <seq> on every logged event; LF line endings only.
    return ServerSentEvent(data=data, id=str(seq) if seq is not None else None, sep="\n")


async def create_session(request: Request) -> Response:
    """``POST /v1/sessions`` -> ``{session_id, token}`` (an API key when keys are set)."""
    keys = _hub(request).settings.api_keys
    if keys and not api_key_ok(token_of(request), keys):
        return error_response("unauthorized", "missing or invalid API key")
    try:
        session = await _hub(request).create_session()
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    return JSONResponse({"session_id": session.id, "token": session.token}, status_code=201)


async def events(request: Request) -> Response:
    """``GET /v1/sessions/{id}/events``: SSE tail from Last-Event-ID or ``?after=``."""
    hub = _hub(request)
    session = await _session(request)
    if session is None:
        return _refused()
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        after = await hub.cursor(session, raw.strip())
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        hub.store.readers[session.id] = hub.store.readers.get(session.id, 0) + 1
        hub.metrics.readers.labels("sse").inc()
        try:
            yield _sse(hello(session, after))
            async for frame in frames(session, after, hub.settings):
                yield _sse(frame)
        except SlowReader:
            hub.metrics.reader_drops.labels("disconnected").inc()
        finally:
            hub.store.leave(session.id)
            hub.metrics.readers.labels("sse").dec()
            session.touch()

    return event_stream(hub, stream())


async def start_run(request: Request) -> Response:
    """``POST /v1/sessions/{id}/runs``: 202 ``{run_id}``, or the run's events as SSE."""
    hub = _hub(request)
    session = await _session(request)
    if session is None:
        return _refused()
    try:
        body = await _body(request)
        command = parse_command({**body, "type": "run.start"} if isinstance(body, dict) else body)
        assert isinstance(command, RunStart)
        head = session.log.head_seq
        run = await hub.start_run(session, command.input)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return JSONResponse({"run_id": run.id}, status_code=202)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for frame in frames(session, head, hub.settings):
            if frame.get("run_id") != run.id:
                continue
            yield _sse(frame)
            if frame["type"] in TERMINAL_RUN_TYPES:
                return

    return event_stream(hub, stream())


async def _command(request: Request, data: dict[str, Any]) -> Response:
    """Carry out a command for the request's session, as the WebSocket would."""
    session = await _session(request)
    if session is None:
        return _refused()
    try:
        await _hub(request).execute(session, parse_command(data))
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    return JSONResponse({"ok": True}, status_code=202)


async def cancel_run(request: Request) -> Response:
    """``POST /v1/sessions/{id}/runs/{run_id}/cancel``."""
    return await _command(request, {"type": "run.cancel",
                                    "run_id": request.path_params["run_id"]})


async def cancel_call(request: Request) -> Response:
    """``POST /v1/sessions/{id}/calls/{call_id}/cancel``."""
    return await _command(request, {"type": "tool.cancel",
                                    "call_id": request.path_params["call_id"]})


async def complete_job(request: Request) -> Response:
    """``POST /v1/jobs/{job_id}/complete``: a person finishes a job (session token)."""
    hub = _hub(request)
    try:
        # The token is checked before a byte of the body is read.
        session = await hub.session_of_job(request.path_params["job_id"], token_of(request))
        if session is None:
            return _refused()
        body = await _body(request)
        command = parse_command({"output": body.get("output") if isinstance(body, dict) else body,
                                 "type": "job.complete", "job_id": request.path_params["job_id"]})
        assert isinstance(command, JobComplete)
        await hub.complete_job(session, command.job_id, command.output)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    return JSONResponse({"ok": True}, status_code=202)


async def agent_info(request: Request) -> Response:
    """``GET /v1/agent``: what a chat UI may show before the first run: the agent's
    example prompts and the names of its tools."""
    agent = _hub(request).agent
    return JSONResponse({"prompts": list(agent.prompts), "tools": sorted(agent.tools)})


async def healthz(request: Request) -> Response:
    """``GET /healthz``: liveness; 503 while the backend's store (Redis) is unreachable."""
    hub = _hub(request)
    if not await hub.backend.healthy():
        return JSONResponse({"status": "unhealthy", "redis": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "sessions": len(hub.store)})


async def store_unreachable(request: Request, exc: Exception) -> Response:
    """Any request that needed Redis while it was down: 503, nothing changed."""
    refusal = unavailable()
    return error_response(refusal.code, refusal.message)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text."""
    hub = _hub(request)
    return Response(hub.metrics.render(),
                     media_type="text/plain; version=0.0.4; charset=utf-8")


async def job_status(request: Request) -> Response:
    """``GET /v1/jobs/{job_id}``: poll a job (its session's token)."""
    hub = _hub(request)
    job_id = request.path_params["job_id"]
    try:
        session = await hub.session_of_job(job_id, token_of(request))
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    if session is None:
        return _refused()
    row = await hub.job(job_id)
    assert row is not None
    return JSONResponse(status_of(row))


async def webhook(request: Request) -> Response:
    """``POST /v1/webhooks/{job_id}?token=``: an external service reports a job's result.

    The checks, in order: a secret is configured; the URL's token is the job's callback
    token (before the body is read); the body fits; the signature; the job exists and is
    finished by webhook; the body is JSON. Only then is the ``webhook-id`` recorded, so a
    delivery refused for its body can be retried with the same id.
    """
    hub = _hub(request)
    settings = hub.settings
    job_id = request.path_params["job_id"]
    if not settings.webhook_secret:
        return error_response("webhooks_disabled", "no webhook secret is configured", 401)
    if not bound_to(settings.webhook_secret, job_id, query_token(request.scope["query_string"])):
        return error_response("bad_callback_token", "the URL's token is not this job's "
                              "callback token: post to the job's callback_url", 401)
    try:
        raw = await read_body(request, settings.max_body_bytes)
        webhook_id = verify(settings.webhook_secret, request.headers, raw,
                            tolerance=settings.webhook_tolerance)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    except WebhookRefused as exc:
        # [protocol] forged, unsigned or stale: 401, and nothing changes.
        return error_response("bad_signature", str(exc), 401)
    row = await hub.job(job_id)
    if row is None:
        return error_response("unknown_job", f"no job {job_id!r}")
    if row["via"] != "webhook":
        return error_response("not_webhook", f"job {job_id} is finished by {row['via']}, "
                              "not by a webhook")
    try:
        body = loads(raw) if raw.strip() else None
    except ProtocolError as exc:
        return error_response(exc.code, f"the webhook body: {exc.message}")
    # From worker threads when the store is shared: a stalled Redis fails the delivery
    # (503: the partner retries), it does not freeze the event loop.
    store, io = hub.jobs.store, hub.jobs.ask
    await hub.store.fetch(row["session_id"])  # (held here: its job.completed is logged)
    if not await io(store.first_webhook, webhook_id, job_id):
        return JSONResponse({"ok": True, "replayed": True})
    applied = False
    try:
        if row["status"] in OPEN:
            applied = await _apply(hub, job_id, body)
    finally:
        if not applied:
            with anyio.CancelScope(shield=True):  # [webhooks] recorded once applied only
                await io(store.forget_webhook, webhook_id)
    if not applied:
        return error_response("job_finished", f"job {job_id} has already ended")
    return JSONResponse({"ok": True})


async def _apply(hub: Hub, job_id: str, body: Any) -> bool:
    """Complete a job from a webhook's body (``{"error": ...}`` fails it)."""
    if isinstance(body, dict) and isinstance(body.get("error"), (dict, str)):
        error = body["error"]
        error = error if isinstance(error, dict) else {"message": error}
        return await hub.jobs.complete_now(job_id, "failed", error={
            "code": str(error.get("code", "job_failed")),
            "message": str(error.get("message", "the external service reported a failure"))})
    return await hub.jobs.complete_now(job_id, "succeeded", output=body)
