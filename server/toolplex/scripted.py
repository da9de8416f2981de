"""The scripted model: a deterministic LLM that speaks the providers' streaming wire formats.

It is the embedded default (no key, no network). Its responses travel as real
server-sent events through the ``openai`` SDK (``chat.completion.chunk`` in any
dialect of :mod:`toolplex.dialects`, or ``/v1/responses`` events), so the demo and
the tests run the same parsing code as a real model. In-process it is
reached through an httpx transport that streams (httpx's ASGI transport buffers
whole bodies); :meth:`ScriptedModel.asgi_app` serves it on a port for others.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from .decode import loads
from .dialects import DIALECTS, chat_messages, encoder
from .exceptions import ProtocolError, UsageError
from .model import ModelChunk
from .providers import OpenAIModel, OpenAIResponsesModel, StreamingModel

_PATHS = ("/chat/completions", "/responses")

Results = dict[str, Any]
"""Earlier tool outputs of the conversation by tool name (the latest wins), and
``input``: the text of the latest user message."""


@dataclass(frozen=True)
class Call:
    """A tool call in a scripted step.

    ``args`` is a dict (its strings may hold ``{{tool.path}}`` templates filled
    from earlier results) or a function of the earlier results.
    """

    name: str
    args: Mapping[str, Any] | Callable[[Results], Mapping[str, Any]] = field(default_factory=dict)
    after: float = 0.0
    """Seconds to wait before this call begins streaming."""
    raw: str | None = None
    """Send this text as the arguments verbatim (to script invalid JSON)."""
    id: str | None = None
    """The id the model gives the call (default ``call_<request>_<index>``), for scripts
    whose calls refer to each other (``{"$from": id}``)."""


@dataclass(frozen=True)
class Step:
    """One scripted model response: optional text, then tool calls."""

    text: str | Callable[[Results], str] = ""
    calls: Sequence[Call] = ()
    reasoning: str = ""
    """Reasoning streamed before the text (``reasoning_content`` deltas, or a Responses
    reasoning summary, as the dialect sends it)."""
    delay: float = 0.0
    """Seconds before the first chunk (model latency)."""
    token_delay: float = 0.0
    arg_delay: float = 0.0
    """Seconds between argument fragments."""
    arg_fragments: int = 3
    finish: str | None = None
    """Override the finish reason (``length`` scripts a cut-off response)."""


Script = Sequence[Step]


def _lookup(results: Results, path: str) -> Any:
    value: Any = results
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


_TEMPLATE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def _fill(value: Any, results: Results) -> Any:
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value)
        if whole:
            return _lookup(results, whole.group(1))
        return _TEMPLATE.sub(lambda m: str(_lookup(results, m.group(1))), value)
    if isinstance(value, dict):
        return {k: _fill(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, results) for v in value]
    return value


def _results(messages: Sequence[Mapping[str, Any]]) -> Results:
    names: dict[str, str] = {}
    results: Results = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
        if message.get("role") == "tool" and message.get("tool_call_id") in names:
            content = message.get("content")
            try:
                value = json.loads(content) if isinstance(content, str) else content
            except json.JSONDecodeError:
                value = content
            results[names[message["tool_call_id"]]] = value
        if message.get("role") == "user":
            results["input"] = str(message.get("content", ""))
    return results


def _split(text: str, parts: int) -> list[str]:
    if parts <= 1 or len(text) < parts:
        return [text]
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


class ScriptedModel:
    """A deterministic model driven by scripts, reached through the real SDK.

    Args:
        script: The steps of the one script (a list of :class:`Step`).
        scripts: Several scripts by keyword: the first keyword found in the
            conversation's latest user message picks the script.
        default: The script when no keyword matches (default: a short reply).
        repeat_last: Repeat the last step forever (for loop-guard tests).
        keep_requests: How many of the latest request bodies :attr:`requests` keeps, for
            tests to inspect (each holds a whole conversation: a long-lived server
            passes 0, as the demo agent does).
        dialect: The wire shape it speaks (:data:`toolplex.dialects.DIALECTS`):
            ``openai`` (the reference), ``gemini``, ``mistral``, ``vllm``, ...,
            or ``responses`` (then it is reached as an :class:`OpenAIResponsesModel`).
        idle_timeout: The client's idle timeout (``model_timeout``).

    The step number is the count of assistant messages since the latest user
    message, so the same model serves any number of sessions at once.

    Example::

        ScriptedModel([
            Step(calls=[Call("lookup", {"domain": "acme.com"})]),
            Step(text="Acme employs {{lookup.employees}} people."),
        ])
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        scripts: Mapping[str, Script] | None = None,
        default: Script | None = None,
        repeat_last: bool = False,
        keep_requests: int = 100,
        dialect: str = "openai",
        idle_timeout: float | None = 60.0,
    ) -> None:
        if dialect not in DIALECTS:
            raise UsageError(f"unknown dialect {dialect!r} (dialects: {', '.join(DIALECTS)})")
        self.dialect = dialect
        self.scripts: dict[str, Script] = dict(scripts or {})
        self.default: Script = (
            script if script is not None else default or [Step(text="Hello from toolplex.")]
        )
        self.repeat_last = repeat_last
        self.requests: deque[dict[str, Any]] = deque(maxlen=keep_requests)
        """The latest request bodies received, oldest first, for tests to inspect."""
        self.served = 0
        """How many requests were received."""
        http_client = httpx2.AsyncClient(transport=_Transport(self), timeout=None)
        kind = OpenAIResponsesModel if dialect == "responses" else OpenAIModel
        self.endpoint: StreamingModel = kind(
            "scripted", base_url="http://scripted.local/v1", api_key="scripted",
            http_client=http_client, idle_timeout=idle_timeout,
        )
        """The real client the model is reached through."""

    @property
    def model(self) -> str:
        """The model name it answers to (``scripted``)."""
        return self.endpoint.model

    @property
    def client(self) -> Any:
        """The ``openai`` SDK client (``AsyncOpenAI``) of :attr:`endpoint`."""
        return self.endpoint.client

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelChunk]:
        """Stream one scripted response through the SDK, as :attr:`endpoint` reads it."""
        return self.endpoint.stream(messages, tools)

    def pick(self, messages: Sequence[Mapping[str, Any]]) -> tuple[Script, int]:
        """The script and step number for a conversation."""
        last_user = max(
            (i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1
        )
        step = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
        text = str(messages[last_user].get("content", "")).lower() if last_user >= 0 else ""
        for keyword, script in self.scripts.items():
            if keyword.lower() in text:
                return script, step
        return self.default, step

    def plan(self, body: dict[str, Any]) -> tuple[Step, str, list[str]]:
        """The step answering ``body``: its text and each call's arguments, filled in.

        Raises:
            ValueError: A template names no earlier result.
        """
        self.requests.append(body)
        self.served += 1
        messages = body["messages"] if "messages" in body else chat_messages(
            body.get("input") or [])
        script, number = self.pick(messages)
        if number < len(script):
            step = script[number]
        elif self.repeat_last and script:
            step = script[-1]
        else:
            step = Step(text="(end of script)")
        results = _results(messages)
        try:
            text = step.text(results) if callable(step.text) else _fill(step.text, results)
            arguments = [
                call.raw if call.raw is not None
                else json.dumps(call.args(results) if callable(call.args)
                                else _fill(call.args, results))
                for call in step.calls
            ]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"script step {number}: no earlier result for {exc}") from None
        return step, str(text), arguments

    async def _stream(
        self, body: dict[str, Any], step: Step, text: str, arguments: list[str], path: str
    ) -> AsyncIterator[bytes]:
        if path.endswith("/responses"):
            dialect = "responses"
        else:  # a chat client reaching a Responses-speaking model gets the reference
            dialect = "openai" if self.dialect == "responses" else self.dialect
        prompt = len(json.dumps(body.get("messages", body.get("input", [])))) // 4
        wire = encoder(dialect, f"chatcmpl-{self.served}", prompt=prompt, include_usage=bool(
            (body.get("stream_options") or {}).get("include_usage")))
        if step.delay:
            await anyio.sleep(step.delay)
        for frame in wire.start():
            yield frame
        for piece in re.findall(r"\S+\s*|\s+", step.reasoning):
            for frame in wire.reasoning(piece):
                yield frame
        for token in re.findall(r"\S+\s*|\s+", text):
            if step.token_delay:
                await anyio.sleep(step.token_delay)
            for frame in wire.text(token):
                yield frame
        for index, (call, args) in enumerate(zip(step.calls, arguments, strict=True)):
            if call.after:
                await anyio.sleep(call.after)
            call_id = call.id or f"call_{self.served}_{index}"
            for frame in wire.call_begin(index, call_id, call.name):
                yield frame
            for fragment in _split(args, step.arg_fragments):
                if step.arg_delay:
                    await anyio.sleep(step.arg_delay)
                for frame in wire.call_args(index, fragment):
                    yield frame
            for frame in wire.call_end(index):
                yield frame
        finish = step.finish or ("tool_calls" if step.calls else "stop")
        for frame in wire.finish(finish, prompt, len(text) // 4 + 1):
            yield frame

    async def respond(self, body: dict[str, Any], path: str = "/v1/chat/completions"
                      ) -> tuple[int, AsyncIterator[bytes]]:
        """Status and body for a request to ``path`` (``.../chat/completions`` or
        ``.../responses``): 400 with the reason when the script cannot answer."""
        try:
            step, text, arguments = self.plan(body)
        except ValueError as exc:
            return 400, _refusal(str(exc))
        return 200, self._stream(body, step, text, arguments, path)

    def asgi_app(self, max_body: int = 1 << 20) -> Callable[..., Any]:
        """A bare ASGI app serving ``POST /v1/chat/completions`` and ``POST /v1/responses``
        for other programs.

        A body past ``max_body`` bytes is refused (413) as it arrives; one that is not
        JSON, or nests too deep, gets the typed 400 an OpenAI server would answer.
        """

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["method"] != "POST" or not scope["path"].endswith(_PATHS):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"not found"})
                return
            raw = b""
            while True:
                message = await receive()
                raw += message.get("body", b"")
                if len(raw) > max_body:
                    status, parts = 413, _refusal("the request body is too large")
                    break
                if not message.get("more_body"):
                    try:
                        body = loads(raw)
                    except ProtocolError as exc:
                        status, parts = 400, _refusal(exc.message)
                    else:
                        if isinstance(body, dict):
                            status, parts = await self.respond(body, scope["path"])
                        else:
                            status, parts = 400, _refusal("the body must be a JSON object")
                    break
            kind = b"text/event-stream" if status == 200 else b"application/json"
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", kind)]})
            async for part in parts:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        return app


async def _refusal(message: str) -> AsyncIterator[bytes]:
    """An OpenAI-shaped error body."""
    yield json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


class StreamingBody(httpx2.AsyncByteStream):
    """An httpx2 response body sent part by part as an async iterator yields it."""

    def __init__(self, parts: AsyncIterator[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._parts:
            yield part

    async def aclose(self) -> None:
        await self._parts.aclose()  # type: ignore[attr-defined]


class _Transport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that answers in-process and streams as it goes."""

    def __init__(self, model: ScriptedModel) -> None:
        self._model = model

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        status, parts = await self._model.respond(json.loads(await request.aread()),
                                                  request.url.path)
        kind = "text/event-stream" if status == 200 else "application/json"
        return httpx2.Response(
            status,
            headers={"content-type": kind},
            stream=StreamingBody(parts),
            request=request,
        )
