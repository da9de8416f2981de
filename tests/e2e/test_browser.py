"""The demo page in a real browser (Debian's Chromium, driven by Playwright) against a
real server running the demo agent: what a person sees when they use it."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from .conftest import Served

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# Without the background-networking flags Chromium keeps dialling out, and this machine's
# network refuses it; --headless=new renders like the real browser.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; a missing browser fails the test (a skip would hide it in CI)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


class Demo:
    """The demo page on one server, with what went wrong in the page recorded."""

    def __init__(self, page: Page, served: Served) -> None:
        self.page = page
        self.served = served
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: ConsoleMessage) -> None:
        # The page has no favicon; the browser's request for one is not the page's error.
        if msg.type == "error" and "favicon" not in msg.location.get("url", ""):
            self.errors.append(f"console: {msg.text}")

    async def open(self) -> str:
        """Load the page and wait until it is live; returns its session id."""
        await self.page.goto(f"{self.served.http}/")
        return await self.live()

    async def live(self) -> str:
        await self.page.wait_for_selector('#conn[data-status="open"]', timeout=WAIT_MS)
        return (await self.page.text_content("#session") or "").strip()

    async def ask(self, text: str) -> None:
        await self.page.fill("#input", text)
        await self.page.click("#send")

    async def finished(self, runs: int = 1) -> None:
        """Wait until ``runs`` runs ended and no message is still streaming."""
        await self.page.wait_for_function(
            """(n) => document.querySelectorAll('.run-end[data-outcome]').length >= n
                 && !document.querySelector('.msg[data-status="streaming"]')""",
            arg=runs, timeout=WAIT_MS)

    async def shot(self, name: str) -> None:
        """Save what the person sees now, and the whole page, under artifacts/."""
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}-full.png"), full_page=True)

    def log(self, session_id: str) -> list[dict[str, Any]]:
        """The session's events as the server logged them."""
        session = self.served.hub.store.get(session_id)
        assert session is not None, f"the server has no session {session_id}"
        return [e.to_dict() for e in session.log.replay(0)]


@pytest.fixture
async def demo(serve: Callable[..., Served], browser: Browser) -> AsyncIterator[Demo]:
    served = serve()
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield Demo(await context.new_page(), served)
    finally:
        await context.close()


def _texts(log: list[dict[str, Any]]) -> dict[str, str]:
    """Each message's full text, by message_id, in the order the messages started."""
    texts = {e["message_id"]: "" for e in log if e["type"] == "text.start"}
    for e in log:
        if e["type"] == "text.delta":
            texts[e["message_id"]] += e["delta"]
    return texts


async def _bars(page: Page) -> dict[str, tuple[float, float]]:
    rows = await page.eval_on_selector_all(
        ".tl-bar", "els => els.map(b => [b.dataset.tool, +b.dataset.startMs, +b.dataset.endMs])")
    return {tool: (start, end) for tool, start, end in rows}


async def _card(page: Page, tool: str) -> dict[str, str]:
    """A tool call's card as shown: status, call id, cancel note, badges."""
    return await page.eval_on_selector(f'article.card[data-tool="{tool}"]', """c => ({
        status: c.dataset.status, id: c.dataset.callId,
        note: c.querySelector('.note.cancel')?.textContent ?? '',
        badges: [...c.querySelectorAll('.badge')].map(b => b.textContent).join(' ')})""")


async def test_parallel_enrichment_shows_overlapping_bars_and_the_answer(demo: Demo) -> None:
    sid = await demo.open()
    await demo.ask("Enrich acme.com")
    await demo.finished()
    await demo.shot("enrich")

    bars = await _bars(demo.page)
    parallel = ["apollo", "linkedin", "clearbit"]
    assert set(parallel) <= set(bars), f"a bar per research call, got {sorted(bars)}"
    for i, a in enumerate(parallel):
        for b in parallel[i + 1:]:
            (a0, a1), (b0, b1) = bars[a], bars[b]
            assert max(a0, b0) < min(a1, b1), f"{a} {bars[a]} and {b} {bars[b]} must overlap"
    assert len(bars) == 6, f"six tool calls in the enrichment, got {sorted(bars)}"

    final = list(_texts(demo.log(sid)).values())[-1]
    assert final.startswith("Acme (acme.com):"), final
    shown = await demo.page.locator(".msg[data-message-id]").all_text_contents()
    assert shown[-1] == final, "the final answer is shown as the server wrote it"
    assert await demo.page.get_attribute(".run-end", "data-outcome") == "success"
    assert demo.errors == []


