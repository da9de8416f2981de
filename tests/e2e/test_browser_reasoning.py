"""The model's reasoning on the demo page: shown collapsed, apart from the answer."""

from __future__ import annotations

from collections.abc import Callable

from playwright.async_api import Browser

from toolplex import Agent
from toolplex.testing import ScriptedModel, Step

from .conftest import Served
from .test_browser import WAIT_MS, Demo, browser, chromium  # noqa: F401  (fixtures)

REASONING = "The user says hi. A short greeting back will do."


async def test_reasoning_is_shown_collapsed_before_the_answer(
        serve: Callable[..., Served], browser: Browser) -> None:  # noqa: F811
    model = ScriptedModel([Step(reasoning=REASONING, text="Hello there.", token_delay=0.01)])
    served = serve(Agent(model=model))
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        demo = Demo(await context.new_page(), served)
        await demo.open()
        await demo.ask("hi")
        await demo.finished()
        page = demo.page
        reasoning = page.locator("details.msg.reasoning")
        assert await reasoning.count() == 1
        assert await reasoning.get_attribute("open") is None, "collapsed until opened"
        assert await reasoning.locator("summary").text_content() == "Reasoning"
        assert await reasoning.locator(".body").text_content() == REASONING
        assert not await reasoning.locator(".body").is_visible()
        await reasoning.locator("summary").click()
        await page.wait_for_selector("details.msg.reasoning[open] .body", timeout=WAIT_MS)
        answers = await page.locator('.msg[data-role="assistant"]').all_text_contents()
        assert answers == ["Hello there."], "the answer is its own message"
        assert demo.errors == []
    finally:
        await context.close()
