"""The wire shapes the scripted model speaks: each dialect of docs/dialects.md, and Responses.

The scripted model streams a step as abstract pieces (reasoning, text, a call
beginning, an argument fragment, a call complete, the finish); an encoder turns
each piece into the bytes a given provider would send. ``ScriptedModel(dialect=...)``
picks one, so demos and tests run every shape through the same client path.

Chat Completions dialects differ in a few traits (:class:`ChatShape`); Responses
is its own event stream (:class:`ResponsesEncoder`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

IndexMode = Literal["sequential", "absent", "zero", "from_one"]
IdMode = Literal["first", "every", "empty_continuations", "same", "absent"]


@dataclass(frozen=True, slots=True)
class ChatShape:
    """How one provider streams chat completion chunks."""

    index: IndexMode = "sequential"
    """``absent``: no index (Gemini, Mistral); ``zero``: every call on 0 (vLLM, Ollama via
    LiteLLM); ``from_one``: the first call at 1 (Anthropic's compatibility layer)."""
    ids: IdMode = "first"
    """Where call ids appear: the first chunk (OpenAI), every chunk (LiteLLM), ``""`` on
    continuations (vLLM), one id for every call (DeepSeek), none (vLLM)."""
    whole: bool = False
    """Each call's arguments in one delta, with its id and name (Gemini, Groq, Ollama)."""
    one_chunk: bool = False
    """All calls of the response in one chunk (Mistral, Groq)."""
    object_arguments: bool = False
    """Arguments as a JSON object (llama.cpp, Ollama via LiteLLM)."""
    empty_name: bool = False
    """``name: ""`` on continuation chunks (LM Studio)."""
    thought_signature: bool = False
    """Gemini 3's ``extra_content.google.thought_signature`` on each call."""
    stop_after_calls: bool = False
    """``finish_reason: "stop"`` although the response holds calls (Gemini, Ollama)."""
    type_field: bool = True
    """``type: "function"`` on a call's first chunk (missing with vLLM's forced choice)."""
    reasoning_key: str = "reasoning_content"
    """The delta field reasoning streams in (``reasoning`` on OpenRouter)."""
    usage: Literal["tail", "x_groq", "every"] = "tail"
    """A final ``choices: []`` chunk, ``x_groq.usage`` on the finish, or on every chunk."""
    noise: bool = False
    """Groq's leading ``content: ""`` with ``tool_calls: []``."""
    comments: bool = False
    """OpenRouter's ``: OPENROUTER PROCESSING`` comment lines between events."""
    prompt_filter: bool = False
    """Azure's first chunk: ``choices: []`` with ``prompt_filter_results``."""


CHAT_DIALECTS: dict[str, ChatShape] = {
    "openai": ChatShape(),
    "gemini": ChatShape(index="absent", whole=True, thought_signature=True,
                        stop_after_calls=True),
    "mistral": ChatShape(index="absent", whole=True, one_chunk=True),
    "vllm": ChatShape(index="zero", ids="empty_continuations", usage="every"),
    "litellm": ChatShape(ids="every"),
    "vllm_no_ids": ChatShape(ids="absent"),
    "anthropic": ChatShape(index="from_one"),
    "lmstudio": ChatShape(empty_name=True),
    "llamacpp": ChatShape(whole=True, object_arguments=True),
    "ollama": ChatShape(index="zero", whole=True, object_arguments=True,
                        stop_after_calls=True, reasoning_key="reasoning"),
    "deepseek": ChatShape(ids="same"),
    "groq": ChatShape(whole=True, one_chunk=True, usage="x_groq", noise=True),
    "openrouter": ChatShape(comments=True, reasoning_key="reasoning"),
    "azure": ChatShape(prompt_filter=True),
    "vllm_forced": ChatShape(type_field=False),
}
"""Every Chat Completions dialect the scripted model speaks, by name."""

DIALECTS = (*CHAT_DIALECTS, "responses")
"""Every ``dialect=`` the scripted model accepts."""


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class ChatEncoder:
    """One response's pieces as chat completion chunks in one dialect's shape."""

    path = "/chat/completions"

    def __init__(self, shape: ChatShape, response_id: str, include_usage: bool,
                 prompt: int = 0) -> None:
        self.shape = shape
        self.prompt = prompt
        self.response_id = response_id
        self.include_usage = include_usage
        self.created = int(time.time())
        self._held: list[dict[str, Any]] = []
        """Whole calls waiting for their chunk (``one_chunk``)."""
        self._args: dict[int, list[str]] = {}
        self._names: dict[int, str] = {}
        self._ids: dict[int, str] = {}
        self._sent = 0

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None,
               **top: Any) -> bytes:
        body: dict[str, Any] = {"id": self.response_id, "object": "chat.completion.chunk",
                                "created": self.created, "model": "scripted"}
        body["choices"] = [] if delta is None else [
            {"index": 0, "delta": delta, "finish_reason": finish}]
        self._sent += 1
        if self.shape.usage == "every" and self.include_usage and "usage" not in top:
            # Cumulative on every chunk, as vLLM and NIM send it.
            top["usage"] = {"prompt_tokens": self.prompt, "completion_tokens": self._sent,
                            "total_tokens": self.prompt + self._sent}
        body.update(top)
        prefix = b": OPENROUTER PROCESSING\n\n" if self.shape.comments else b""
        return prefix + _sse(body)

    def _entry(self, index: int, first: bool, *, name: str | None = None,
               arguments: Any = None) -> dict[str, Any]:
        shape = self.shape
        entry: dict[str, Any] = {}
        wire_index = {"sequential": index, "absent": None, "zero": 0,
                      "from_one": index + 1}[shape.index]
        if wire_index is not None:
            entry["index"] = wire_index
        call_id = self._ids[index]
        if shape.ids == "every" or (first and shape.ids in ("first", "same")):
            entry["id"] = call_id
        elif shape.ids == "empty_continuations":
            entry["id"] = call_id if first else ""
        if first and shape.type_field:
            entry["type"] = "function"
        function: dict[str, Any] = {}
        if name is not None:
            function["name"] = name
        elif shape.empty_name:
            function["name"] = ""
        if arguments is not None:
            function["arguments"] = arguments
        entry["function"] = function
        if first and shape.thought_signature:
            entry["extra_content"] = {"google": {"thought_signature": f"sig-{call_id}"}}
        return entry

    def start(self) -> list[bytes]:
        """The frames before any piece."""
        frames = []
        if self.shape.prompt_filter:
            frames.append(self._chunk(None, id="", prompt_filter_results=[
                {"prompt_index": 0, "content_filter_results": {}}]))
        frames.append(self._chunk({"role": "assistant", "content": ""}))
        if self.shape.noise:
            frames.append(self._chunk({"content": "", "tool_calls": []}))
        return frames

    def reasoning(self, text: str) -> list[bytes]:
        """A fragment of reasoning."""
        return [self._chunk({self.shape.reasoning_key: text})]

    def text(self, token: str) -> list[bytes]:
        """A token of text."""
        return [self._chunk({"content": token})]

    def call_begin(self, index: int, call_id: str, name: str) -> list[bytes]:
        """Call ``index`` begins."""
        self._names[index] = name
        self._args[index] = []
        self._ids[index] = "call_0" if self.shape.ids == "same" else call_id
        if self.shape.whole:
            return []
        return [self._chunk({"tool_calls": [self._entry(index, True, name=name,
                                                        arguments="")]})]

    def call_args(self, index: int, fragment: str) -> list[bytes]:
        """A fragment of call ``index``'s arguments."""
        self._args[index].append(fragment)
        if self.shape.whole:
            return []
        return [self._chunk({"tool_calls": [self._entry(index, False, arguments=fragment)]})]

    def call_end(self, index: int) -> list[bytes]:
        """Call ``index``'s arguments are all written."""
        if not self.shape.whole:
            return []
        text = "".join(self._args[index])
        arguments: Any = text
        if self.shape.object_arguments:
            try:
                arguments = json.loads(text)
            except json.JSONDecodeError:
                arguments = text
        entry = self._entry(index, True, name=self._names[index], arguments=arguments)
        if self.shape.one_chunk:
            self._held.append(entry)
            return []
        return [self._chunk({"tool_calls": [entry]})]

    def finish(self, reason: str, prompt: int, completion: int) -> list[bytes]:
        """The finish, the usage (``prompt`` and ``completion`` tokens), the end."""
        frames = []
        if self._held:
            frames.append(self._chunk({"tool_calls": self._held}))
        if reason == "tool_calls" and self.shape.stop_after_calls:
            reason = "stop"
        usage = ({"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion} if self.include_usage else None)
        if usage and self.shape.usage == "x_groq":
            frames.append(self._chunk({}, reason, x_groq={"id": "req_scripted",
                                                          "usage": usage}))
        elif usage and self.shape.usage == "every":
            frames.append(self._chunk({}, reason, usage=usage))
        else:
            frames.append(self._chunk({}, reason))
            if usage:
                frames.append(self._chunk(None, usage=usage))
        frames.append(b"data: [DONE]\n\n")
        return frames


class ResponsesEncoder:
    """One response's pieces as ``/v1/responses`` stream events."""

    path = "/responses"

    def __init__(self, response_id: str) -> None:
        self.response_id = response_id
        self.created = int(time.time())
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        """The open reasoning or message item."""
        self._calls: dict[int, dict[str, Any]] = {}

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return _sse(data, kind)

    def _response(self, status: str, **more: Any) -> dict[str, Any]:
        return {"id": self.response_id, "object": "response", "created_at": self.created,
                "status": status, "model": "scripted", "output": list(self._output),
                "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], **more}

    def start(self) -> list[bytes]:
        """``response.created`` and ``response.in_progress``."""
        return [self._event("response.created", response=self._response("in_progress")),
                self._event("response.in_progress", response=self._response("in_progress"))]

    def _close_open(self) -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = len(self._output)
        frames = []
        if item["type"] == "reasoning":
            text = "".join(item.pop("_parts"))
            frames.append(self._event("response.reasoning_summary_text.done", item_id=item["id"],
                                      output_index=index, summary_index=0, text=text))
            item["summary"] = [{"type": "summary_text", "text": text}]
        else:
            text = "".join(item.pop("_parts"))
            frames.append(self._event("response.output_text.done", item_id=item["id"],
                                      output_index=index, content_index=0, text=text,
                                      logprobs=[]))
            item["status"] = "completed"
            item["content"] = [{"type": "output_text", "text": text, "annotations": []}]
        frames.append(self._event("response.output_item.done", output_index=index, item=item))
        self._output.append(item)
        return frames

    def _open_item(self, kind: str) -> list[bytes]:
        if self._open is not None and self._open["type"] == kind:
            return []
        frames = self._close_open()
        index = len(self._output)
        if kind == "reasoning":
            item: dict[str, Any] = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
            frames.append(self._event("response.output_item.added", output_index=index,
                                      item=dict(item)))
            frames.append(self._event("response.reasoning_summary_part.added",
                                      item_id=item["id"], output_index=index, summary_index=0,
                                      part={"type": "summary_text", "text": ""}))
        else:
            item = {"id": f"msg_{index}", "type": "message", "role": "assistant",
                    "status": "in_progress", "content": []}
            frames.append(self._event("response.output_item.added", output_index=index,
                                      item=dict(item)))
            frames.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=index, content_index=0,
                                      part={"type": "output_text", "text": "",
                                            "annotations": []}))
        item["_parts"] = []
        self._open = item
        return frames

    def reasoning(self, text: str) -> list[bytes]:
        """A fragment of the reasoning summary."""
        frames = self._open_item("reasoning")
        assert self._open is not None
        self._open["_parts"].append(text)
        return [*frames, self._event("response.reasoning_summary_text.delta",
                                     item_id=self._open["id"], output_index=len(self._output),
                                     summary_index=0, delta=text)]

    def text(self, token: str) -> list[bytes]:
        """A token of text."""
        frames = self._open_item("message")
        assert self._open is not None
        self._open["_parts"].append(token)
        return [*frames, self._event("response.output_text.delta", item_id=self._open["id"],
                                     output_index=len(self._output), content_index=0,
                                     delta=token, logprobs=[])]

    def call_begin(self, index: int, call_id: str, name: str) -> list[bytes]:
        """A function call item is added."""
        frames = self._close_open()
        item = {"id": f"fc_{len(self._output)}", "type": "function_call",
                "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""}
        self._calls[index] = {**item, "_output_index": len(self._output), "_parts": []}
        self._output.append(item)  # its slot; replaced by the done item
        return [*frames, self._event("response.output_item.added",
                                     output_index=len(self._output) - 1, item=item)]

    def call_args(self, index: int, fragment: str) -> list[bytes]:
        """``response.function_call_arguments.delta``."""
        call = self._calls[index]
        call["_parts"].append(fragment)
        return [self._event("response.function_call_arguments.delta", item_id=call["id"],
                            output_index=call["_output_index"], delta=fragment)]

    def call_end(self, index: int) -> list[bytes]:
        """``response.function_call_arguments.done``, then the item's done."""
        call = self._calls[index]
        arguments = "".join(call["_parts"])
        done = {k: v for k, v in call.items() if not k.startswith("_")}
        done.update(status="completed", arguments=arguments)
        self._output[call["_output_index"]] = done
        return [self._event("response.function_call_arguments.done", item_id=call["id"],
                            output_index=call["_output_index"], arguments=arguments),
                self._event("response.output_item.done", output_index=call["_output_index"],
                            item=done)]

    def finish(self, reason: str, prompt: int, completion: int) -> list[bytes]:
        """``response.completed`` (``response.incomplete`` for a cut-off response)."""
        frames = self._close_open()
        usage = {"input_tokens": prompt,
                 "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                 "output_tokens": completion,
                 "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + completion}
        if reason in ("length", "content_filter"):
            details = {"reason": "max_output_tokens" if reason == "length" else reason}
            frames.append(self._event("response.incomplete", response=self._response(
                "incomplete", usage=usage, incomplete_details=details)))
        else:
            frames.append(self._event("response.completed",
                                      response=self._response("completed", usage=usage)))
        return frames


Encoder = ChatEncoder | ResponsesEncoder


def encoder(dialect: str, response_id: str, *, include_usage: bool, prompt: int) -> Encoder:
    """The encoder for one response in ``dialect`` (``prompt``: the request's tokens)."""
    if dialect == "responses":
        return ResponsesEncoder(response_id.replace("chatcmpl", "resp"))
    return ChatEncoder(CHAT_DIALECTS[dialect], response_id, include_usage, prompt)


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses input items as chat messages (what the scripted model's scripts read)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            last = messages[-1] if messages else None
            if last is None or last.get("role") != "assistant" or last.get("_closed"):
                last = {"role": "assistant", "content": None, "tool_calls": []}
                messages.append(last)
            last.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function",
                 "function": {"name": item["name"], "arguments": item["arguments"]}})
        elif kind == "function_call_output":
            if messages and messages[-1].get("role") == "assistant":
                messages[-1]["_closed"] = True
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": item["output"]})
        else:
            content = item.get("content", "")
            if isinstance(content, list):
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            messages.append({"role": item.get("role", "user"), "content": content})
    for message in messages:
        message.pop("_closed", None)
    return messages
