"""The workloads W1..W7 of the side-by-side benchmark, shared by every framework.

Each framework module in :mod:`bench.peers` exposes the same async functions
``w1 .. w7`` (plus ``w4_steps``/``w4_fanout`` for the two halves of W4) taking a
:class:`Sizes`; each returns its figure as a float or raises :class:`Cannot`.
The scripts below say what the scripted model emits at each step; every
framework's own scripted model replays them through that framework's model
interface, so no key and no network are involved.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


class Cannot(Exception):
    """The framework cannot do what the workload asks, without code around it.

    ``figure`` is what was measured anyway (the framework's behaviour without the
    feature), shown next to the reason.
    """

    def __init__(self, why: str, figure: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.figure = figure


@dataclass(frozen=True)
class ScriptCall:
    """A tool call the scripted model emits: tool name, arguments, a wait before it."""

    name: str
    args: dict[str, str] = field(default_factory=dict)
    after: float = 0.0
    """Seconds the model stream waits before this call's arguments (W3)."""


Script = Sequence[Sequence[ScriptCall]]
"""One list of calls per model step; after the last step the model answers with text."""

FINAL_TEXT = "done"


@dataclass(frozen=True)
class Sizes:
    """Latencies and counts of the workloads; ``tiny()`` for the smoke test."""

    w1_tools: int = 10
    w1_latency: float = 0.2
    w2_lookups: tuple[float, float, float] = (0.4, 0.2, 0.1)
    w2_dependent: float = 0.1
    w2_writes: tuple[float, float] = (0.1, 0.1)
    w3_latencies: tuple[float, float, float] = (0.6, 0.3, 0.1)
    w3_gap: float = 0.1
    w4_steps: int = 500
    w4_fanout: int = 50
    w5_decisive: float = 0.05
    w5_sibling: float = 5.0
    w6_chunks: int = 5
    w6_gap: float = 0.1
    w7_failures: int = 2
    w7_backoff: float = 0.01
    """The 1 s first backoff of the default schedule, scaled 100x down."""
    rss_runs: int = 1000

    @classmethod
    def tiny(cls) -> Sizes:
        """Every workload in a few milliseconds, for the smoke test."""
        return replace(cls(), w1_tools=3, w1_latency=0.01, w2_lookups=(0.02, 0.01, 0.005),
                       w2_dependent=0.005, w2_writes=(0.005, 0.005),
                       w3_latencies=(0.03, 0.015, 0.005), w3_gap=0.005, w4_steps=5,
                       w4_fanout=5, w5_decisive=0.005, w5_sibling=0.5, w6_chunks=3,
                       w6_gap=0.01, w7_backoff=0.001, rss_runs=5)

    @classmethod
    def quick(cls) -> Sizes:
        """The same latencies with fewer steps and concurrent runs (``--quick``)."""
        return replace(cls(), w4_steps=100, rss_runs=200)

    def labels(self) -> dict[str, str]:
        """Workload key -> the row label of the table."""
        return {
            "w1": f"W1 fan-out {self.w1_tools} x {self.w1_latency * 1000:.0f} ms: wall / "
                  f"{self.w1_latency * 1000:.0f} ms",
            "w2": "W2 enrichment 3 lookups -> 1 dependent -> 2 writes: wall / critical path",
            "w3": f"W3 early dispatch, args {self.w3_gap * 1000:.0f} ms apart: span / "
                  f"{self.w3_ideal():.1f} s",
            "w4_steps": f"W4 {self.w4_steps} steps x 1 zero-latency call: us/call",
            "w4_fanout": f"W4 1 step x {self.w4_fanout} zero-latency calls: us/call",
            "w5": f"W5 short-circuit, decisive {self.w5_decisive * 1000:.0f} ms vs 2 x "
                  f"{self.w5_sibling:.0f} s: wall ms",
            "w6": f"W6 streaming tool, {self.w6_chunks} chunks {self.w6_gap * 1000:.0f} ms apart: "
                  f"first chunk / {self.w6_gap * 1000:.0f} ms",
            "w7": f"W7 {self.w7_failures} x 503 then ok, backoff 100x down: retried right? "
                  "wall ms",
        }

    def w1_script(self) -> Script:
        return [[ScriptCall("sleep", {"key": str(i)}) for i in range(self.w1_tools)]]

    def w2_script(self) -> Script:
        return [
            [ScriptCall(f"lookup_{i}", {"key": "acme.com"}) for i in range(3)],
            [ScriptCall("score", {"key": "acme.com"})],
            [ScriptCall(f"write_{i}", {"key": "acme.com"}) for i in range(2)],
        ]

    def w2_latencies(self) -> dict[str, float]:
        names = {f"lookup_{i}": s for i, s in enumerate(self.w2_lookups)}
        names["score"] = self.w2_dependent
        names.update({f"write_{i}": s for i, s in enumerate(self.w2_writes)})
        return names

    def w2_critical(self) -> float:
        return max(self.w2_lookups) + self.w2_dependent + max(self.w2_writes)

    def w3_script(self) -> Script:
        return [[ScriptCall(f"sleep_{i}", {"key": str(i)}, after=self.w3_gap)
                 for i in range(len(self.w3_latencies))]]

    def w3_tools(self) -> dict[str, float]:
        return {f"sleep_{i}": s for i, s in enumerate(self.w3_latencies)}

    def w3_ideal(self) -> float:
        """Each call starts when its arguments are complete: the slowest ends at gap + 0.6 s."""
        return max((i + 1) * self.w3_gap + s for i, s in enumerate(self.w3_latencies))

    def w4_steps_script(self) -> Script:
        return [[ScriptCall("noop", {"key": str(i)})] for i in range(self.w4_steps)]

    def w4_fanout_script(self) -> Script:
        return [[ScriptCall("noop", {"key": str(i)}) for i in range(self.w4_fanout)]]

    def w5_script(self) -> Script:
        return [[ScriptCall("decisive", {"key": "q"}), ScriptCall("slow_0", {"key": "q"}),
                 ScriptCall("slow_1", {"key": "q"})]]

    def w6_script(self) -> Script:
        return [[ScriptCall("stream", {"key": "q"})]]

    def w7_script(self) -> Script:
        return [[ScriptCall("flaky", {"key": "q"})]]


