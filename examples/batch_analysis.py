"""Long-running tools as jobs: a 30 s batch analysis run by a worker with progress, and
a partner export finished by a signed webhook from a second process.

The agent's code is in server/toolplex/examples/batch.py; the partner is
server/toolplex/examples/partner.py.

    python examples/batch_analysis.py            # 30 s
    python examples/batch_analysis.py --seconds 5
"""

from toolplex.examples.batch import main

if __name__ == "__main__":
    main()
