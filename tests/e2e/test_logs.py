"""JSON logs: the same lines under ``toolplex serve`` and under a plain ``uvicorn``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import free_port, wait_healthy

_APP = '''\
from toolplex.server import configure_logging, create_app

configure_logging()
app = create_app()
'''


def test_create_app_under_plain_uvicorn_logs_json_lines(tmp_path: Path) -> None:
    (tmp_path / "plain_app.py").write_text(_APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "plain_app:app",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        session = httpx.post(f"http://127.0.0.1:{port}/v1/sessions").json()
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines, "uvicorn logged nothing"
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers, "uvicorn's own lines are JSON too"
    created = [line for line in lines if line["msg"] == "session created"]
    assert created and created[0]["session_id"] == session["session_id"]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
