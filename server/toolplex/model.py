"""The LLM: streaming chat completions through the ``openai`` SDK.

Any OpenAI-compatible endpoint works (OpenAI, vLLM, Ollama, the scripted model).
The runner sees the response as a stream of :data:`ModelChunk`: text, a call
beginning, a fragment of a call's arguments, the finish reason, the usage.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from openai import AsyncStream, Omit


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A fragment of the assistant's text."""

    text: str


@dataclass(frozen=True, slots=True)
class CallBegin:
    """The model began tool call number ``index`` of this response."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArgs:
    """A fragment of call ``index``'s arguments JSON."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The response ended: ``stop``, ``tool_calls``, ``length`` or ``content_filter``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of the response, when the endpoint reports it."""

    usage: dict[str, Any]


ModelChunk = TextChunk | CallBegin | CallArgs | Finish | Usage


@runtime_checkable
class Model(Protocol):
    """What the runner needs of a model: one streamed response per step."""

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelChunk]:
        """Stream one assistant response to ``messages`` with ``tools`` offered."""
        ...


async def _no_key() -> str:
    # The SDK insists on a key at construction unless given a provider of one.
    return ""


class OpenAIModel:
    """A model behind an OpenAI-compatible chat completions endpoint.

    Args:
        model: The model name (``gpt-4o-mini``, ``llama3.1``, ...).
        base_url: Default: ``OPENAI_BASE_URL`` or OpenAI's.
        api_key: Default: ``OPENAI_API_KEY``.
        parallel_tool_calls: Let the model emit several calls in one response.
        http_client: An ``httpx2.AsyncClient`` for the SDK (custom transport, proxies).
        params: Extra request parameters (``temperature``, ...).

    Example::

        OpenAIModel("llama3.1", base_url="http://127.0.0.1:11434/v1", api_key="ollama")
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        parallel_tool_calls: bool = True,
        http_client: Any = None,
        **params: Any,
    ) -> None:
        from openai import AsyncOpenAI

        self.model = model
        self.parallel_tool_calls = parallel_tool_calls
        self.params = params
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self.client = AsyncOpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=key or _no_key, http_client=http_client,
        )
        # No key (a local server): send no Authorization header rather than a made-up
        # one; the SDK wants that said per request.
        self._headers: dict[str, str | Omit] = {} if key else {"Authorization": Omit()}

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelChunk]:
        """Stream one response, translated to :data:`ModelChunk`."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.params,
        }
        if tools:
            request["tools"] = tools
            request["parallel_tool_calls"] = self.parallel_tool_calls
        # client.post is the SDK's documented way to send a raw body: ours is plain
        # JSON already, so the per-request parameter transform of .create() (about a
        # millisecond per call) would change nothing. HTTP, retries, SSE decoding and
        # error events stay the SDK's; chunks arrive as the JSON objects of the wire
        # format rather than ChatCompletionChunk models, whose construction cost about
        # 100 us a chunk, most of a run's CPU.
        response = await self.client.post(
            "/chat/completions", body=request, cast_to=object, stream=True,
            stream_cls=AsyncStream[object], options={"security": {"bearer_auth": True},
                                                     "headers": self._headers})
        begun: set[int] = set()
        try:
            async for chunk in response:
                usage = chunk.get("usage")
                if usage:
                    yield Usage({k: v for k, v in usage.items() if v is not None})
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield TextChunk(delta["content"])
                    for call in delta.get("tool_calls") or ():
                        index = call.get("index", 0)
                        function = call.get("function") or {}
                        if index not in begun:
                            begun.add(index)
                            yield CallBegin(index, call.get("id") or f"call_{index}",
                                            function.get("name") or "")
                        if function.get("arguments"):
                            yield CallArgs(index, function["arguments"])
                    if choice.get("finish_reason"):
                        # [protocol] completion of the last call is read from the
                        # stream's structure: the finish reason, not a parse attempt.
                        yield Finish(choice["finish_reason"])
        finally:
            await response.close()
