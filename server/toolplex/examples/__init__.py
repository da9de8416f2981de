"""Runnable example agents on the scripted model; ``toolplex serve`` hosts them all.

- :mod:`.enrichment`: B2B sales research: three lookups in parallel, a dependent
  verification, then two writes in parallel.
- :mod:`.search_race`: three streaming search sources; the first decisive hit
  cancels the others.
"""

from __future__ import annotations
