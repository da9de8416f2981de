"""Helpers for testing agents: the scripted model and a PROTOCOL.md checker.

Example::

    from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect

    events = await collect(Agent(tools=[t], model=ScriptedModel([...])), "go")
    check_protocol(events)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .events import TERMINAL_CALL_TYPES, TERMINAL_RUN_TYPES, BaseEvent
from .runner import Agent
from .scripted import Call, ScriptedModel, Step
from .session import Session

__all__ = ["Call", "RedisServer", "ScriptedModel", "Step", "check_protocol", "collect",
           "of_type"]


async def collect(
    agent: Agent, input: Any, *, session: Session | None = None
) -> list[dict[str, Any]]:
    """Run the agent to its end and return every event's wire dict."""
    return [event.to_dict() async for event in agent.run(input, session=session)]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The events of one type, in order."""
    return [e for e in events if e["type"] == kind]


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(v is None for v in value.values())
    return False


def check_protocol(
    events: list[dict[str, Any]] | list[BaseEvent], *, first_seq: int | None = None
) -> None:
    """Assert PROTOCOL.md's rules over a sequence of events of one session.

    Checked: ``seq`` strictly increasing and gapless; no ``null`` top-level
    field; ``run_id`` on every run event and ``call_id`` on every ``tool.*``
    event; exactly one terminal event per ``tool.call.start`` and per
    ``run.started``, and nothing of a call after its terminal event.

    Raises:
        AssertionError: With the rule that was broken.
    """
    dicts = [e.to_dict() if isinstance(e, BaseEvent) else e for e in events]
    seqs = [e["seq"] for e in dicts]
    start = seqs[0] if first_seq is None and seqs else (first_seq or 1)
    assert seqs == list(range(start, start + len(seqs))), f"seq must be gapless: {seqs}"
    calls: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    ended: set[str] = set()
    for event in dicts:
        kind = event["type"]
        assert not any(_has_null(v) for v in event.values()), f"null field in {event}"
        assert isinstance(event["ts"], int), f"ts must be integer ms: {event}"
        if kind.startswith(("run.", "step.", "text.", "tool.call", "tool.exec")):
            assert "run_id" in event, f"run_id missing: {event}"
        if kind.startswith("tool.") and kind != "tool.circuit_open":
            assert "call_id" in event, f"call_id missing: {event}"
            assert event["call_id"] not in ended or kind == "tool.short_circuit", (
                f"event after the call's terminal event: {event}")
        if kind == "tool.call.start":
            calls[event["call_id"]] += 0
        if kind in TERMINAL_CALL_TYPES:
            calls[event["call_id"]] += 1
            ended.add(event["call_id"])
        if kind == "run.started":
            runs[event["run_id"]] += 0
        if kind in TERMINAL_RUN_TYPES:
            runs[event["run_id"]] += 1
    bad_calls = {c: n for c, n in calls.items() if n != 1}
    assert not bad_calls, f"every call needs exactly one terminal event: {bad_calls}"
    bad_runs = {r: n for r, n in runs.items() if n != 1}
    assert not bad_runs, f"every run needs exactly one terminal event: {bad_runs}"


class RedisServer:
    """A real ``redis-server`` (Debian package ``redis-server``) on a free 127.0.0.1 port.

    Args:
        directory: Where an append-only file lives when ``durable``.
        durable: ``appendonly yes`` with ``appendfsync always``: what a reader was sent
            survives a crash of Redis. Otherwise nothing is persisted.

    Example::

        with RedisServer() as redis:
            create_app(agent, settings=Settings(redis_url=redis.url))
    """

    def __init__(self, directory: str | Path | None = None, *, durable: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.directory = Path(directory) if directory else None
        self.durable = durable
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start (or restart, on the same port and files) and wait until it answers."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--protected-mode", "no", "--loglevel", "warning"]
        if self.durable:
            assert self.directory is not None, "a durable Redis needs a directory"
            args += ["--dir", str(self.directory), "--appendonly", "yes",
                     "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop it at once (SIGKILL: no shutdown save, as in a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
