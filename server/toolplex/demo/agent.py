"""The demo agent ``toolplex serve`` runs by default: every demo tool, one model.

The scripted model picks a script by keyword in the user's message: "search"
races three search sources, "batch" starts a background analysis, "approve"
asks a person, "export" waits for a partner's webhook, "enrich" researches a
company; anything else gets an answer saying what the demo can do (never the
side-effecting enrichment). A job's completion ("Job update: ...") gets its own turn.
"""

from __future__ import annotations

from ..limits import UpstreamLimit
from ..model import Model
from ..runner import Agent
from ..scripted import ScriptedModel, Step
from . import batch, enrichment, search_race

PROMPTS = ("Enrich acme.com", "Search race", "Batch job", "Approve discount", "Export")
"""The demo page's suggestion chips: one per script."""

HELP = [Step(text=(
    "I'm toolplex's demo agent, on a scripted model: I answer a few requests, each "
    "showing one way tools run.\n\n"
    "- **Enrich acme.com**: three lookups in parallel, a check that needs them, then two "
    "writes (any domain works)\n"
    "- **Search race** *topic*: three streaming searches; the first decisive hit cancels "
    "the others\n"
    "- **Batch job**: a background job with progress, reported in a turn of its own\n"
    "- **Approve discount**: a job a person finishes (Approve or Reject on its card)\n"
    "- **Export**: a partner's signed webhook finishes the job\n\n"
    "Point `toolplex serve --model` at a real model to talk freely."), token_delay=0.005)]
"""The answer to anything the scripts do not know."""


def demo_model() -> ScriptedModel:
    """The scripted model with every example's script."""
    return ScriptedModel(
        scripts={**batch.SCRIPTS, "search": search_race.SCRIPT, "enrich": enrichment.SCRIPT},
        default=HELP,
        keep_requests=0,  # a served demo must not hold every request's whole conversation
    )


def demo_agent(model: Model | None = None) -> Agent:
    """Every example tool, on ``model`` (default: :func:`demo_model`)."""
    return Agent(
        tools=[*enrichment.TOOLS, *search_race.TOOLS, *batch.TOOLS],
        model=model or demo_model(),
        instructions="You are a sales research assistant. Use the tools; be brief.",
        upstreams={"apollo": UpstreamLimit(concurrency=4, rate=10)},
        prompts=PROMPTS,
    )
