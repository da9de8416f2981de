"""toolplex side by side with LangGraph, the OpenAI Agents SDK and PydanticAI: two tables.

Every framework runs W1..W7 in a process of its own, on the same scripts, twice:
(a) driven by an in-memory scripted model written against its own model interface
(toolplex's is its ``Model`` protocol); (b) through one OpenAI-compatible HTTP
endpoint (the scripted model on a real uvicorn), each with its own OpenAI client:
the path a real deployment takes. No key, no network beyond 127.0.0.1. Peers come from
the optional extra: ``pip install -e '.[bench]'``; one not installed is shown as
such. Cells are the median of --runs runs (after one warm-up) with min-max;
"cannot" is what a framework cannot do without code around it, with what it did
instead, measured once; a dagger marks a figure that needed wrapper code around
the framework (listed under the table, measured with it), a star one that used a
framework feature worth naming (also listed).

    python -m bench [--runs 5] [--quick] [--only toolplex langgraph] [--table memory]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from ._serve import scripted_endpoint
from .workloads import ENDPOINT_ENV, WORKLOADS, Sizes

PEERS = {"toolplex": "toolplex", "langgraph": "LangGraph",
         "openai_agents": "OpenAI Agents SDK", "pydantic_ai": "PydanticAI"}
RATIO_KEYS = {"w1", "w2", "w3", "w6"}


def _harness(peer: str, *args: str, url: str | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench._harness", peer, *args]
    env = {k: v for k, v in os.environ.items() if k != ENDPOINT_ENV}
    if url is not None:
        env[ENDPOINT_ENV] = url
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False,
                          env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        if "ModuleNotFoundError" in last:
            return {"error": "not installed (pip install -e '.[bench]')"}
        return {"error": last[:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _number(value: float, key: str) -> str:
    return f"{value:.2f}" if key in RATIO_KEYS else f"{value:,.0f}"


def cell(result: dict[str, Any], key: str, floor: bool = True) -> str:
    """One table cell: median (min-max), a cannot, or why it is missing."""
    if "error" in result:
        return result["error"]
    value = result.get(key)
    if value is None:
        return "-"
    if "cannot" in value:
        figure = value.get("figure")
        shown = f" ({_number(figure, key)})" if figure is not None else ""
        return f"cannot: {value['cannot']}{shown}"
    text = (f"{_number(value['median'], key)} "
            f"({_number(value['low'], key)}-{_number(value['high'], key)})")
    if floor and key.startswith("w4_") and (raw := result.get(f"{key}_raw")) and "median" in raw:
        text += f" = {value['median'] / raw['median']:.0f}x bare loop"
    if key == "w7":
        text = "yes, " + text
    note = result.get("notes", {}).get(key)
    if note:
        text += " \u2020 wrapper" if note.startswith("wrapper") else " *"
    return text


def rss_cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    return (f"{result['rss_peak_mib']:.0f} MiB (idle {result['rss_before_mib']:.0f}); "
            f"wall {result['wall_ratio']:.2f}x")


def table(sizes: Sizes, results: dict[str, dict[str, Any]],
          rss: dict[str, dict[str, Any]], floor: bool = True) -> str:
    """The markdown table and the notes under it; ``floor``: W4 as multiples of the bare
    loop (in memory; through the endpoint the model's HTTP is in every figure)."""
    names = [PEERS[p] for p in results]
    lines = ["| workload | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    labels = sizes.labels()
    for key in WORKLOADS:
        cells = " | ".join(cell(results[p], key, floor) for p in results)
        lines.append(f"| {labels[key]} | {cells} |")
    if rss:
        lines.append(f"| peak RSS, W1 x {sizes.rss_runs} concurrent runs (wall / 200 ms) | "
                     + " | ".join(rss_cell(rss[p]) if p in rss else "-" for p in results)
                     + " |")
    versions = [results[p].get("versions", "-") for p in results]
    lines.append("| versions | " + " | ".join(versions) + " |")
    raw = next((r.get("w4_steps_raw") for r in results.values() if "w4_steps_raw" in r), None)
    if floor and raw and "median" in raw:
        fan = next(r["w4_fanout_raw"] for r in results.values() if "w4_fanout_raw" in r)
        lines.append("")
        lines.append(f"Bare loop (W4 baseline, same process as each framework, shown from the "
                     f"first): plain asyncio over the same script, no framework, no model "
                     f"client: {raw['median']:.1f} us/call over steps, {fan['median']:.1f} "
                     f"us/call fanned out.")
    notes = [(PEERS[p], k, n) for p in results for k, n in results[p].get("notes", {}).items()]
    if notes:
        lines.append("")
        dagger = "\u2020"
        lines.extend(f"- {dagger if n.startswith('wrapper') else '*'} {name}, "
                     f"{labels[k].split(':')[0]}: {n}" for name, k, n in notes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every framework in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="3 runs, 100 W4 steps, 200 concurrent runs for RSS")
    parser.add_argument("--only", nargs="*", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--no-rss", action="store_true", help="skip the memory test")
    parser.add_argument("--table", choices=["memory", "http", "both"], default="both",
                        help="(a) in-memory models, (b) the OpenAI-compatible endpoint, or both")
    parser.add_argument("--tiny", action="store_true", help="the smoke test's sizes, 1 run")
    options = parser.parse_args(argv)
    sizes = Sizes.tiny() if options.tiny else Sizes.quick() if options.quick else Sizes()
    runs = 1 if options.tiny else min(options.runs, 3) if options.quick else options.runs
    extra = ["--tiny"] if options.tiny else ["--quick"] if options.quick else []
    print(f"Median of {runs} runs (min-max) after one warm-up; one process per framework; "
          f"python {sys.version.split()[0]}.")
    tables = ["memory", "http"] if options.table == "both" else [options.table]
    for kind in tables:
        results: dict[str, dict[str, Any]] = {}
        rss: dict[str, dict[str, Any]] = {}
        with scripted_endpoint() if kind == "http" else contextlib.nullcontext() as url:
            for peer in options.only:
                start = time.perf_counter()
                print(f"... {PEERS[peer]} ({kind})", file=sys.stderr, flush=True)
                results[peer] = _harness(peer, "--runs", str(runs), *extra, url=url)
                # Memory is measured in memory only: through the endpoint it would be the
                # client's connection pool as much as the framework.
                if kind == "memory" and not options.no_rss and "error" not in results[peer]:
                    rss[peer] = _harness(peer, "--rss", str(sizes.rss_runs), *extra)
                print(f"    {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        title = ("(a) in-memory scripted models, each framework's own model interface"
                 if kind == "memory" else
                 "(b) one OpenAI-compatible HTTP endpoint (the scripted model on uvicorn), "
                 "each framework's own OpenAI client, streamed")
        print(f"\n### {title}\n")
        print(table(sizes, results, rss, floor=kind == "memory"))


if __name__ == "__main__":
    main()
