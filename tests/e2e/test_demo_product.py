"""The demo chat as a product, in Chromium at 1280 and 390 px: markdown rendered safely,
JSON that folds, a thinking state, Send that waits for the run, a cancelled call the
scripted agent copes with, free text answered, chips from the agent, truthful labels,
the phone layout, and a reload after a restart."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from toolplex import Agent, Job, ScriptedModel, Settings, tool
from toolplex.demo import enrichment
from toolplex.scripted import Call, Step
from toolplex.server.webhooks import sign

from .conftest import Served, Serving
from .test_browser import ARTIFACTS, CHROMIUM, FLAGS, WAIT_MS

SECRET = "whsec_dG9vbHBsZXgtZGVtby1zZWNyZXQtMDEyMzQ1Njc4OQ=="
WIDTHS = [pytest.param(1280, id="desktop"), pytest.param(390, id="phone")]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def page_at(browser: Browser) -> Callable[..., Any]:
    """``await page_at(url, width)``: a fresh page on ``url``, live, errors recorded."""

    async def open_page(url: str, width: int = 1280) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": 860})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        await page.goto(url)
        await page.wait_for_selector('#conn[data-status="open"]', timeout=WAIT_MS)
        return page

    return open_page


async def _ask(page: Page, text: str) -> None:
    await page.fill("#input", text)
    await page.click("#send")


async def _ended(page: Page, runs: int = 1) -> None:
    await page.wait_for_function(
        """n => document.querySelectorAll('.run-end[data-outcome]').length >= n
             && !document.querySelector('.msg[data-status="streaming"]')""",
        arg=runs, timeout=WAIT_MS)


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _no_errors(page: Page) -> None:
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", WIDTHS)
async def test_free_text_gets_the_demo_help_rendered_as_markdown(
        serve: Callable[..., Served], page_at: Callable[..., Any], width: int) -> None:
    page = await page_at(serve().http + "/", width)
    chips = await page.locator("#suggestions button.chip").all_text_contents()
    assert "Enrich acme.com" in chips and "Search race" in chips, chips
    await _ask(page, "hello, what is this?")
    await _ended(page)
    await _shot(page, f"help-{width}")
    answer = page.locator('.msg[data-role="assistant"]').last
    assert await answer.locator("li").count() == 5, "one bullet per thing the demo can do"
    assert "Enrich acme.com" in await answer.locator("strong").all_text_contents()
    assert await page.locator("article.card").count() == 0, "free text starts no tool"
    _no_errors(page)


@tool
async def lookup(domain: str) -> dict[str, Any]:
    """Look a domain up."""
    return {"domain": domain, "site": f"https://{domain}/about", "tags": list("abcdefghij")}


_UNSAFE = ('**Bold** and `code`. <img src="x" onerror="window.__xss = 1">'
           '<script>window.__xss = 2</script> Docs: https://example.com/docs.')


async def test_model_html_is_never_markup_and_urls_are_links(
        serve: Callable[..., Served], page_at: Callable[..., Any]) -> None:
    model = ScriptedModel([Step(calls=[Call("lookup", {"domain": "acme.com"})]),
                           Step(text=_UNSAFE)])
    page = await page_at(serve(Agent(tools=[lookup], model=model)).http + "/")
    assert await page.locator("#suggestions").is_hidden(), "an agent with no prompts: no chips"
    await _ask(page, "look it up")
    await _ended(page)
    await _shot(page, "markdown-safe")
    answer = page.locator('.msg[data-role="assistant"]').last
    assert await answer.locator("strong").text_content() == "Bold"
    assert await answer.locator("img, script").count() == 0
    assert await page.evaluate("window.__xss") is None, "no model HTML ran"
    assert "<img" in (await answer.text_content() or ""), "the model's HTML is shown as text"
    link = answer.locator('a[href="https://example.com/docs"]')
    assert await link.get_attribute("target") == "_blank"
    card = page.locator('article.card[data-tool="lookup"]')
    result = card.locator("details.json-result")
    assert await result.evaluate("d => d.open") is False, "a long result starts folded"
    await result.locator("summary").click()
    pretty = await card.locator("pre.result").text_content() or ""
    assert json.loads(pretty)["domain"] == "acme.com" and "\n  " in pretty, "pretty-printed"
    assert await card.locator('pre.result a[href="https://acme.com/about"]').count() == 1
    _no_errors(page)


@pytest.mark.parametrize("width", WIDTHS)
async def test_a_streaming_result_is_not_repeated_under_its_chunks(
        serve: Callable[..., Served], page_at: Callable[..., Any], width: int) -> None:
    page = await page_at(serve().http + "/", width)
    await page.click('button.chip[data-prompt="Search race"]')
    await _ended(page)
    await _shot(page, f"search-race-{width}")
    docs = page.locator('article.card[data-tool="docs_search"]')
    assert await docs.locator(".chunks li[data-index]").count() == 4
    assert await docs.locator(".result-note").text_content() == "Result: the 4 chunks above."
    assert await docs.locator("pre.result").count() == 0, "the chunks are not printed twice"
    for loser in ("web_search", "news_search"):
        card = page.locator(f'article.card[data-tool="{loser}"]')
        assert await card.locator(".result-note").text_content() == (
            "Partial output: the chunks above.")
    _no_errors(page)


async def test_chips_come_from_the_agent(
        serve: Callable[..., Served], page_at: Callable[..., Any]) -> None:
    agent = Agent(tools=[lookup], model=ScriptedModel([Step(text="ok")]), prompts=["Look up acme"])
    page = await page_at(serve(agent).http + "/")
    assert await page.locator("#suggestions button.chip").all_text_contents() == ["Look up acme"]


@pytest.mark.parametrize("width", WIDTHS)
async def test_thinking_then_send_waits_for_the_run_and_keeps_the_text(
        serve: Callable[..., Served], page_at: Callable[..., Any], width: int) -> None:
    model = ScriptedModel([Step(text="First answer, after a pause.", delay=3.0,
                                token_delay=0.05)])
    page = await page_at(serve(Agent(model=model)).http + "/", width)
    await _ask(page, "first")
    await page.wait_for_selector(".thinking:visible", timeout=WAIT_MS)
    await page.fill("#input", "second, typed while the first streams")
    assert await page.locator("#send").is_disabled(), "Send waits while a run streams"
    await page.locator('.msg[data-role="assistant"]').first.wait_for(timeout=WAIT_MS)
    assert await page.locator(".thinking:visible").count() == 0, "thinking ends at the text"
    await _ended(page)
    assert await page.input_value("#input") == "second, typed while the first streams"
    await page.click("#send")
    await _ended(page, runs=2)
    inputs = await page.locator('.msg[data-run-input]').all_text_contents()
    assert inputs == ["first", "second, typed while the first streams"]
    _no_errors(page)


def _enrichment_with(apollo_blocks: anyio.Event) -> Agent:
    @tool(name="apollo")  # the demo's apollo, slow until cancelled
    async def slow_apollo(domain: str) -> dict[str, Any]:
        """Find the company in Apollo."""
        await apollo_blocks.wait()
        return {}

    tools = [t for t in enrichment.TOOLS if t.name != "apollo"]
    return Agent(tools=[slow_apollo, *tools], model=ScriptedModel(enrichment.SCRIPT))


@pytest.mark.parametrize("width", WIDTHS)
async def test_cancelling_a_call_of_the_enrichment_does_not_break_the_run(
        serve: Callable[..., Served], page_at: Callable[..., Any], width: int) -> None:
    page = await page_at(serve(_enrichment_with(anyio.Event())).http + "/", width)
    await _ask(page, "Enrich acme.com")
    cancel = page.locator('article.card[data-tool="apollo"] [data-action="cancel-call"]')
    await cancel.click(timeout=WAIT_MS)
    await _ended(page)
    await _shot(page, f"cancel-apollo-{width}")
    assert await page.get_attribute(".run-end", "data-outcome") == "success"
    final = await page.locator('.msg[data-role="assistant"]').last.text_content() or ""
    assert "No answer from Apollo" in final and "Saved as hs_" in final, final
    _no_errors(page)


@tool(timeout=0.3, retries=0)
async def stalls(topic: str) -> dict[str, Any]:
    """Never answers in time, with no output."""
    await anyio.sleep(30)
    return {}


CALLBACKS: dict[str, str] = {}


@tool(mode="webhook")
async def partner_export(table: str, job: Job) -> None:
    """Finished by a webhook (at the job's callback URL, which carries its token)."""
    CALLBACKS[job.id] = job.callback_url


async def test_labels_tell_the_truth(
        serve: Callable[..., Served], page_at: Callable[..., Any]) -> None:
    model = ScriptedModel(scripts={  # the first keyword found wins: "job update" first
        "job update": [Step(text="The export failed.")],
        "stall": [Step(calls=[Call("stalls", {"topic": "x"})]), Step(text="It timed out.")],
        "export": [Step(calls=[Call("partner_export", {"table": "t"})]), Step(text="Asked.")],
    })
    served = serve(Agent(tools=[stalls, partner_export], model=model),
                   Settings(webhook_secret=SECRET))
    page = await page_at(served.http + "/")
    await _ask(page, "stall")
    await _ended(page)
    card = page.locator('article.card[data-tool="stalls"]')
    note = await card.locator(".note.timeout").text_content() or ""
    assert "no output to keep" in note and "partial output kept" not in note, note
    assert await page.locator('.tl-bar[data-tool="stalls"] .tl-timeout').count() == 1
    assert await page.locator(".legend .tl-timeout").count() == 1, "the timeout is in the legend"
    shapes = await page.evaluate("""() => ['tl-retry', 'tl-timeout'].map(c => {
        const s = getComputedStyle(document.querySelector('.legend .' + c));
        return [s.borderRadius, s.backgroundColor]; })""")
    assert shapes[0] != shapes[1], f"timeout and retry markers look alike: {shapes}"

    await _ask(page, "export")
    job_id = await page.locator("[data-job-id]").get_attribute("data-job-id", timeout=WAIT_MS)
    assert job_id
    body = json.dumps({"error": {"code": "export_failed", "message": "disk full"}}).encode()
    stamp, msg_id = int(time.time()), "msg_demo_1"
    async with httpx.AsyncClient() as client:
        where = urlsplit(CALLBACKS[job_id])  # its path and token; this server's port
        answer = await client.post(f"{served.http}{where.path}?{where.query}", content=body,
                                   headers={
            "webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": sign(SECRET, msg_id, stamp, body)})
    assert answer.status_code == 200, answer.text
    await _ended(page, runs=3)
    await _shot(page, "labels")
    card = page.locator('article.card[data-tool="partner_export"]')
    badge = await card.locator(".badge.status").text_content()
    assert badge == "job failed", badge
    _no_errors(page)


@pytest.mark.parametrize("width", [pytest.param(390, id="phone")])
async def test_the_phone_layout_keeps_the_composer_at_the_bottom(
        serve: Callable[..., Served], page_at: Callable[..., Any], width: int) -> None:
    page = await page_at(serve().http + "/", width)
    await page.click('button.chip[data-prompt="Enrich acme.com"]')
    await _ended(page)
    await _shot(page, "phone-390")
    box = await page.locator("#composer").bounding_box()
    assert box and box["y"] + box["height"] > 860 - 40, f"the composer sits at the bottom: {box}"
    assert await page.locator("#timeline").is_hidden(), "the timeline starts folded on a phone"
    await page.click("#toggle-timeline")
    assert await page.locator(".tl-bar").count() == 6, "unfolded, it shows every call"
    await _shot(page, "phone-390-timeline")
    width_px = await page.evaluate("document.documentElement.scrollWidth")
    assert width_px <= width, f"no horizontal scroll at {width} px: {width_px}"
    _no_errors(page)


@pytest.mark.parametrize("width", WIDTHS)
async def test_after_a_restart_a_reload_shows_the_conversation_and_nothing_runs(
        toolplex_serve: Callable[..., Serving], page_at: Callable[..., Any],
        tmp_path: Path, width: int) -> None:
    db = str(tmp_path / "demo.sqlite")
    first = toolplex_serve("--db", db)
    page = await page_at(first.url + "/", width)
    await _ask(page, "Enrich acme.com")
    await _ended(page)
    final = await page.locator('.msg[data-role="assistant"]').last.text_content()
    first.proc.terminate()
    await anyio.to_thread.run_sync(first.proc.wait)
    port = first.url.rsplit(":", 1)[1]
    toolplex_serve("--db", db, port=int(port))
    await page.reload()
    await page.wait_for_selector('#conn[data-status="open"]', timeout=WAIT_MS)
    await page.wait_for_function(
        "t => [...document.querySelectorAll('.msg')].some(m => m.textContent === t)",
        arg=final, timeout=WAIT_MS)
    await _shot(page, f"restart-reload-{width}")
    assert await page.locator('.msg[data-run-input], .msg[data-role="user"]').filter(
        has_text="Enrich acme.com").count() == 1, "the question is shown once"
    running = page.locator('[data-status="running"], .card[data-status="streaming_args"]')
    assert await running.count() == 0, "nothing stays running after a restart"
    _no_errors(page)
