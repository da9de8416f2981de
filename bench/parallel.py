"""Parallel calls: latency is the slowest call, not the sum, and calls start early.

Both workloads run toolplex on its ScriptedModel through the real ``openai`` SDK:

- W1: one step of 10 calls of 200 ms; run wall / 200 ms (ideal 1.0; in sequence 10).
  The wall is the whole run, from ``Agent.run`` to its last event; nothing is
  subtracted. The two model requests (the step with the calls, then the answer) are
  in it: about 2.5 ms before the first call starts and 1 ms after the last result,
  most of the 4-6 ms over 200 ms; the rest is the timers' lateness and bookkeeping.
- W3: one step whose three calls' arguments stream 100 ms apart (tools of 600, 300
  and 100 ms), each call starting the moment its arguments are complete. The ideal,
  0.7 s, counts from when the model begins writing the first call: its arguments
  take 100 ms, then it runs 600 ms. The span runs from the run's start (1-2 ms
  before the model's first chunk, so if anything pessimistic) to the last result.
  From the first ``tool.exec.started`` the ideal would be 0.6 s, not 0.7 s.
  For contrast, the same step with the tools declared ``side_effects=True``, which
  wait for the response's end (what frameworks that run tools after the whole
  response do): 0.3 s + 0.6 s, 1.29.

    python -m bench.parallel [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio

from ._harness import peer, w1, w3
from .workloads import Figure, Sizes


class _SideEffects:
    """The toolplex peer with every tool declared side-effecting."""

    def __init__(self) -> None:
        self.base = peer("toolplex")

    def prepare(self, *args: object) -> object:
        return self.base.prepare(*args, side_effects=True)


async def run(sizes: Sizes, runs: int = 5) -> dict[str, Figure]:
    """W1, W3 and W3 with side effects: each a median of ``runs`` after one warm-up."""
    toolplex = peer("toolplex")
    out: dict[str, Figure] = {}
    for key, measure in (("w1", w1(toolplex, sizes)), ("w3", w3(toolplex, sizes)),
                         ("w3_side_effects", w3(_SideEffects(), sizes))):  # type: ignore[arg-type]
        await measure()
        out[key] = Figure.of([await measure() for _ in range(runs)])
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args(argv)
    s = Sizes()
    r = asyncio.run(run(s, options.runs))
    print(f"median of {options.runs} runs (min-max), ScriptedModel through the openai SDK")
    rows = (("w1", f"W1 {s.w1_tools} calls x {s.w1_latency * 1000:.0f} ms: wall / "
                   f"{s.w1_latency * 1000:.0f} ms", s.w1_latency, "goal <= 1.05"),
            ("w3", f"W3 args {s.w3_gap * 1000:.0f} ms apart: span / {s.w3_ideal():.1f} s",
             s.w3_ideal(), "goal <= 1.05"),
            ("w3_side_effects", "W3, tools side_effects=True (run at response end)",
             s.w3_ideal(), "for contrast"))
    for key, label, ideal, goal in rows:
        f = r[key]
        print(f"  {label:52} {f.median:5.2f} ({f.low:.2f}-{f.high:.2f}) "
              f"{f.median * ideal * 1000:4.0f} ms  {goal}")


if __name__ == "__main__":
    main()
