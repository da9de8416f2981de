"""The container setup, run without Docker: compose.yaml's own toolplex commands, two
processes on a real redis-server, one run through both.

CI builds and runs the images themselves where a Docker engine answers (.ci/run); this
test runs everywhere, with the start commands read from compose.yaml so they cannot
drift from what the containers run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from toolplex.testing import RedisServer, check_protocol

from .conftest import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-deploy-key"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _toolplex_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items()
            if service.get("command", [None])[0] == "toolplex"}


def _value(text: str) -> str:
    """A compose value with ``${NAME...}`` filled in as this test sets them."""
    given = {"TOOLPLEX_API_KEY": API_KEY}
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: given.get(m[1], ""), str(text))


def _option(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced (the one thing a host differs in)."""
    assert flag in argv, f"compose.yaml's command lacks {flag}"
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


class TestComposeFile:
    def test_two_toolplex_processes_on_one_redis_behind_one_port(self) -> None:
        compose = _compose()
        services = _toolplex_services(compose)
        assert len(services) == 2
        redis_urls = {s["command"][s["command"].index("--redis") + 1] for s in services.values()}
        assert redis_urls == {"redis://redis:6379/0"}, "one shared Redis"
        assert compose["services"]["redis"]["image"].startswith("redis:")
        proxy = compose["services"]["proxy"]
        assert proxy["ports"] == ["8080:8080"], "one port for both"
        assert [proxy["command"][i + 1] for i, arg in enumerate(proxy["command"])
                if arg == "--to"] == [f"{name}:8000" for name in services]
        for service in services.values():
            assert service["command"][:3] == ["toolplex", "serve", "--host"]
            assert "TOOLPLEX_API_KEY" in service["environment"], "served with auth"
            assert ":?" in service["environment"]["TOOLPLEX_API_KEY"], (
                "compose refuses to start without a key")

    def test_the_image_is_slim_python_non_root_serving_on_all_interfaces(self) -> None:
        dockerfile = (ROOT / "Dockerfile").read_text()
        stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
        assert re.fullmatch(r"python:3\.\d+-slim", stages[-1]), stages
        assert re.search(r"^USER toolplex$", dockerfile, re.MULTILINE), "not root"
        cmd = json.loads(re.findall(r"^CMD (.+)$", dockerfile, re.MULTILINE)[-1])
        assert cmd == ["toolplex", "serve", "--host", "0.0.0.0", "--port", "8000"]
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert {".git", ".venv", "**/node_modules"} <= set(ignored)


def test_the_images_command_refuses_all_interfaces_without_a_key(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.findall(r"^CMD (.+)$", dockerfile, re.MULTILINE)[-1])
    env = {k: v for k, v in os.environ.items() if k != "TOOLPLEX_API_KEY"}
    argv = _option([str(Path(sys.executable).with_name("toolplex")), *cmd[1:]],
                   "--port", str(free_port()))
    try:
        done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("it served on all interfaces with no key") from exc
    assert done.returncode != 0 and "TOOLPLEX_API_KEY" in done.stderr, done.stderr


class _Process:
    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                          stderr=stderr, cwd=log.parent)

    def wait_healthy(self) -> None:
        try:
            wait_healthy(self.url, self.popen)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.log.read_text()}") from None

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture
def compose_processes(tmp_path: Path) -> Iterator[list[_Process]]:
    """compose.yaml's toolplex services as processes on 127.0.0.1, on one redis-server."""
    toolplex = Path(sys.executable).with_name("toolplex")
    with RedisServer() as redis:
        processes: list[_Process] = []
        try:
            for name, service in _toolplex_services(_compose()).items():
                port = free_port()
                argv = [str(toolplex), *service["command"][1:]]
                # What differs on one machine: loopback, a port each, the test's Redis.
                argv = _option(argv, "--host", "127.0.0.1")
                argv = _option(argv, "--port", str(port))
                argv = _option(argv, "--redis", redis.url)
                env = {**os.environ, **{k: _value(v) for k, v in service["environment"].items()}}
                env["TOOLPLEX_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
                workdir = tmp_path / name
                workdir.mkdir()
                processes.append(_Process(argv, env, port, workdir / "stderr.log"))
            for process in processes:
                process.wait_healthy()
            yield processes
        finally:
            for process in processes:
                process.stop()


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


def test_a_run_through_both_processes(compose_processes: list[_Process]) -> None:
    first, second = compose_processes
    key = {"authorization": f"Bearer {API_KEY}"}
    assert httpx.post(f"{first.url}/v1/sessions", timeout=30).status_code == 401, (
        "compose's TOOLPLEX_API_KEY is required")
    created = httpx.post(f"{first.url}/v1/sessions", headers=key, timeout=30)
    assert created.status_code == 201, created.text
    session = created.json()
    token = {"authorization": f"Bearer {session['token']}"}
    sid = session["session_id"]
    # Started on the second process, streamed there, then replayed from the first.
    with httpx.stream("POST", f"{second.url}/v1/sessions/{sid}/runs",
                      json={"input": "Enrich acme.com"}, timeout=60,
                      headers={**token, "accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        streamed = _events(response.read().decode())
    assert streamed[-1]["type"] == "run.finished", streamed[-1]
    run_id = streamed[0]["run_id"]
    with httpx.stream("GET", f"{first.url}/v1/sessions/{sid}/events?after=0", timeout=60,
                      headers=token) as response:
        replayed: list[dict[str, Any]] = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                replayed.append(json.loads(line[5:]))
                if replayed[-1].get("type") == "run.finished":
                    break
    logged = [e for e in replayed if e.get("run_id") == run_id]
    check_protocol(logged)
    assert [e["seq"] for e in logged] == [e["seq"] for e in streamed], (
        "the other process serves the same log, seq for seq")
    for process in compose_processes:
        assert httpx.get(f"{process.url}/healthz").json()["status"] == "ok"
