"""Three streaming search sources race; the first decisive hit cancels the others.

Each source yields results as it finds them (``tool.output.delta``). A result
scoring 0.9 or more is decisive: its siblings are cancelled at once and keep
what they had found as ``partial_output``.

Run it: ``python -m toolplex.demo.search_race "vector databases"``
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from ..runner import Agent
from ..scripted import Call, Step
from ..tools import tool
from ._show import show


def _decisive(hit: dict[str, Any]) -> bool:
    return float(hit.get("score", 0)) >= 0.9


async def _source(name: str, query: str, pace: float, scores: list[float]) -> Any:
    for rank, score in enumerate(scores, 1):
        await anyio.sleep(pace)
        yield {"source": name, "title": f"{query.title()}: {name} result {rank}",
               "url": f"https://{name}.example/{rank}", "score": score}


@tool(decisive=_decisive)
async def web_search(query: str):  # type: ignore[no-untyped-def]
    """Search the web; results stream in as they are found.

    Args:
        query: What to look for.
    """
    async for hit in _source("web", query, 0.25, [0.42, 0.61, 0.7, 0.74, 0.8]):
        yield hit


@tool(decisive=_decisive)
async def docs_search(query: str):  # type: ignore[no-untyped-def]
    """Search the internal documentation.

    Args:
        query: What to look for.
    """
    async for hit in _source("docs", query, 0.18, [0.55, 0.71, 0.93, 0.6]):
        yield hit


@tool(decisive=_decisive)
async def news_search(query: str):  # type: ignore[no-untyped-def]
    """Search recent news.

    Args:
        query: What to look for.
    """
    async for hit in _source("news", query, 0.3, [0.35, 0.5, 0.58, 0.66]):
        yield hit


TOOLS = [web_search, docs_search, news_search]

SCRIPT = [
    Step(text="Searching the web, the docs and the news at once. ", token_delay=0.02,
         arg_delay=0.02,
         calls=[Call(name, lambda r: {"query": _query(r)})
                for name in ("web_search", "docs_search", "news_search")]),
    Step(text=lambda r: (
        f"Best answer: {_best(r)['title']} ({_best(r)['url']}, score {_best(r)['score']}). "
        "The slower sources were stopped as soon as it arrived."), token_delay=0.02),
]


def _query(results: dict[str, Any]) -> str:
    text = results.get("input", "")
    for prefix in ("search race:", "search race", "search for", "search"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            break
    return text.strip(" :") or "streaming agents"


def _best(results: dict[str, Any]) -> dict[str, Any]:
    hits: list[dict[str, Any]] = []
    for name in ("web_search", "docs_search", "news_search"):
        value = results.get(name)
        if isinstance(value, list):
            hits.extend(h for h in value if isinstance(h, dict))
        elif isinstance(value, dict):
            hits.extend(h for h in value.get("partial_output") or [] if isinstance(h, dict))
    return max(hits, key=lambda h: h["score"], default={"title": "nothing", "url": "-",
                                                          "score": 0})


def main(argv: list[str] | None = None) -> None:
    """Run the race on a query and print its event stream."""
    from ..scripted import ScriptedModel

    query = " ".join(argv if argv is not None else sys.argv[1:]) or "streaming agents"
    agent = Agent(tools=TOOLS, model=ScriptedModel(SCRIPT))
    anyio.run(show, agent.run(f"search {query}"))


if __name__ == "__main__":
    main()
