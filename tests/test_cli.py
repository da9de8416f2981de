"""The ``toolplex`` command as a person runs it: version, help, bad environment values,
and the examples that print a timed trace (real subprocesses)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import toolplex

ROOT = Path(__file__).resolve().parents[1]
TOOLPLEX = Path(sys.executable).with_name("toolplex")
# A line of the trace: "   218 ms  tool.call.start    apollo  {...}".
TRACE_LINE = re.compile(r"^\s*\d+ ms  (\S+)", re.MULTILINE)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOOLPLEX_")}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**clean, **(env or {})})


class TestVersion:
    def test_version_comes_from_the_package_metadata(self) -> None:
        assert toolplex.__version__ == version("toolplex")

    def test_version_option_prints_it(self) -> None:
        done = _run(str(TOOLPLEX), "--version")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"toolplex {toolplex.__version__}"


class TestEnvironment:
    def test_a_bad_port_is_one_line_not_a_traceback(self) -> None:
        done = _run(str(TOOLPLEX), "serve", env={"TOOLPLEX_PORT": "abc"})
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            "toolplex: error: TOOLPLEX_PORT: 'abc' is not a port number (0-65535)"]

    def test_a_bad_log_level_is_one_line_not_a_traceback(self) -> None:
        done = _run(str(TOOLPLEX), "serve", env={"TOOLPLEX_LOG_LEVEL": "verbose"})
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "TOOLPLEX_LOG_LEVEL: 'verbose'" in lines[0], done.stderr

    def test_help_works_with_bad_values_set(self) -> None:
        done = _run(str(TOOLPLEX), "serve", "--help",
                    env={"TOOLPLEX_PORT": "abc", "TOOLPLEX_LOG_LEVEL": "verbose"})
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "--port" in done.stdout

    def test_every_variable_the_package_reads_is_in_help_and_readme(self) -> None:
        source = "\n".join(p.read_text() for p in (ROOT / "server").rglob("*.py"))
        # A variable the code reads is a string literal of its own ("TOOLPLEX_PORT").
        names = set(re.findall(r"[\"'](TOOLPLEX_[A-Z_]+[A-Z])[\"']", source))
        assert {"TOOLPLEX_PORT", "TOOLPLEX_WEBHOOK_SECRET"} <= names
        shown = _run(str(TOOLPLEX), "serve", "--help").stdout
        readme = (ROOT / "README.md").read_text()
        assert sorted(n for n in names if n not in shown) == [], "missing from --help"
        assert sorted(n for n in names if n not in readme) == [], "missing from README.md"


class TestExamplesTalk:
    def _trace(self, done: subprocess.CompletedProcess[str]) -> list[str]:
        assert done.returncode == 0, done.stderr[-2000:]
        return TRACE_LINE.findall(done.stdout)

    def test_demo_enrichment_prints_a_timed_trace(self) -> None:
        done = _run(str(TOOLPLEX), "demo", "enrichment", "acme.com")
        kinds = self._trace(done)
        assert kinds[0] == "run.started" and kinds[-1] == "run.finished", kinds
        assert kinds.count("tool.result") == 6, "six calls, each with its result"
        assert re.search(r"assistant\s+Acme \(acme\.com\): \d+ people", done.stdout), done.stdout

    def test_enrichment_script_prints_a_timed_trace(self) -> None:
        done = _run(sys.executable, "examples/enrichment.py", "globex.io")
        kinds = self._trace(done)
        assert "tool.exec.started" in kinds and kinds[-1] == "run.finished"
        assert re.search(r"tool\.result\s+verify_email .*dana@globex\.io", done.stdout)

    def test_search_race_prints_the_short_circuit(self) -> None:
        done = _run(sys.executable, "examples/search_race.py", "vector databases")
        kinds = self._trace(done)
        assert "tool.short_circuit" in kinds and kinds.count("tool.cancelled") == 2, kinds
        assert "Best answer: Vector Databases: docs result 3" in done.stdout
