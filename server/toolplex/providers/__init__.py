"""The wire formats a model speaks, one module each.

- :mod:`.chat_completions`: ``POST /chat/completions`` (:class:`OpenAIModel`), with
  :mod:`.normaliser` reading every OpenAI-compatible dialect of its stream.
- :mod:`.responses`: ``POST /responses`` (:class:`OpenAIResponsesModel`).
- :mod:`.base`: the streamed POST, idle timeout and retry they share.
"""

from __future__ import annotations

from .base import StreamingModel
from .chat_completions import OpenAIModel
from .responses import OpenAIResponsesModel

__all__ = ["OpenAIModel", "OpenAIResponsesModel", "StreamingModel"]
