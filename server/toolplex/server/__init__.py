"""The server: a thin Starlette transport over the runtime's event log."""

from __future__ import annotations

from .app import create_app
from .logs import configure_logging
from .settings import Settings

__all__ = ["Settings", "configure_logging", "create_app"]
