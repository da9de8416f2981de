"""A real uvicorn server on 127.0.0.1, in a thread, for end-to-end tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from toolplex import Agent, Settings, create_app
from toolplex.server.hub import Hub


@dataclass
class Served:
    """A running server: its base URLs and the app's hub (to look inside)."""

    http: str
    ws: str
    hub: Hub

    def session(self) -> tuple[str, str]:
        import httpx

        body = httpx.post(f"{self.http}/v1/sessions").json()
        return body["session_id"], body["token"]


@contextmanager
def serving(app: Starlette, **config: Any) -> Iterator[Served]:
    """Run ``app`` on a free 127.0.0.1 port until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings: Settings = app.state.hub.settings
    options: dict[str, Any] = {"log_level": "warning", "ws_max_size": settings.max_frame_bytes,
                               "ws_per_message_deflate": False, "lifespan": "on"}
    server = uvicorn.Server(uvicorn.Config(app, **{**options, **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app.state.hub)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(agent, settings)`` starts a server that stops after the test."""
    stack: list[Any] = []

    def start(agent: Agent | None = None, settings: Settings | None = None,
              **config: Any) -> Served:
        manager = serving(create_app(agent, settings=settings), **config)
        stack.append(manager)
        return manager.__enter__()

    yield start
    while stack:
        stack.pop().__exit__(None, None, None)
