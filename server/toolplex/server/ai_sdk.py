"""``POST /v1/ai-sdk/chat``: the Vercel AI SDK UI message stream (v1), for ``useChat``.

The body is what ``DefaultChatTransport`` sends (``{id, messages, trigger, messageId}``);
the chat ``id`` names the session (see :mod:`.conversations`). The response is one
assistant message per run, translated from the log event by event, never reordered:

==============================  ==========================================================
toolplex                        UI message stream part
==============================  ==========================================================
``run.started``                 ``start`` (``messageId`` = run id; ids in metadata)
``step.started/finished``       ``start-step`` / ``finish-step``
``text.start/delta/end``        ``text-start`` / ``text-delta`` / ``text-end``
``reasoning.start/delta/end``   ``reasoning-start`` / ``reasoning-delta`` / ``reasoning-end``
``tool.call.start/delta/end``   ``tool-input-start`` / ``-delta`` / ``-available``
``tool.output.delta``           ``tool-output-available`` ``preliminary: true``: the chunks
                                so far, at most every 100 ms per call
``tool.result`` / cancelled     ``tool-output-available``: what the model was told
``tool.error``                  ``tool-output-error``
retries, timeouts, queueing,    ``data-toolplex-retry``, ``-timeout``, ``-queued``
short circuit, circuit, jobs    (transient), ``-short-circuit``, ``-circuit``, ``-job``
``run.finished``                ``finish`` (``abort`` when cancelled)
``run.error``                   ``error``, then ``finish`` ``finishReason: "error"``
==============================  ==========================================================

then ``data: [DONE]``. ``GET /v1/ai-sdk/chat/{id}/stream`` (``resumeStream()``) replays
the chat's active run from its start, or answers 204 when nothing is running.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import pydantic
from starlette.requests import Request
from starlette.responses import Response

from ..calls import Outcome
from ..exceptions import ProtocolError
from ..session import Session
from .auth import token_of
from .conversations import (
    RunFrames,
    conversations,
    open_conversation,
    refusal,
    start_seq,
    turn_input,
)
from .hub import Hub
from .responses import event_stream

PRELIMINARY_INTERVAL = 0.1
"""Seconds between two preliminary output snapshots of one call."""

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
"""The header ``useChat``'s transport expects on a UI message stream."""

@dataclass
class _Call:
    name: str
    args: str = ""
    input_sent: bool = False
    chunks: list[Any] = field(default_factory=list)
    sent_at: float | None = None
    dirty: bool = False


