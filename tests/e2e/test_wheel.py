"""The built wheel, installed in a fresh virtualenv (not this checkout), serves the demo
page and the JS client from its package data, and the demo works in Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from .conftest import Serving
from .test_browser import CHROMIUM, FLAGS, WAIT_MS

ROOT = Path(__file__).resolve().parents[2]
# Building in an isolated environment and installing every dependency from the index
# into a fresh virtualenv takes minutes on a loaded machine, once for the module.
pytestmark = pytest.mark.timeout(900)


# The fresh virtualenv sees nothing of this one: not even a PYTHONPATH to the checkout.
ALONE = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(*args: str | Path, cwd: Path = ROOT) -> None:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=800, env=ALONE)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel .`` builds from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ".")
    (built,) = out.glob("toolplex-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its dependencies installed: its bin/."""
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "pip", "install", "-q", wheel)
    return venv / "bin"


def test_the_wheel_carries_the_client_and_the_demo_not_the_tests(wheel: Path) -> None:
    import json

    package = json.loads((ROOT / "client_js" / "package.json").read_text())
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {n.removeprefix("toolplex/static/") for n in names if n.startswith("toolplex/static/")}
    expected = {*package["files"], "demo/index.html", "demo/demo.js", "demo/demo.css",
                *(f"vendor/{name}" for name in package["toolplex"]["vendor"])}
    assert expected <= static, sorted(expected - static)
    unwanted = ("test/", "test-", "node_modules/", "scripts/")
    assert not [n for n in static if n.startswith(unwanted)], static


@pytest.fixture
def from_wheel(installed: Path, toolplex_serve: Callable[..., Serving], tmp_path: Path) -> Serving:
    """``toolplex serve`` of the fresh virtualenv, run outside the checkout."""
    where = subprocess.check_output(
        [installed / "python", "-c",
         "from toolplex.server.settings import Settings; print(Settings().static_dir)"],
        text=True, cwd=tmp_path, env=ALONE).strip()
    assert where.startswith(str(installed.parent)), f"served from {where}, not the wheel"
    served = toolplex_serve(binary=installed / "toolplex", cwd=tmp_path)
    for path in ("/static/toolplex.js", "/static/vendor/marked.esm.js"):
        answer = httpx.get(f"{served.url}{path}")
        assert answer.status_code == 200 and "javascript" in answer.headers["content-type"], path
    return served


async def test_toolplex_serve_from_the_wheel_runs_the_demo_in_chromium(
        from_wheel: Serving) -> None:
    served = from_wheel
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{served.url}/")
            await page.wait_for_selector('#conn[data-status="open"]', timeout=WAIT_MS)
            await page.fill("#input", "Enrich acme.com")
            await page.click("#send")
            await page.wait_for_selector('.run-end[data-outcome="success"]', timeout=WAIT_MS)
            answer = await page.text_content('.run:last-child .msg[data-role="assistant"]'
                                             ':last-of-type')
            assert answer and "Acme (acme.com)" in answer, answer
            cards = await page.eval_on_selector_all(
                "article.card", "els => els.map(e => [e.dataset.tool, e.dataset.status])")
            assert sorted(cards) == sorted([
                ["apollo", "succeeded"], ["linkedin", "succeeded"], ["clearbit", "succeeded"],
                ["verify_email", "succeeded"], ["hubspot_upsert", "succeeded"],
                ["slack_notify", "succeeded"]]), cards
            assert errors == []
        finally:
            await browser.close()
