"""OpenAI's Chat Completions wire format (``POST /chat/completions``), every dialect of it.

Any OpenAI-compatible endpoint works (OpenAI, Gemini, Mistral, vLLM, Ollama,
LiteLLM, OpenRouter, DeepSeek, Groq, llama.cpp, the scripted model): the raw chunks
go through :class:`~toolplex.providers.normaliser.ChatNormaliser`, which reads each
dialect's shape of a tool call stream into one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import StreamingModel
from .normaliser import ChatNormaliser, call_ids

_REASONING_REPLAY_HOSTS = ("api.deepseek.com",)


class OpenAIModel(StreamingModel):
    """A model behind an OpenAI-compatible chat completions endpoint.

    Args:
        model: The model name (``gpt-4o-mini``, ``llama3.1``, ...).
        base_url: Default: ``OPENAI_BASE_URL`` or OpenAI's.
        api_key: Default: ``OPENAI_API_KEY``.
        parallel_tool_calls: Let the model emit several calls in one response.
        http_client: An ``httpx2.AsyncClient`` for the SDK (custom transport, proxies).
        idle_timeout: Seconds without a chunk before ``run.error model_timeout``.
        reasoning_replay: Send an assistant message's ``reasoning_content`` back
            when it made tool calls. DeepSeek's thinking mode refuses the next request
            without it; other servers never get reasoning back. Default: on for
            ``api.deepseek.com``.
        params: Extra request parameters (``temperature``, ...).

    Example::

        OpenAIModel("llama3.1", base_url="http://127.0.0.1:11434/v1", api_key="ollama")
    """

    path = "/chat/completions"

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        parallel_tool_calls: bool = True,
        http_client: Any = None,
        idle_timeout: float | None = 60.0,
        reasoning_replay: bool | None = None,
        **params: Any,
    ) -> None:
        super().__init__(model, base_url=base_url, api_key=api_key,
                         parallel_tool_calls=parallel_tool_calls, http_client=http_client,
                         idle_timeout=idle_timeout, **params)
        if reasoning_replay is None:
            host = urlsplit(str(self.client.base_url)).hostname or ""
            reasoning_replay = host in _REASONING_REPLAY_HOSTS
        self.reasoning_replay = reasoning_replay

    def request(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
                ) -> dict[str, Any]:
        """The chat completions body: ``messages``, ``tools``, streaming with usage."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [self._outgoing(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.params,
        }
        if tools:
            request["tools"] = tools
            request["parallel_tool_calls"] = self.parallel_tool_calls
        return request

    def translator(self, messages: list[dict[str, Any]]) -> ChatNormaliser:
        """A normaliser that knows the call ids the conversation already holds."""
        return ChatNormaliser(taken=call_ids(messages))

    def _outgoing(self, message: dict[str, Any]) -> dict[str, Any]:
        # [protocol] reasoning is never sent back unless the provider requires it
        # (DeepSeek: on assistant messages that made tool calls).
        if "reasoning_content" not in message:
            return message
        if self.reasoning_replay and message.get("tool_calls"):
            return message
        return {k: v for k, v in message.items() if k != "reasoning_content"}