@dataclass
class UIMessageStreamEncoder:
    """Translates one run's toolplex frames into UI message stream parts (dicts)."""

    interval: float = PRELIMINARY_INTERVAL
    _calls: dict[str, _Call] = field(default_factory=dict)
    _text: set[str] = field(default_factory=set)
    _reasoning_open: set[str] = field(default_factory=set)
    _step_open: bool = False
    _jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def due(self) -> float | None:
        """When the next held-back preliminary snapshot may go (monotonic), if any."""
        times = [c.sent_at + self.interval for c in self._calls.values()
                 if c.dirty and c.sent_at is not None]
        return min(times, default=None)

    def flush(self, now: float) -> list[dict[str, Any]]:
        """The held-back snapshots whose interval has passed."""
        return [self._snapshot(call_id, call, now) for call_id, call in self._calls.items()
                if call.dirty and call.sent_at is not None and call.sent_at + self.interval <= now]

    def feed(self, frame: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """The parts for one frame, after any snapshot that has become due."""
        return self.flush(now) + self._parts(frame["type"], frame, now)

    def _parts(self, kind: str, f: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if kind == "run.started":
            return [{"type": "start", "messageId": f["run_id"], "messageMetadata": {
                "toolplex": {"sessionId": f["session_id"], "runId": f["run_id"]}}}]
        if kind == "step.started":
            self._step_open = True
            return [{"type": "start-step"}]
        if kind == "step.finished":
            self._step_open = False
            return [{"type": "finish-step"}]
        if kind == "text.start":
            self._text.add(f["message_id"])
            return [{"type": "text-start", "id": f["message_id"]}]
        if kind == "text.delta":
            if not f["delta"] or f["message_id"] not in self._text:
                return []
            return [{"type": "text-delta", "id": f["message_id"], "delta": f["delta"]}]
        if kind == "text.end":
            self._text.discard(f["message_id"])
            return [{"type": "text-end", "id": f["message_id"]}]
        if kind.startswith("reasoning."):
            return self._reasoning(kind, f)
        if kind == "run.finished":
            if f["outcome"] == "cancelled":
                return [*self._close(), {"type": "abort", "reason": "cancelled"}]
            meta: dict[str, Any] = {"outcome": f["outcome"]}
            if f.get("usage"):
                meta["usage"] = f["usage"]
            return [*self._close(), {"type": "finish", "finishReason": "stop",
                                     "messageMetadata": {"toolplex": meta}}]
        if kind == "run.error":
            error = f["error"]
            return [*self._close(), {"type": "error",
                                     "errorText": f"{error['code']}: {error['message']}"},
                    {"type": "finish", "finishReason": "error"}]
        if kind == "tool.circuit_open":
            return [_data("circuit", f["tool"], {"tool": f["tool"], "failures": f["failures"]})]
        if kind.startswith("job."):
            return self._job(kind, f)
        return self._tool(kind, f, now)

    def _tool(self, kind: str, f: dict[str, Any], now: float) -> list[dict[str, Any]]:
        call_id = f.get("call_id")
        if call_id is None:
            return []
        if kind == "tool.call.start":
            self._calls[call_id] = _Call(f["name"])
            return [{"type": "tool-input-start", "toolCallId": call_id, "toolName": f["name"]}]
        call = self._calls.setdefault(call_id, _Call(""))
        if kind == "tool.call.delta":
            call.args += f["delta"]
            if not f["delta"]:
                return []
            return [{"type": "tool-input-delta", "toolCallId": call_id,
                     "inputTextDelta": f["delta"]}]
        if kind == "tool.call.end":
            return self._input(call_id, call, f["args"])
        if kind == "tool.output.delta":
            call.chunks.append(f["data"])
            if call.sent_at is None or now - call.sent_at >= self.interval:
                return [self._snapshot(call_id, call, now)]
            call.dirty = True
            return []
        if kind == "tool.retrying":
            # [protocol] a client drops the failed attempt's partial output.
            shown = call.sent_at is not None and bool(call.chunks)
            call.chunks, call.dirty = [], False
            retry = {"callId": call_id, "attempt": f["attempt"], "delayMs": f["delay_ms"],
                     "reason": f["reason"]}
            if f.get("error") is not None:
                retry["error"] = f["error"]
            return [*([self._snapshot(call_id, call, now)] if shown else []),
                    _data("retry", call_id, retry)]
        if kind == "tool.timeout":
            return [_data("timeout", call_id, {
                "callId": call_id, "attempt": f["attempt"], "timeoutMs": f["timeout_ms"],
                "willRetry": f["will_retry"]})]
        if kind == "tool.queued":
            return [{**_data("queued", call_id, {"callId": call_id, "upstream": f["upstream"]}),
                     "transient": True}]
        if kind == "tool.short_circuit":
            return [_data("short-circuit", call_id, {
                "callId": call_id, "cancelledCallIds": f["cancelled_call_ids"]})]
        if kind in ("tool.result", "tool.error", "tool.cancelled"):
            return self._terminal(kind, call_id, call, f)
        return []

    def _input(self, call_id: str, call: _Call, args: Any) -> list[dict[str, Any]]:
        if call.input_sent:
            return []
        call.input_sent = True
        return [{"type": "tool-input-available", "toolCallId": call_id, "toolName": call.name,
                 "input": args}]

    def _terminal(self, kind: str, call_id: str, call: _Call,
                  f: dict[str, Any]) -> list[dict[str, Any]]:
        call.dirty = False
        # A call cancelled before its arguments ended still gets its input part first.
        parts = self._input(call_id, call, _parsed(call.args))
        if kind == "tool.error":
            error = f["error"]
            return [*parts, {"type": "tool-output-error", "toolCallId": call_id,
                             "errorText": f"{error['code']}: {error['message']}"}]
        if kind == "tool.result" and not f.get("partial"):
            output = f["output"]
        elif kind == "tool.result":
            output = json.loads(Outcome("result", output=f["output"], partial=True,
                                        stopped_by=f.get("stopped_by")).for_model())
        else:
            # [protocol] the model gets the cancel reason as the call's result; so does the UI.
            output = json.loads(Outcome("cancelled", reason=f["reason"], output=f.get(
                "partial_output"), by_call_id=f.get("by_call_id")).for_model())
        return [*parts, {"type": "tool-output-available", "toolCallId": call_id,
                         "output": output}]

    def _snapshot(self, call_id: str, call: _Call, now: float) -> dict[str, Any]:
        call.sent_at, call.dirty = now, False
        return {"type": "tool-output-available", "toolCallId": call_id,
                "output": list(call.chunks), "preliminary": True}

    def _job(self, kind: str, f: dict[str, Any]) -> list[dict[str, Any]]:
        job_id = f["job_id"]
        if kind == "job.pending":
            self._jobs[job_id] = {"jobId": job_id, "callId": f["call_id"], "via": f["via"],
                                  "status": "pending"}
        elif job_id not in self._jobs:
            return []
        elif kind == "job.progress":
            self._jobs[job_id].update(
                {k: f[k] for k in ("progress", "total", "message") if f.get(k) is not None})
        elif kind == "job.completed":
            self._jobs[job_id].update(
                {k: f[k] for k in ("status", "output", "error") if f.get(k) is not None})
        return [_data("job", job_id, dict(self._jobs[job_id]))]

    def _reasoning(self, kind: str, f: dict[str, Any]) -> list[dict[str, Any]]:
        message_id = f["message_id"]
        if kind == "reasoning.start":
            self._reasoning_open.add(message_id)
            return [{"type": "reasoning-start", "id": message_id}]
        if message_id not in self._reasoning_open:
            return []
        if kind == "reasoning.delta":
            return [{"type": "reasoning-delta", "id": message_id, "delta": f["delta"]}]
        self._reasoning_open.discard(message_id)
        return [{"type": "reasoning-end", "id": message_id}]

    def _close(self) -> list[dict[str, Any]]:
        parts = [{"type": "reasoning-end", "id": m} for m in sorted(self._reasoning_open)]
        parts += [{"type": "text-end", "id": m} for m in sorted(self._text)]
        if self._step_open:
            parts.append({"type": "finish-step"})
        self._text.clear()
        self._reasoning_open.clear()
        self._step_open = False
        return parts


def _data(name: str, part_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """A ``data-toolplex-*`` part; parts with the same id replace each other in the UI."""
    return {"type": f"data-toolplex-{name}", "id": part_id, "data": data}


def _parsed(args: str) -> Any:
    try:
        value = json.loads(args) if args.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def encode(part: dict[str, Any] | str) -> bytes:
    """One SSE event: ``data: <compact JSON>`` (or ``[DONE]``), LF line endings."""
    text = part if isinstance(part, str) else json.dumps(part, separators=(",", ":"),
                                                         ensure_ascii=False)
    return f"data: {text}\n\n".encode()


class _UIMessage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = []


class _ChatRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    id: str = pydantic.Field(min_length=1)
    messages: list[_UIMessage]
    trigger: str | None = None


def _text(parts: Sequence[dict[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def _assistant(parts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One assistant message (and its tool messages) per step of a UI message."""
    out: list[dict[str, Any]] = []
    steps: list[list[dict[str, Any]]] = [[]]
    for part in parts:
        if part.get("type") == "step-start" and steps[-1]:
            steps.append([])
        steps[-1].append(part)
    for step in steps:
        calls = [p for p in step if p.get("toolCallId") and p.get("state") in (
            "output-available", "output-error")]
        text = _text(step)
        if not text and not calls:
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [{"id": p["toolCallId"], "type": "function", "function": {
                "name": p.get("toolName") or str(p["type"]).removeprefix("tool-"),
                "arguments": json.dumps(p.get("input") or {})}} for p in calls]
        out.append(message)
        for p in calls:
            content = (p.get("output") if p["state"] == "output-available"
                       else {"error": p.get("errorText")})
            out.append({"role": "tool", "tool_call_id": p["toolCallId"],
                        "content": content if isinstance(content, str) else json.dumps(content)})
    return out


def chat_messages(messages: Sequence[_UIMessage]) -> list[dict[str, Any]]:
    """UI messages as OpenAI chat messages."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            out += _assistant(message.parts)
        else:
            out.append({"role": message.role, "content": _text(message.parts)})
    return out


def run_input(session: Session, messages: Sequence[_UIMessage]) -> str | list[dict[str, Any]]:
    """The last user message; for a new session, the whole conversation."""
    return turn_input(session, chat_messages(messages))


async def _stream(hub: Hub, session: Session, run_id: str, after: int) -> AsyncIterator[bytes]:
    encoder = UIMessageStreamEncoder()
    tail = RunFrames(hub, session, run_id, after)
    async with aclosing(tail.__aiter__()) as frames:
        while True:
            # Nothing new in the log: hold throttled snapshots back only until they are due.
            while (due := encoder.due) is not None and not tail.more_ready():
                with anyio.move_on_after(max(due - time.monotonic(), 0.0)):
                    await session.log.wait_beyond(tail.cursor)
                for part in encoder.flush(time.monotonic()):
                    yield encode(part)
            try:
                frame = await anext(frames)
            except StopAsyncIteration:
                break
            for part in encoder.feed(frame, time.monotonic()):
                yield encode(part)
    yield encode("[DONE]")


async def chat(request: Request) -> Response:
    """``POST /v1/ai-sdk/chat``: start a run on the chat's last user message; stream it."""
    try:
        hub, body, session = await open_conversation(request, _ChatRequest,
                                                     "a chat request", "ai-sdk", "id")
        head = session.log.head_seq
        run = await hub.start_run(session, run_input(session, body.messages))
    except ProtocolError as exc:
        return refusal(exc)
    return event_stream(hub, _stream(hub, session, run.id, head), HEADERS)


async def resume_stream(request: Request) -> Response:
    """``GET /v1/ai-sdk/chat/{chat_id}/stream``: replay the active run, or 204."""
    hub: Hub = request.app.state.hub
    try:
        session = await conversations(request).find(hub, "ai-sdk", request.path_params["chat_id"],
                                              token_of(request))
    except ProtocolError as exc:
        return refusal(exc)
    run = next(iter(session.runs.values()), None) if session is not None else None
    if session is None or run is None:
        return Response(status_code=204)
    return event_stream(hub, _stream(hub, session, run.id, start_seq(session, run.id)), HEADERS)
