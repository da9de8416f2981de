"""What every provider over the ``openai`` SDK shares: one streamed POST, read under
an idle timeout, retried while none of it was used.

The SDK sends the request, retries HTTP errors and decodes server-sent events; a
provider builds the request body and translates each decoded event into
:data:`~toolplex.model.ModelChunk` (a :class:`Translator`). Events arrive as the
JSON objects of the wire format, not the SDK's pydantic models: building a model
per chunk cost most of a run's CPU, and no field the translators read needs one.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any, ClassVar, Protocol

import anyio
import openai
from openai import AsyncStream, Omit

from ..exceptions import ModelError
from ..model import ModelChunk

_TRANSIENT_CODES = frozenset({
    "server_error", "internal_error", "overloaded", "overloaded_error", "rate_limit_exceeded",
    "rate_limit_error", "service_unavailable", "timeout", "bad_gateway",
})


async def _no_key() -> str:
    # The SDK insists on a key at construction unless given a provider of one.
    return ""


class Translator(Protocol):
    """One response's events in, model chunks out."""

    def feed(self, event: Any) -> Iterable[ModelChunk]:
        """The chunks one decoded event stands for (raises ModelError on an error event)."""
        ...

    def end(self) -> Iterable[ModelChunk]:
        """The chunks owed once the stream is over."""
        ...


def transient(error: Any) -> bool:
    """Whether an error object sent in a stream (``{"code": 502, ...}``,
    ``{"type": "server_error"}``) describes a failure the same request may not meet again."""
    if not isinstance(error, dict):
        return False
    for key in ("code", "status", "type"):
        value = error.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and (value >= 500 or value == 429):
            return True
        if isinstance(value, str) and value.lower() in _TRANSIENT_CODES:
            return True
    return False


class StreamingModel:
    """A model reached through one streamed POST of the ``openai`` SDK.

    Args:
        model: The model name.
        base_url: Default: ``OPENAI_BASE_URL`` or OpenAI's.
        api_key: Default: ``OPENAI_API_KEY``.
        parallel_tool_calls: Let the model emit several calls in one response.
        http_client: An ``httpx2.AsyncClient`` for the SDK (custom transport, proxies).
        idle_timeout: Seconds without a chunk (the request included) before the run
            ends ``run.error model_timeout`` (the runner reading the stream enforces it);
            None waits as long as the SDK does.
        stream_retries: How often a transient error sent after HTTP 200 (a gateway's
            ``{"error": {"code": 502}}``) is retried, while none of the response was used.
        retry_delay: Seconds before the first such retry, doubled for each next one.
        params: Extra request parameters (``temperature``, ...).
    """

    path: ClassVar[str]

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        parallel_tool_calls: bool = True,
        http_client: Any = None,
        idle_timeout: float | None = 60.0,
        stream_retries: int = 2,
        retry_delay: float = 1.0,
        **params: Any,
    ) -> None:
        self.model = model
        self.parallel_tool_calls = parallel_tool_calls
        self.params = params
        self.idle_timeout = idle_timeout
        self.stream_retries = stream_retries
        self.retry_delay = retry_delay
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self.client = openai.AsyncOpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=key or _no_key, http_client=http_client,
        )
        # No key (a local server): send no Authorization header rather than a made-up
        # one; the SDK wants that said per request.
        self._headers: dict[str, str | Omit] = {} if key else {"Authorization": Omit()}

    async def aclose(self) -> None:
        """Close the SDK client and its connections."""
        await self.client.close()

    def request(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
                ) -> dict[str, Any]:
        """The request body for one response."""
        raise NotImplementedError

    def translator(self, messages: list[dict[str, Any]]) -> Translator:
        """A fresh translator for one response to ``messages``."""
        raise NotImplementedError

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelChunk]:
        """Stream one response, translated to :data:`~toolplex.model.ModelChunk`."""
        body = self.request(messages, tools)
        attempt = 0
        while True:
            translator = self.translator(messages)
            used = False
            try:
                async with aclosing(self._events(body)) as events:
                    async for event in events:
                        for chunk in translator.feed(event):
                            used = True
                            yield chunk
                for chunk in translator.end():
                    yield chunk
                return
            except ModelError as exc:
                # [hardening] a transient failure is retried like a 5xx, but only
                # while nothing of the response reached the run: a retry after that
                # would show the client a second, different answer.
                if used or not exc.transient or attempt >= self.stream_retries:
                    raise
            await anyio.sleep(self.retry_delay * 2**attempt)
            attempt += 1

    async def _events(self, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """The decoded events of one POST, errors classified.

        The idle timeout is not applied here: a cancel scope cannot span this
        generator's yields, so the runner, which reads the stream, holds the deadline.
        """
        # client.post is the SDK's documented way to send a raw body: ours is plain JSON
        # already, so .create()'s parameter transform would change nothing. HTTP, retries
        # and SSE decoding stay the SDK's.
        response = await self.client.post(
            self.path, body=body, cast_to=object, stream=True,
            stream_cls=AsyncStream[object],
            options={"security": {"bearer_auth": True}, "headers": self._headers})
        try:
            iterator = response.__aiter__()
            while True:
                try:
                    event = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except json.JSONDecodeError as exc:
                    # OpenRouter's `: OPENROUTER PROCESSING` re-wrapped as `data:` by a
                    # naive proxy: a line no dialect allows ends the run, classified.
                    raise ModelError(
                        f"the model's stream sent a data line that is not JSON: "
                        f"{exc.doc[:80]!r}") from None
                except openai.APIConnectionError as exc:
                    raise ModelError(f"the model's stream broke off: {exc}",
                                     transient=True) from None
                except openai.APIError as exc:
                    # An error object after HTTP 200 (`data: {"error": {...}}`).
                    raise ModelError(f"the model's stream reported an error: {exc.message}",
                                     transient=transient(exc.body)) from None
                yield event
        finally:
            await response.close()
