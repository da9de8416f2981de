"""The JS client's live tests (client_js/test-live/, node --test) against a real server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from toolplex import Agent, tool
from toolplex.server import Settings
from toolplex.testing import Call, ScriptedModel, Step

from .conftest import Served

CLIENT = Path(__file__).resolve().parents[2] / "client_js"


def _node_test(node: str, directory: str, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``node --test directory``; on timeout kill its whole process group (the runner
    spawns a process per test file, which would outlive it)."""
    proc = subprocess.Popen([node, "--test", directory], cwd=CLIENT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"node --test {directory} ran over {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


def test_js_client_runs_and_resumes_against_the_real_server(
    serve: Callable[..., Served],
) -> None:
    node = shutil.which("node")
    assert node, "Node 20+ is required for the JS client tests"
    assert (CLIENT / "node_modules" / "ws").is_dir(), (
        "the live tests need the `ws` package: run `npm ci` in client_js (.ci/run does it)")
    served = serve()
    code, out = _node_test(node, "test-live/live.test.js",
                           {**os.environ, "TOOLPLEX_URL": served.http}, 45)
    assert code == 0, out[-6000:]
    passed = re.search(r"^# pass (\d+)", out, re.MULTILINE)
    skipped = re.search(r"^# skipped (\d+)", out, re.MULTILINE)
    assert passed, out[-6000:]
    assert int(passed.group(1)) > 0, "node ran no live test"
    assert skipped is None or skipped.group(1) == "0", "a live test was skipped:\n" + out[-6000:]


RUNS = 12


def test_js_client_shows_a_gap_larger_than_a_frame_as_the_whole_conversation(
    serve: Callable[..., Served],
) -> None:
    """Twelve runs whose tool returns 300 KB (100 KB of it in the history), a log of 20
    events: a page joining at seq 1 gets a snapshot over 1 MiB, in parts, and shows every
    message."""
    node = shutil.which("node")
    assert node, "Node 20+ is required for the JS client tests"

    @tool
    def big() -> str:
        """A large result."""
        return "x" * 300_000

    # Every run replays the script: a call to big, then "done".
    agent = Agent(tools=[big], model=ScriptedModel([Step(calls=[Call("big", {})]),
                                                    Step(text="done")]))
    served = serve(agent, Settings(log_retain=20))
    env = {**os.environ, "TOOLPLEX_BIG_URL": served.http, "TOOLPLEX_BIG_RUNS": str(RUNS)}
    code, out = _node_test(node, "test-live/snapshot.test.js", env, 60)
    assert code == 0, out[-6000:]
    passed = re.search(r"^# pass (\d+)", out, re.MULTILINE)
    assert passed and passed.group(1) == "1", out[-6000:]