ENDPOINT_ENV = "BENCH_ENDPOINT"
"""When set (an OpenAI-compatible base URL), every framework reaches the scripted model
there through its own OpenAI client instead of an in-memory model (``python -m bench
--http``)."""


def endpoint() -> str | None:
    """The OpenAI-compatible base URL the frameworks talk to, or None: in-memory models."""
    return os.environ.get(ENDPOINT_ENV) or None


def script_key(script: Script) -> str:
    """A name for ``script`` that the endpoint's scripted model picks it by."""
    shape = [[[c.name, dict(c.args), c.after] for c in step] for step in script]
    digest = hashlib.sha1(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
    return f"[script {digest}]"


def prompt(script: Script) -> str:
    """The user message of a run: ``go`` in memory; through the endpoint, the script's key."""
    return script_key(script) if endpoint() else "go"


def scripts(sizes: Sizes) -> list[Script]:
    """Every script the workloads replay at ``sizes`` (the endpoint serves them all)."""
    return [sizes.w1_script(), sizes.w2_script(), sizes.w3_script(), sizes.w4_steps_script(),
            sizes.w4_fanout_script(), sizes.w5_script(), sizes.w6_script(), sizes.w7_script()]


def step_of(script: Script, model_turns: int) -> Sequence[ScriptCall]:
    """The calls of step ``model_turns`` (0-based); empty once the script is done."""
    return script[model_turns] if model_turns < len(script) else ()


Body = Callable[[str], Awaitable[str]]
"""A tool's body as every framework wraps it: ``async def name(key: str) -> str``."""


async def seconds_to_first(events: AsyncIterable[Any], is_chunk: Callable[[Any], bool],
                           start: float) -> float:
    """W6: seconds from ``start`` (a ``perf_counter`` reading) to the first event that is a
    tool's chunk, as the caller iterates; the stream is drained to its end.

    Raises:
        AssertionError: No chunk reached the caller.
    """
    first = None
    async for event in events:
        if first is None and is_chunk(event):
            first = time.perf_counter() - start
    assert first is not None, "no chunk reached the caller"
    return first


class Recorder:
    """Makes tool bodies that sleep their latency and note when the last one ended."""

    def __init__(self) -> None:
        self.last_end = 0.0

    def body(self, name: str, seconds: float) -> Body:
        async def body(key: str) -> str:
            if seconds:
                await asyncio.sleep(seconds)
            self.last_end = time.perf_counter()
            return key

        body.__name__ = body.__qualname__ = name
        body.__doc__ = f"The {name} tool: {seconds * 1000:.0f} ms."
        return body

    def bodies(self, latencies: dict[str, float]) -> dict[str, Body]:
        return {name: self.body(name, s) for name, s in latencies.items()}


class Upstream503(Exception):
    """What the flaky upstream raises: a transient 503."""

    status = 503


class Flaky:
    """A tool body failing ``failures`` times with 503, then answering; records attempts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[float] = []

    def attempt(self, now: float) -> str:
        self.attempts.append(now)
        if len(self.attempts) <= self.failures:
            raise Upstream503("503 Service Unavailable")
        return "ok"

    def check(self, backoff: float) -> None:
        """Raise :class:`Cannot` unless it was retried exactly as often as it failed, with
        each wait at least the exponential backoff (``backoff``, ``2 * backoff``, ...)."""
        if len(self.attempts) != self.failures + 1:
            raise Cannot(f"{len(self.attempts)} attempts, expected {self.failures + 1}")
        gaps = [b - a for a, b in zip(self.attempts, self.attempts[1:], strict=False)]
        for n, gap in enumerate(gaps):
            if gap < backoff * 2**n * 0.9:
                raise Cannot(f"retry {n + 1} after {gap * 1000:.1f} ms, no backoff")


@dataclass(frozen=True)
class Figure:
    """Median and range of several runs of one workload."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Figure:
        return cls(statistics.median(values), min(values), max(values), len(values))


WORKLOADS = tuple(Sizes().labels())
"""The workload keys, in table order."""


def retrying(body: Body, attempts: int, backoff: float) -> Body:
    """The wrapper a framework without tool retries needs: retry 503s with backoff
    ``backoff``, ``2 * backoff``, ... (what toolplex and LangGraph declare instead)."""

    @functools.wraps(body)
    async def wrapped(key: str) -> str:
        for attempt in range(attempts):
            try:
                return await body(key)
            except Upstream503:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")

    return wrapped


def flaky_body(flaky: Flaky) -> Body:
    async def flaky_tool(key: str) -> str:
        """Fail with 503 a few times, then answer."""
        return flaky.attempt(time.perf_counter())

    return flaky_tool


def w7_with_wrapper(prepare: Callable[..., Callable[[], Awaitable[None]]],
                    s: Sizes) -> Callable[[], Awaitable[float]]:
    """W7 for a framework without tool retries: :func:`retrying` around the tool."""
    flaky = Flaky(s.w7_failures)
    body = retrying(flaky_body(flaky), s.w7_failures + 1, s.w7_backoff)
    run = prepare(s.w7_script(), {"flaky": body}, 3)

    async def measure() -> float:
        flaky.attempts.clear()
        start = time.perf_counter()
        await run()
        wall = (time.perf_counter() - start) * 1000
        flaky.check(s.w7_backoff)
        return wall

    return measure


def w5_cannot(prepare: Callable[..., Callable[[], Awaitable[None]]], s: Sizes,
              why: str) -> Callable[[], Awaitable[float]]:
    """W5 for a framework that cannot short-circuit: the wall it takes instead, as Cannot."""
    latencies = {"decisive": s.w5_decisive, "slow_0": s.w5_sibling, "slow_1": s.w5_sibling}
    run = prepare(s.w5_script(), Recorder().bodies(latencies), 3)

    async def measure() -> float:
        start = time.perf_counter()
        await run()
        raise Cannot(why, (time.perf_counter() - start) * 1000)

    return measure
