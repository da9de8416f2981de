"""The Chat Completions stream normaliser: every OpenAI-compatible dialect, one chunk stream.

"OpenAI-compatible" servers stream tool calls in many shapes (docs/dialects.md has
the catalogue with its sources): no ``index``, an ``index`` reused by the next
call, ids on every chunk or on none, the same id on two calls, arguments as a
JSON object, usage on every chunk, ``finish_reason: "stop"`` after tool calls.
:class:`ChatNormaliser` reads the raw chunk objects and gives the runner one shape:
calls numbered 0, 1, 2 in the order they began, each with a unique id the
provider accepts back, its arguments as text, its provider fields, and a
:class:`~toolplex.model.CallEnd` when the stream's structure says it is complete.

Correlation, in order (DIALECTS.md):

- a delta with a non-empty id and an index belongs to the call at that index if
  that call has the same id (the id repeated on every chunk), else it starts a call
  (a new id on a known index: vLLM's second call on ``index: 0``);
- a delta with a non-empty id and no index belongs to the call with that id,
  unless it names a function again (each call whole in its own chunk: Gemini,
  Mistral), which starts a call;
- a delta without an id belongs to the latest call at its index, or without an
  index to the latest call; one that names a function while its index is absent
  and the latest call already has a name starts a call.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ModelError
from ..model import (
    CallArgs,
    CallBegin,
    CallEnd,
    CallFields,
    Finish,
    ModelChunk,
    ReasoningChunk,
    TextChunk,
    Usage,
)

_STANDARD_KEYS = frozenset({"index", "id", "type", "function"})
_ALPHANUMERIC = string.ascii_letters + string.digits


def invent_id() -> str:
    """A call id for a call the model gave none (or a duplicate) to.

    Nine letters and digits: the strictest validator known (Mistral's
    ``[a-zA-Z0-9]{9}``) accepts it, and so does everyone else.
    """
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))


def call_ids(messages: Iterable[dict[str, Any]]) -> set[str]:
    """The call ids a conversation already holds (a new call must not reuse one)."""
    return {
        str(call.get("id"))
        for message in messages
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict)
    }


def arguments_text(value: Any) -> str:
    """A call's arguments as the text the replay must carry (llama.cpp and TGI send
    an object; strict servers refuse an object sent back)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


@dataclass(eq=False)
class _Call:
    index: int
    """Its position in the response (0, 1, 2 in the order calls began)."""
    wire_index: int | None
    wire_id: str
    id: str
    """The id it is replayed and answered with: the model's own, unless missing or taken."""
    name: str = ""
    begun: bool = False
    ended: bool = False
    pending: list[str] = field(default_factory=list)
    """Argument fragments that arrived before the call had a name."""
    fields: dict[str, Any] = field(default_factory=dict)


