"""The ``toolplex`` command."""

from __future__ import annotations

import argparse
import sys

_EXAMPLES = ("enrichment", "search_race")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``toolplex`` console script."""
    parser = argparse.ArgumentParser(
        prog="toolplex", description="A streaming-first agent server.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run an example agent on the scripted model and print its events",
        description="Run an example agent in the terminal (no key, no network).")
    demo.add_argument("example", choices=_EXAMPLES, nargs="?", default="enrichment")
    demo.add_argument("args", nargs="*", help="the example's input (a domain, a query)")
    options = parser.parse_args(argv)
    if options.command == "demo":
        if options.example == "enrichment":
            from .examples.enrichment import main as run
        else:
            from .examples.search_race import main as run
        run(options.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
