"""The demo agent: what ``toolplex serve`` and ``toolplex demo`` run on the scripted model.

Not a layer of the runtime: only the CLI and the server's default import it, and it
imports the runtime like any application would. The repository's ``examples/`` are
scripts over these modules.

- :mod:`.agent`: :func:`demo_agent`, every example tool on one scripted model.
- :mod:`.enrichment`: B2B sales research: three lookups in parallel, a dependent
  verification, then two writes in parallel.
- :mod:`.search_race`: three streaming search sources; the first decisive hit
  cancels the others.
- :mod:`.batch`: long-running tools as jobs (worker, webhook, person).
- :mod:`.partner`: the simulated partner process that calls the webhook back.
"""

from __future__ import annotations

from .agent import demo_agent, demo_model

__all__ = ["demo_agent", "demo_model"]
