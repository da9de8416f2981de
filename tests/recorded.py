"""A model endpoint that serves recorded-shape SSE bodies through the real ``openai`` SDK.

Each request gets the next body in order (then a plain text answer); a body is a
list of frames: a dict (one ``data:`` event), bytes (sent verbatim: comments,
broken lines) or a :class:`Gate` (wait until a tool has started, to show early
dispatch with events, not sleeps).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

from toolplex import tool
from toolplex.scripted import StreamingBody

_MISSING: Any = object()
_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(frozen=True)
class Gate:
    """Hold the stream here until tool ``name`` has started (at most 10 s)."""

    name: str


Frame = dict[str, Any] | bytes | Gate


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, *,
          choices: list[Any] | None = None, **top: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object."""
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                            "created": 1764000000, "model": "m"}
    body["choices"] = choices if choices is not None else [
        {"index": 0, "delta": delta or {}, "finish_reason": finish}]
    body.update(top)
    return body


def tc(*, index: Any = _MISSING, id: Any = _MISSING, type: Any = "function",
       name: Any = _MISSING, args: Any = _MISSING, **extra: Any) -> dict[str, Any]:
    """One ``tool_calls`` entry with only the keys given (``type=None`` leaves it out)."""
    entry: dict[str, Any] = {}
    if index is not _MISSING:
        entry["index"] = index
    if id is not _MISSING:
        entry["id"] = id
    if type is not None and (name is not _MISSING or id is not _MISSING):
        entry["type"] = type
    function: dict[str, Any] = {}
    if name is not _MISSING:
        function["name"] = name
    if args is not _MISSING:
        function["arguments"] = args
    if function:
        entry["function"] = function
    entry.update(extra)
    return entry


def calls(*entries: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    """A chunk whose delta holds these tool call entries."""
    return chunk({"tool_calls": list(entries)}, finish, **top)


def text_answer(text: str = "done") -> list[Frame]:
    return [chunk({"role": "assistant", "content": text}), chunk({}, "stop")]


class Endpoint(httpx2.AsyncBaseTransport):
    """Serves ``bodies`` one per request, then :func:`text_answer`; records requests."""

    def __init__(self, *bodies: Sequence[Frame], done: bool = True) -> None:
        self.bodies = [list(b) for b in bodies]
        self.done = done
        self.requests: list[dict[str, Any]] = []
        self.sent = 0
        """Frames sent so far, over all requests."""
        self.started: dict[str, anyio.Event] = {}
        self.started_at: dict[str, int] = {}
        """The value of :attr:`sent` when each tool first started."""
        self.finish_at: list[int] = []
        """The value of :attr:`sent` as each finish frame went out."""
        self.gates_missed: list[str] = []

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self, timeout=None)

    def tool_started(self, name: str) -> None:
        self.started_at.setdefault(name, self.sent)
        self.started.setdefault(name, anyio.Event()).set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(json.loads(await request.aread()))
        number = len(self.requests) - 1
        frames = self.bodies[number] if number < len(self.bodies) else text_answer()
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               stream=StreamingBody(self._serve(frames)), request=request)

    async def _serve(self, frames: list[Frame]) -> AsyncIterator[bytes]:
        for frame in frames:
            if isinstance(frame, Gate):
                event = self.started.setdefault(frame.name, anyio.Event())
                with anyio.move_on_after(10) as scope:
                    await event.wait()
                if scope.cancelled_caught:
                    self.gates_missed.append(frame.name)
                continue
            self.sent += 1
            if isinstance(frame, bytes):
                yield frame
                continue
            kind = frame.get("type")
            if kind in _RESPONSE_ENDS or any(
                    c.get("finish_reason") for c in frame.get("choices") or ()):
                self.finish_at.append(self.sent)
            # Responses events name themselves on an `event:` line, as OpenAI sends them.
            head = f"event: {kind}\n" if isinstance(kind, str) else ""
            yield f"{head}data: {json.dumps(frame)}\n\n".encode()
        if self.done:
            yield b"data: [DONE]\n\n"


def recording_tools(endpoint: Endpoint) -> tuple[list[Any], list[tuple[str, dict[str, Any]]]]:
    """``read(path)`` and ``weather(city)``: each records its arguments and when it
    started relative to the stream."""
    ran: list[tuple[str, dict[str, Any]]] = []

    @tool
    async def read(path: str) -> dict[str, Any]:
        """Read a file."""
        endpoint.tool_started("read")
        ran.append(("read", {"path": path}))
        return {"text": f"contents of {path}"}

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """The weather in a city."""
        endpoint.tool_started("weather")
        ran.append(("weather", {"city": city}))
        return {"city": city, "sky": "clear"}

    return [read, weather], ran