async def test_search_race_shows_the_short_circuit(demo: Demo) -> None:
    sid = await demo.open()
    await demo.ask("Search race")
    await demo.finished()
    await demo.shot("search-race")

    docs = await _card(demo.page, "docs_search")
    assert docs["status"] == "succeeded", docs
    assert "decisive" in docs["badges"], "the call whose hit won says so"
    for loser in ("web_search", "news_search"):
        card = await _card(demo.page, loser)
        assert card["status"] == "cancelled", card
        assert f"Cancelled by docs_search ({docs['id']})" in card["note"], (
            f"{loser}'s card names the decisive call: {card['note']!r}")
    cancelled = {e["call_id"]: e for e in demo.log(sid) if e["type"] == "tool.cancelled"}
    assert {e["reason"] for e in cancelled.values()} == {"short_circuit"}, cancelled
    assert {e["by_call_id"] for e in cancelled.values()} == {docs["id"]}, cancelled
    bars = await demo.page.eval_on_selector_all(
        ".tl-bar", "els => Object.fromEntries(els.map(b => [b.dataset.tool, b.dataset.status]))")
    assert bars == {"web_search": "cancelled", "docs_search": "succeeded",
                    "news_search": "cancelled"}, "the timeline tells the same story"
    assert demo.errors == []


async def test_reload_mid_run_shows_each_message_once(demo: Demo) -> None:
    sid = await demo.open()
    await demo.ask("Enrich acme.com")
    await demo.page.wait_for_selector("article.card", timeout=WAIT_MS)
    reloaded_at = time.time() * 1000
    await demo.page.reload()
    assert await demo.live() == sid, "a reload resumes the same session"
    # Again while the page shows the answer streaming in (the server may end it before the
    # new page subscribes: the replay from seq 0 must come out the same either way).
    await demo.page.wait_for_function("""() => [...document.querySelectorAll(
        '.msg[data-status="streaming"]')].some(m => m.textContent.startsWith('Acme '))""",
        timeout=WAIT_MS)
    await demo.page.reload()
    await demo.live()
    await demo.finished()
    await demo.shot("reload")

    log = demo.log(sid)
    (end,) = [e for e in log if e["type"] == "run.finished"]
    assert end["ts"] > reloaded_at, "the first reload must happen while the run is going"
    texts = _texts(log)
    msgs = await demo.page.eval_on_selector_all(
        ".msg[data-message-id]", "els => els.map(m => [m.dataset.messageId, m.textContent])")
    assert len(msgs) == len(texts), f"one element per logged message: {msgs}"
    # Markdown drops a paragraph's trailing space; every other character is as logged.
    assert {k: v.strip() for k, v in msgs} == {k: v.strip() for k, v in texts.items()}, (
        "each message's text exactly as logged, none doubled")
    shown = "\n".join(text for _, text in msgs)
    final = list(texts.values())[-1]
    assert shown.count(final) == 1, "the final answer appears exactly once"
    for sentence in (s for text in texts.values() for s in re.split(r"(?<=\.) ", text) if s):
        assert shown.count(sentence) == 1, f"{sentence!r} is shown {shown.count(sentence)} times"
    assert await demo.page.locator("article.card").count() == 6, "one card per call"
    assert demo.errors == []


async def test_the_page_fits_a_375px_phone(demo: Demo) -> None:
    await demo.page.set_viewport_size({"width": 375, "height": 800})
    await demo.open()
    await demo.page.click('button.chip[data-prompt="Enrich acme.com"]')
    await demo.finished(runs=1)
    await demo.page.click('button.chip[data-prompt="Search race"]')
    await demo.finished(runs=2)
    answer = demo.page.locator(".msg[data-message-id]").last
    await expect(answer).to_be_in_viewport()  # the page follows the stream to its end
    await demo.shot("phone-375")

    width = await demo.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"no horizontal scrollbar at 375 px: the page is {width} px wide"
    assert await demo.page.locator("article.card").count() == 9, "6 enrichment + 3 search calls"
    assert demo.errors == []
