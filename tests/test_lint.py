"""The code follows the project's ruff rules (STYLE.md), so style cannot rot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    paths = [p for p in ("server", "tests", "examples", "bench") if (ROOT / p).is_dir()]
    done = subprocess.run([ruff, "check", *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-1000:]
