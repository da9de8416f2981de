"""``GET /openapi.json``: an OpenAPI 3.1 description of the REST routes, for client generators.

Kept by hand beside the routes (a test checks that it is a valid OpenAPI document and
that it names every HTTP route the app serves, and no other). The WebSocket and the
event payloads are described by docs/protocol.md; here an event is an object with
``type`` and ``seq``.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

_JSON = "application/json"
_SSE = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, "Error")


def _sse(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_SSE: {"schema": {
        "type": "string", "description": "Server-sent events; each data: line is one event"}}}}


def _path(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names]


_UNAUTHORIZED = {"401": _error("Missing or invalid session token")}
_BODY_ERRORS = {"400": _error("Not JSON, or not the expected shape"),
                "413": _error("The body is too large"),
                "422": _error("The command is not valid")}
_SESSION_AUTH: list[dict[str, list[str]]] = [{"sessionToken": []}]
_KEY_AUTH: list[dict[str, list[str]]] = [{"apiKey": []}, {}]
"""Routes that start work: the server's API key when it has one (none on loopback)."""
_KEY_REFUSED = {"401": _error("The server requires an API key and none valid was sent")}


def _operation(summary: str, responses: dict[str, Any], *, op_id: str,
               parameters: list[dict[str, Any]] | None = None,
               body: str | None = None, auth: bool = False, key: bool = False,
               tags: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "operationId": op_id, "responses": responses}
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = {"required": True, "content": {_JSON: {"schema": _ref(body)}}}
    if auth:
        out["security"] = _SESSION_AUTH
    elif key:
        out["security"] = _KEY_AUTH
    if tags:
        out["tags"] = list(tags)
    return out


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Session": {"type": "object", "required": ["session_id", "token"], "properties": {
        "session_id": {"type": "string"},
        "token": {"type": "string", "description": "Bearer token for this session's routes"}}},
    "RunStart": {"type": "object", "required": ["input"], "properties": {"input": {
        "description": "A user message, or a list of chat messages",
        "oneOf": [{"type": "string"}, {"type": "array", "items": _ref("Message")}]}}},
    "Message": {"type": "object", "required": ["role"], "properties": {
        "role": {"type": "string"}, "content": {}}},
    "RunAccepted": {"type": "object", "required": ["run_id"],
                    "properties": {"run_id": {"type": "string"}}},
    "Ok": {"type": "object", "required": ["ok"], "properties": {
        "ok": {"type": "boolean"}, "replayed": {"type": "boolean"}}},
    "JobComplete": {"type": "object", "properties": {"output": {
        "description": "The job's result, as the tool would have returned it"}}},
    "JobStatus": {"type": "object", "required": ["job_id", "status"], "properties": {
        "job_id": {"type": "string"},
        "status": {"enum": ["pending", "succeeded", "failed", "cancelled", "expired"]},
        "via": {"type": "string"}, "tool": {"type": "string"},
        "progress": {"type": "number"}, "total": {"type": "number"},
        "message": {"type": "string"}, "output": {}, "error": {"type": "object"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["ok", "unhealthy"]}, "sessions": {"type": "integer"},
        "redis": {"type": "string"}}},
    "AgentInfo": {"type": "object", "required": ["prompts", "tools"], "properties": {
        "prompts": {"type": "array", "items": {"type": "string"}},
        "tools": {"type": "array", "items": {"type": "string"}}}},
    "Webhook": {"type": "object", "description": (
        "The job's output, or {\"error\": {code, message}} when the external work failed")},
    "ChatRequest": {"type": "object", "description": (
        "The body the client library of the protocol sends (AG-UI RunAgentInput, "
        "AI SDK useChat request)")},
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a new dict each time)."""
    spec = _document()
    # [security] every POST refuses a foreign Origin, and a body that is not JSON
    # (webhooks excepted: they are signed, partners choose the type); see guard.py.
    for path, item in spec["paths"].items():
        if "post" in item:
            responses = item["post"]["responses"]
            responses.setdefault("403", _error("A browser request from a foreign origin"))
            if not path.startswith("/v1/webhooks/"):
                responses.setdefault("415", _error("The body is not application/json"))
    return spec


def _document() -> dict[str, Any]:
    session = _path("session_id")
    return {
        "openapi": "3.1.0",
        "info": {"title": "toolplex", "version": version("toolplex"), "description": (
            "Sessions, runs and jobs over HTTP. Every event of a session is also on "
            "/v1/sessions/{session_id}/ws (WebSocket); see docs/protocol.md.")},
        "paths": {
            "/": {"get": _operation("The demo page", {"200": {
                "description": "HTML", "content": {"text/html": {
                    "schema": {"type": "string"}}}}}, op_id="demoPage", tags=("meta",))},
            "/healthz": {"get": _operation("Liveness", {
                "200": _json("Serving", "Health"),
                "503": _json("The shared store (Redis) is unreachable", "Health")},
                op_id="health", tags=("meta",))},
            "/v1/agent": {"get": _operation(
                "The agent's example prompts and tool names, for a chat UI's suggestions",
                {"200": _json("The agent", "AgentInfo")}, op_id="agentInfo", tags=("meta",))},
            "/metrics": {"get": _operation("Prometheus metrics", {"200": {
                "description": "Prometheus text exposition", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}}, op_id="metrics", tags=("meta",))},
            "/openapi.json": {"get": _operation("This document", {"200": {
                "description": "OpenAPI 3.1", "content": {_JSON: {
                    "schema": {"type": "object"}}}}}, op_id="openapi", tags=("meta",))},
            "/v1/sessions": {"post": _operation("Create a session", {
                "201": _json("Created; keep the token", "Session"),
                "503": _error("Too many sessions, or the store is unreachable"),
                **_KEY_REFUSED}, op_id="createSession", key=True, tags=("sessions",))},
            "/v1/sessions/{session_id}/events": {"get": _operation(
                "Tail the session's events (SSE), from Last-Event-ID or ?after=",
                {"200": _sse("Every event after the cursor, then live"),
                 "400": _error("The cursor is not a seq"), **_UNAUTHORIZED},
                op_id="sessionEvents", auth=True, tags=("sessions",),
                parameters=[*session, {"name": "after", "in": "query", "required": False,
                                       "schema": {"type": "integer", "minimum": 0}},
                            {"name": "Last-Event-ID", "in": "header", "required": False,
                             "schema": {"type": "string"}}])},
            "/v1/sessions/{session_id}/runs": {"post": _operation(
                "Start a run: 202 with its id, or (Accept: text/event-stream) its events",
                {"202": _json("Started", "RunAccepted"),
                 "200": _sse("The run's events, up to its terminal event"),
                 "409": _error("Another run of the session is going"),
                 **_BODY_ERRORS, **_UNAUTHORIZED},
                op_id="startRun", parameters=session, body="RunStart", auth=True,
                tags=("runs",))},
            "/v1/sessions/{session_id}/runs/{run_id}/cancel": {"post": _operation(
                "Cancel a run", {"202": _json("Cancelling", "Ok"),
                                 "404": _error("No such active run"), **_UNAUTHORIZED},
                op_id="cancelRun", parameters=_path("session_id", "run_id"), auth=True,
                tags=("runs",))},
            "/v1/sessions/{session_id}/calls/{call_id}/cancel": {"post": _operation(
                "Cancel one tool call", {"202": _json("Cancelling", "Ok"),
                                         "404": _error("No such running call"),
                                         **_UNAUTHORIZED},
                op_id="cancelCall", parameters=_path("session_id", "call_id"), auth=True,
                tags=("runs",))},
            "/v1/jobs/{job_id}": {"get": _operation(
                "Poll a job", {"200": _json("The job's status", "JobStatus"),
                               "404": _error("No such job"), **_UNAUTHORIZED},
                op_id="jobStatus", parameters=_path("job_id"), auth=True, tags=("jobs",))},
            "/v1/jobs/{job_id}/complete": {"post": _operation(
                "A person completes a job", {
                    "202": _json("Completed", "Ok"),
                    "404": _error("No such job"),
                    "409": _error("Already ended, or not a job a person completes"),
                    **_BODY_ERRORS, **_UNAUTHORIZED},
                op_id="completeJob", parameters=_path("job_id"), body="JobComplete",
                auth=True, tags=("jobs",))},
            "/v1/webhooks/{job_id}": {"post": _operation(
                "An external service reports a job's result (Standard Webhooks signature)",
                {"200": _json("Recorded (or a replay, recorded once)", "Ok"),
                 "401": _error("Unsigned, forged or stale; or webhooks are disabled"),
                 "404": _error("No such job"),
                 "409": _error("The job has already ended, or is not a webhook job"),
                 "400": _error("The body is not JSON"), "413": _error("The body is too large")},
                op_id="jobWebhook", parameters=[*_path("job_id"), {
                    "name": "token", "in": "query", "required": True,
                    "description": "The job's callback token, as in its callback_url",
                    "schema": {"type": "string"}}, *[
                    {"name": name, "in": "header", "required": True,
                     "schema": {"type": "string"}}
                    for name in ("webhook-id", "webhook-timestamp", "webhook-signature")]],
                body="Webhook", tags=("jobs",))},
            "/ag-ui": {"post": _operation(
                "Run the agent for an AG-UI client (AG-UI events as SSE)",
                {"200": _sse("AG-UI events"), **_BODY_ERRORS, **_KEY_REFUSED},
                op_id="agUi", body="ChatRequest", key=True, tags=("adapters",))},
            "/v1/ai-sdk/chat": {"post": _operation(
                "Run the agent for the Vercel AI SDK's useChat (UI message stream)",
                {"200": _sse("AI SDK UI message stream"), **_BODY_ERRORS, **_KEY_REFUSED},
                op_id="aiSdkChat", body="ChatRequest", key=True, tags=("adapters",))},
            "/v1/ai-sdk/chat/{chat_id}/stream": {"get": _operation(
                "Resume a chat's active stream (AI SDK resumable streams)",
                {"200": _sse("The rest of the active stream"),
                 "204": {"description": "No active stream"}},
                op_id="aiSdkResume", parameters=_path("chat_id"), tags=("adapters",))},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "The server's API key (--api-key, TOOLPLEX_API_KEY)"},
                                "sessionToken": {
                "type": "http", "scheme": "bearer",
                "description": "The token POST /v1/sessions returned (or ?token=)"}},
        },
    }


async def openapi(request: Request) -> JSONResponse:
    """``GET /openapi.json``."""
    return JSONResponse(document())
