"""The LLM as the runner sees it: the :class:`Model` protocol and its chunk types.

A model streams one response per step as :data:`ModelChunk`: text, reasoning, a
call beginning, a fragment of a call's arguments, a call's provider fields, a
call complete, the finish reason, the usage. The wire formats that produce them
live in :mod:`toolplex.providers` (Chat Completions with its dialects, Responses).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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
class CallFields:
    """Provider fields of call ``index`` to send back with it on the next request
    (Gemini's ``extra_content.google.thought_signature``)."""

    index: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallEnd:
    """Call ``index``'s arguments are complete: the stream's structure says so
    (a later call began, or the provider closed the call's item)."""

    index: int


@dataclass(frozen=True, slots=True)
class ReasoningChunk:
    """A fragment of the model's reasoning (``reasoning_content``, a Responses
    reasoning summary), streamed beside its text."""

    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The response ended: ``stop``, ``tool_calls``, ``length`` or ``content_filter``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of the response, when the endpoint reports it."""

    usage: dict[str, Any]


ModelChunk = (
    TextChunk | ReasoningChunk | CallBegin | CallArgs | CallFields | CallEnd | Finish | Usage
)


@runtime_checkable
class Model(Protocol):
    """What the runner needs of a model: one streamed response per step.

    A model may also have ``idle_timeout`` (seconds, or None): the runner ends the
    run ``model_timeout`` when no chunk arrives within it, the request included.
    """

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelChunk]:
        """Stream one assistant response to ``messages`` with ``tools`` offered."""
        ...

