"""OpenAI's Responses wire format (``POST /responses``, streamed), and the servers that speak it.

The stream is typed events (the SDK's ``ResponseStreamEvent`` union): text in
``response.output_text.delta``; a function call is an output item
(``response.output_item.added`` with ``type: "function_call"``) whose arguments
stream as ``response.function_call_arguments.delta`` and which is complete at
``response.function_call_arguments.done`` or ``response.output_item.done``, the
structural signal early dispatch waits for; reasoning summaries (and, from
open-weight servers, reasoning text) in ``response.reasoning_summary_text.delta``
/ ``response.reasoning_text.delta``; usage on ``response.completed``.

History is replayed in full on every request (``input`` holds the whole
conversation as Responses items), never through ``previous_response_id``: the
session's history is the truth, shared by every process and durable across
restarts, while a stored response lives on one provider account, expires, and is
not kept by servers that speak the format without storing (vLLM, Ollama,
gateways). Reasoning items are not sent back (``store`` is left to the caller's
params); the reasoning the user saw stays in the event log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..exceptions import ModelError
from ..model import (
    CallArgs,
    CallBegin,
    CallEnd,
    Finish,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    Usage,
)
from .base import StreamingModel, transient
from .normaliser import arguments_text, call_ids, invent_id

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


class OpenAIResponsesModel(StreamingModel):
    """A model behind a Responses API endpoint (``/v1/responses``).

    Args:
        model: The model name (``gpt-5-mini``, ``gpt-oss-20b``, ...).
        base_url: Default: ``OPENAI_BASE_URL`` or OpenAI's.
        api_key: Default: ``OPENAI_API_KEY``.
        parallel_tool_calls: Let the model emit several calls in one response.
        http_client: An ``httpx2.AsyncClient`` for the SDK.
        idle_timeout: Seconds without an event before ``run.error model_timeout``.
        params: Extra request parameters (``reasoning={"summary": "auto"}``, ``store``).

    Example::

        OpenAIResponsesModel("gpt-5-mini", reasoning={"effort": "low", "summary": "auto"})
    """

    path = "/responses"

    def request(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
                ) -> dict[str, Any]:
        """The Responses body: the whole history as input items, tools flattened."""
        request: dict[str, Any] = {
            "model": self.model,
            "input": input_items(messages),
            "stream": True,
            **self.params,
        }
        if tools:
            request["tools"] = [_tool(spec) for spec in tools]
            request["parallel_tool_calls"] = self.parallel_tool_calls
        return request

    def translator(self, messages: list[dict[str, Any]]) -> ResponsesTranslator:
        """A translator for one streamed response."""
        return ResponsesTranslator(taken=call_ids(messages))


def _tool(spec: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions tool spec as a Responses function tool."""
    function = spec.get("function")
    if spec.get("type") != "function" or not isinstance(function, dict):
        return spec
    return {"type": "function", **function}


def _content(content: Any, kind: str) -> Any:
    if not isinstance(content, list):
        return content
    return [{"type": kind, "text": part.get("text", "")}
            if isinstance(part, dict) and part.get("type") == "text" else part
            for part in content]


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat history as Responses input items: messages, function calls and outputs."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            content = message.get("content")
            items.append({"type": "function_call_output", "call_id": message["tool_call_id"],
                          "output": content if isinstance(content, str)
                          else json.dumps(content)})
            continue
        if role == "assistant":
            if message.get("content"):
                items.append({"role": "assistant",
                              "content": _content(message["content"], "output_text")})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call["id"],
                              "name": function.get("name", ""),
                              "arguments": arguments_text(function.get("arguments")) or "{}"})
            continue
        items.append({"role": role, "content": _content(message.get("content", ""),
                                                        "input_text")})
    return items


