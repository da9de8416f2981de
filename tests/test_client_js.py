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


def test_npm_pack_ships_the_modules_and_types_not_the_tests() -> None:
    import json

    npm = shutil.which("npm")
    assert npm, "npm is required (it comes with Node)"
    done = subprocess.run([npm, "pack", "--dry-run", "--json", "--ignore-scripts"], cwd=CLIENT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    packed = {f["path"] for f in json.loads(done.stdout)[0]["files"]}
    modules = {p.name for p in CLIENT.glob("*.js")}
    assert modules | {"toolplex.d.ts", "package.json", "README.md"} == packed, packed
    package = json.loads((CLIENT / "package.json").read_text())
    assert not package.get("private"), "a private package cannot be published"
    assert package["license"] and package["repository"]
    assert package["types"].removeprefix("./") in packed
    for entry in package["exports"].values():
        targets = entry.values() if isinstance(entry, dict) else [entry]
        assert {t.removeprefix("./") for t in targets} <= packed, entry
