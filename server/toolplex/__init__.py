"""toolplex: a streaming-first agent runtime and server.

Every tool call is a stream; the model's tokens and every call's chunks are
merged into one ordered, resumable event channel.
"""

from __future__ import annotations

from .breaker import BreakerState, CircuitBreaker
from .calls import Outcome, ToolCall
from .events import BaseEvent, Event
from .exceptions import (
    InvalidArguments,
    ProtocolError,
    ToolError,
    ToolplexError,
    ToolTimeout,
    UsageError,
)
from .jobs import Job, JobManager
from .limits import UpstreamLimit
from .log import EventLog, Gap
from .model import Model, OpenAIModel
from .policy import Backoff, Clock
from .runner import Agent, Limits, Run
from .scripted import Call, ScriptedModel, Step
from .server import Settings, create_app
from .session import Session
from .store import Store
from .tools import Tool, tool

__all__ = [
    "Agent",
    "Backoff",
    "BaseEvent",
    "BreakerState",
    "Call",
    "CircuitBreaker",
    "Clock",
    "Event",
    "EventLog",
    "Gap",
    "InvalidArguments",
    "Job",
    "JobManager",
    "Limits",
    "Model",
    "OpenAIModel",
    "Outcome",
    "ProtocolError",
    "Run",
    "ScriptedModel",
    "Session",
    "Settings",
    "Step",
    "Store",
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
