"""The demo agent ``toolplex serve`` runs by default: every demo tool, one model.

The scripted model picks a script by keyword in the user's message: "search"
races three search sources, "batch" starts a background analysis, "approve"
asks a person, "export" waits for a partner's webhook; anything else enriches
a company. A job's completion ("Job update: ...") gets its own turn.
"""

from __future__ import annotations

from ..limits import UpstreamLimit
from ..model import Model
from ..runner import Agent
from ..scripted import ScriptedModel
from . import batch, enrichment, search_race


def demo_model() -> ScriptedModel:
    """The scripted model with every example's script."""
    return ScriptedModel(
        scripts={**batch.SCRIPTS, "search": search_race.SCRIPT, "enrich": enrichment.SCRIPT},
        default=enrichment.SCRIPT,
    )


def demo_agent(model: Model | None = None) -> Agent:
    """Every example tool, on ``model`` (default: :func:`demo_model`)."""
    return Agent(
        tools=[*enrichment.TOOLS, *search_race.TOOLS, *batch.TOOLS],
        model=model or demo_model(),
        instructions="You are a sales research assistant. Use the tools; be brief.",
        upstreams={"apollo": UpstreamLimit(concurrency=4, rate=10)},
    )
