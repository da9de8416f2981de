"""The B2B enrichment agent (three parallel lookups, a dependent check, two writes),
all from one model response (dependent calls: `{"$from": ..., "path": ...}`).

The agent's code is in server/toolplex/demo/enrichment.py so that
`toolplex serve` can host it after a plain `pip install`.

    python examples/enrichment.py acme.com
"""

from toolplex.demo.enrichment import main

if __name__ == "__main__":
    main()
