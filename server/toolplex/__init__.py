"""toolplex: a streaming-first agent runtime and server.

Every tool call is a stream; the model's tokens and every call's chunks are
merged into one ordered, resumable event channel.

``import toolplex`` loads the runtime alone. The server's names (:func:`create_app`,
:class:`Settings`) are imported from :mod:`toolplex.server` on first use, so that a
program that only runs agents never loads Starlette, uvicorn, Redis or Prometheus.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _NotInstalled, version as _version
from typing import TYPE_CHECKING, Any

from .breaker import BreakerState, CircuitBreaker
from .calls import ToolCall
from .events import BaseEvent, Event
from .exceptions import (
    InvalidArguments,
    ProtocolError,
    ToolError,
    ToolplexError,
    ToolTimeout,
    UsageError,
)
from .jobs import Job
from .limits import UpstreamLimit
from .log import EventLog
from .model import Model
from .policy import Backoff, Clock
from .providers import OpenAIModel
from .runner import Agent, Limits, Run
from .scripted import ScriptedModel
from .session import Session
from .tools import Tool, tool

if TYPE_CHECKING:
    from .server import Settings, create_app

_SERVER = ("Settings", "create_app")

try:
    __version__ = _version("toolplex")
    """The installed distribution's version (its package metadata)."""
except _NotInstalled:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"

__all__ = [
    "Agent",
    "Backoff",
    "BaseEvent",
    "BreakerState",
    "CircuitBreaker",
    "Clock",
    "Event",
    "EventLog",
    "InvalidArguments",
    "Job",
    "Limits",
    "Model",
    "OpenAIModel",
    "ProtocolError",
    "Run",
    "ScriptedModel",
    "Session",
    "Settings",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolTimeout",
    "ToolplexError",
    "UpstreamLimit",
    "UsageError",
    "create_app",
    "tool",
]


def __getattr__(name: str) -> Any:
    # [layers] the transport is loaded when asked for, never by the runtime.
    if name in _SERVER:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'toolplex' has no attribute {name!r}")
