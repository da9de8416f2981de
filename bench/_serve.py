"""Start a server in a subprocess on a free 127.0.0.1 port, for benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(argv: list[str], port: int, env: dict[str, str] | None = None,
            ready: str = "/healthz") -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; wait until ``GET ready`` answers (or a TCP accept)."""
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if ready:
                    httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=0.5)
                else:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except (httpx.TransportError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{argv} did not start") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def uvicorn_argv(factory: str, port: int) -> list[str]:
    """uvicorn serving an app factory the way ``toolplex serve`` configures it."""
    return [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--ws-per-message-deflate", "false"]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def scripted_app() -> Any:
    """The app factory of ``python -m bench --http``'s endpoint: one ScriptedModel serving
    every workload script at every size, each picked by its key (the run's user message),
    at ``/scripted/v1/chat/completions`` as the toolplex server mounts its own."""
    from toolplex.testing import ScriptedModel

    from .peers.toolplex import scripted_steps
    from .workloads import Sizes, script_key, scripts

    served = {script_key(s): scripted_steps(s)
              for sizes in (Sizes(), Sizes.quick(), Sizes.tiny()) for s in scripts(sizes)}
    return ScriptedModel(scripts=served, keep_requests=1).asgi_app()


@contextmanager
def scripted_endpoint() -> Iterator[str]:
    """The scripted model on a real uvicorn until the block ends: its OpenAI base URL."""
    port = free_port()
    with process(uvicorn_argv("bench._serve:scripted_app", port), port, ready=""):
        yield f"http://127.0.0.1:{port}/scripted/v1"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name (which may hold spaces): utime, stime are 14, 15.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