class ChatNormaliser:
    """Turns one response's raw ``chat.completion.chunk`` objects into model chunks.

    Args:
        taken: Call ids the conversation already holds; a call whose id is among
            them (or repeats a sibling's) gets a fresh one, so the next request
            never carries two tool messages answering one id.

    Feed each chunk object to :meth:`feed`, then call :meth:`end` once the stream
    is over; both return the chunks to hand on, in order.
    """

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)
        self._calls: list[_Call] = []
        # The latest call begun at each wire index and with each wire id: a delta finds
        # its call in one look-up, not a scan of the calls so far (quadratic fanned out).
        self._at_index: dict[int, _Call] = {}
        self._with_id: dict[str, _Call] = {}
        self._usage: dict[str, Any] | None = None
        self.finished = False

    def feed(self, chunk: Any) -> list[ModelChunk]:
        """The chunks one raw chunk object stands for."""
        out: list[ModelChunk] = []
        if not isinstance(chunk, dict):
            raise ModelError(f"the model's stream sent a chunk that is not an object: {chunk!r}")
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if isinstance(usage, dict):
            # Usage on every chunk (vLLM, NIM, LocalAI) is cumulative: the latest wins.
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningChunk(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(TextChunk(content))
            for entry in delta.get("tool_calls") or ():
                if isinstance(entry, dict):
                    self._on_call_delta(entry, out)
            finish = choice.get("finish_reason")
            if finish and not self.finished:
                self._on_finish(str(finish), out)
        return out

    def end(self) -> list[ModelChunk]:
        """The chunks owed once the stream is over: the usage, last."""
        out: list[ModelChunk] = []
        if self._usage:
            out.append(Usage({k: v for k, v in self._usage.items() if v is not None}))
        return out

    def _on_call_delta(self, entry: dict[str, Any], out: list[ModelChunk]) -> None:
        function = entry.get("function") or {}
        wire_id = entry.get("id") if isinstance(entry.get("id"), str) else ""
        raw_index = entry.get("index")
        wire_index = raw_index if isinstance(raw_index, int) else None
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        call = self._correlate(wire_id or "", wire_index, name or "")
        if call is None:
            call = self._start(wire_id or "", wire_index, out)
        if name and not call.name:
            call.name = name
        extra = {k: v for k, v in entry.items() if k not in _STANDARD_KEYS and v is not None}
        if extra:
            call.fields.update(extra)
        fragment = arguments_text(function.get("arguments"))
        if not call.begun:
            if fragment:
                call.pending.append(fragment)
            if call.name:
                self._begin(call, out)
            return
        if fragment:
            out.append(CallArgs(call.index, fragment))
        if extra:
            out.append(CallFields(call.index, dict(call.fields)))

    def _correlate(self, wire_id: str, wire_index: int | None, name: str) -> _Call | None:
        """The call a delta continues, or None when it starts a call."""
        if not self._calls:
            return None
        latest = self._calls[-1]
        if wire_index is not None:
            at_index = self._at_index.get(wire_index)
            if at_index is None:
                return None
            if wire_id and at_index.wire_id and wire_id != at_index.wire_id:
                return None  # a new id on a known index starts a call
            return at_index
        if wire_id:
            same = self._with_id.get(wire_id)
            if same is None or (name and same.name):
                return None
            return same
        if name and latest.name:
            return None
        return latest

    def _start(self, wire_id: str, wire_index: int | None, out: list[ModelChunk]) -> _Call:
        # [normaliser] call i is complete when a later call begins (each start ended
        # every call before the latest).
        if self._calls:
            self._end_call(self._calls[-1], out)
        replay_id = wire_id if wire_id and wire_id not in self._taken else invent_id()
        while replay_id in self._taken:
            replay_id = invent_id()
        self._taken.add(replay_id)
        call = _Call(index=len(self._calls), wire_index=wire_index, wire_id=wire_id,
                     id=replay_id)
        self._calls.append(call)
        if wire_index is not None:
            self._at_index[wire_index] = call
        if wire_id:
            self._with_id[wire_id] = call
        return call

    def _begin(self, call: _Call, out: list[ModelChunk]) -> None:
        call.begun = True
        out.append(CallBegin(call.index, call.id, call.name))
        if call.fields:
            out.append(CallFields(call.index, dict(call.fields)))
        if call.pending:
            out.append(CallArgs(call.index, "".join(call.pending)))
            call.pending.clear()

    def _end_call(self, call: _Call, out: list[ModelChunk]) -> None:
        if call.ended:
            return
        if not call.begun:
            self._begin(call, out)  # it never got a name: the runner reports unknown_tool
        call.ended = True
        out.append(CallEnd(call.index))

    def _on_finish(self, reason: str, out: list[ModelChunk]) -> None:
        if reason == "error":
            # OpenRouter: finish_reason "error" (its `error` object, when sent, has
            # already been raised by the SDK).
            raise ModelError("the model's stream ended with finish_reason='error'")
        self.finished = True
        for call in self._calls:
            if not call.begun:
                self._begin(call, out)
        # No CallEnd here: the finish completes the calls of a clean response, and a
        # cut-off one (length, content_filter) has its calls discarded by the runner.
        if reason == "stop" and self._calls:
            # gpt-4o, Gemini, Ollama via LiteLLM: `stop` after tool calls means the calls.
            reason = "tool_calls"
        out.append(Finish(reason))