class ResponsesTranslator:
    """One streamed response's events in, model chunks out."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._by_item: dict[str, int] = {}
        self._by_output: dict[int, int] = {}
        self._args: dict[int, list[str]] = {}
        self._ended: set[int] = set()
        self._ids = set(taken)
        self._usage: dict[str, Any] | None = None

    def feed(self, event: Any) -> list[ModelChunk]:
        """The chunks one event stands for."""
        if not isinstance(event, dict):
            raise ModelError(f"the model's stream sent an event that is not an object: "
                             f"{event!r}")
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return [TextChunk(event["delta"])] if event.get("delta") else []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [ReasoningChunk(event["delta"])] if event.get("delta") else []
        if kind == "response.reasoning_summary_part.added" and event.get("summary_index"):
            return [ReasoningChunk("\n\n")]  # summary parts read as paragraphs
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = event.get("item") or {}
            if item.get("type") != "function_call":
                return []
            out = self._begin(item, event.get("output_index"))
            if kind == "response.output_item.done":
                out += self._end(self._index(item.get("id"), event.get("output_index")),
                                 item.get("arguments"))
            return out
        if kind == "response.function_call_arguments.delta":
            index = self._index(event.get("item_id"), event.get("output_index"))
            if index is None or index in self._ended or not event.get("delta"):
                return []
            self._args[index].append(event["delta"])
            return [CallArgs(index, event["delta"])]
        if kind == "response.function_call_arguments.done":
            return self._end(self._index(event.get("item_id"), event.get("output_index")),
                             event.get("arguments"))
        if kind in ("response.completed", "response.incomplete"):
            return self._finish(event.get("response") or {}, kind)
        if kind == "response.failed":
            error = (event.get("response") or {}).get("error") or {}
            raise ModelError(f"the response failed: {error.get('message', 'no reason given')}",
                             transient=transient(error))
        if kind == "error":
            raise ModelError(f"the model's stream reported an error: "
                             f"{event.get('message', 'no message')}", transient=transient(event))
        return []

    def end(self) -> list[ModelChunk]:
        """The usage, once the stream is over."""
        if self._usage:
            return [Usage({k: v for k, v in self._usage.items() if v is not None})]
        return []

    def _index(self, item_id: Any, output_index: Any) -> int | None:
        if isinstance(item_id, str) and item_id in self._by_item:
            return self._by_item[item_id]
        if isinstance(output_index, int):
            return self._by_output.get(output_index)
        return None

    def _begin(self, item: dict[str, Any], output_index: Any) -> list[ModelChunk]:
        if self._index(item.get("id"), output_index) is not None:
            return []
        index = len(self._args)
        if isinstance(item.get("id"), str):
            self._by_item[item["id"]] = index
        if isinstance(output_index, int):
            self._by_output[output_index] = index
        call_id = item.get("call_id") or ""
        if not call_id or call_id in self._ids:
            call_id = invent_id()
        self._ids.add(call_id)
        self._args[index] = []
        out: list[ModelChunk] = [CallBegin(index, call_id, item.get("name") or "")]
        arguments = arguments_text(item.get("arguments"))
        if arguments:  # a server that sends the call whole in its added item
            self._args[index].append(arguments)
            out.append(CallArgs(index, arguments))
        return out

    def _end(self, index: int | None, arguments: Any) -> list[ModelChunk]:
        if index is None or index in self._ended:
            return []
        self._ended.add(index)
        out: list[ModelChunk] = []
        final = arguments_text(arguments)
        sent = "".join(self._args[index])
        if final and not sent:  # no deltas: the arguments come whole at the end
            out.append(CallArgs(index, final))
        # [runner] the item is closed: the call's arguments are complete, dispatch it.
        out.append(CallEnd(index))
        return out

    def _finish(self, response: dict[str, Any], kind: str) -> list[ModelChunk]:
        usage = response.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        if kind == "response.incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            return [Finish(_INCOMPLETE.get(str(reason), "length"))]
        return [Finish("tool_calls" if self._args else "stop")]
