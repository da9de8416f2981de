"""A real uvicorn server on 127.0.0.1, in a thread, for end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from toolplex import Agent, Settings, create_app
from toolplex.server.hub import Hub

TOOLPLEX = Path(sys.executable).with_name("toolplex")


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


@dataclass
class Process:
    """A server in its own process (so its memory can be measured apart)."""

    http: str
    ws: str
    pid: int

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@pytest.fixture
def serve_process() -> Iterator[Callable[..., Process]]:
    """``serve_process("tests.e2e.apps:firehose_app")`` runs uvicorn in a subprocess."""
    import subprocess
    import sys

    import httpx

    started: list[subprocess.Popen[bytes]] = []

    def start(factory: str, env: dict[str, str] | None = None, port: int = 0) -> Process:
        import os

        if not port:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
        else:
            _wait_until_free(port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--ws-max-size", str(1 << 20),
             "--ws-per-message-deflate", "false"], env={**os.environ, **(env or {})})
        started.append(proc)
        deadline = time.monotonic() + 60  # (a loaded machine imports slowly)
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server process exited ({proc.returncode})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("the server process did not start in 45 s") from None
                time.sleep(0.05)
        return Process(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", proc.pid)

    yield start
    for proc in started:
        if proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_free(port: int) -> None:
    """Return once nothing listens on ``port``: a server restarted on its port must not
    find the old process (still shutting down) answering its readiness check."""
    deadline = time.monotonic() + 30
    while True:
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {port} is still taken after 30 s") from None
            time.sleep(0.05)
        finally:
            probe.close()


@dataclass
class Serving:
    """A ``toolplex serve`` process: its URL and what it logged so far."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def logged(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def toolplex_serve(tmp_path: Path) -> Iterator[Callable[..., Serving]]:
    """``toolplex_serve(*args, env=..., binary=...)``: the command on a free port,
    stopped (SIGTERM, by its pid) after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None,
              binary: Path = TOOLPLEX, cwd: Path | None = None, port: int = 0) -> Serving:
        port = port or free_port()
        log = tmp_path / f"serve-{port}.log"
        # Another virtualenv's toolplex (the wheel's) must not import this checkout's.
        drop = ("TOOLPLEX_", "OPENAI_") if binary == TOOLPLEX else (
            "TOOLPLEX_", "OPENAI_", "PYTHONPATH")
        clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(binary), "serve", "--port", str(port), "--db", ":memory:", *args],
                env={**clean, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                cwd=cwd or tmp_path)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, seconds=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{log.read_text()}") from None
        return Serving(url, proc, log)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(url: str, process: subprocess.Popen[Any], seconds: float = 30) -> None:
    """Wait until ``{url}/healthz`` answers 200; fail if ``process`` exits first."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"the server at {url} exited ({process.returncode})"
        assert time.monotonic() < deadline, f"the server at {url} did not start"
        time.sleep(0.05)
