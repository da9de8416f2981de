"""The JS client's own tests (node --test) run as part of the one test command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[1] / "client_js"


def test_js_client_unit_tests_pass() -> None:
    node = shutil.which("node")
    assert node, "Node 20+ is required for the JS client tests (.ci/run installs it)"
    done = subprocess.run([node, "--test", "test/"], cwd=CLIENT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, "node ran no test"
