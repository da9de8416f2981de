"""Three streaming search sources race; the first decisive hit cancels the others.

The agent's code is in server/toolplex/demo/search_race.py.

    python examples/search_race.py "vector databases"
"""

from toolplex.demo.search_race import main

if __name__ == "__main__":
    main()
