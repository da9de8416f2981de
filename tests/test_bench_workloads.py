"""The side-by-side benchmark (``python -m bench``) at tiny sizes, toolplex only, so it
cannot rot: every workload runs once and gives a figure of the right shape.

Timings are not asserted here (bench/README.md holds them); the shape is.
"""

from __future__ import annotations

import math

import pytest
from bench import _harness
from bench.__main__ import table
from bench.workloads import WORKLOADS, Cannot, Figure, Flaky, Sizes


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    import asyncio

    return asyncio.run(_harness.measure("toolplex", Sizes.tiny(), runs=1))


def test_every_workload_gives_toolplex_a_figure(figures: dict[str, object]) -> None:
    for key in (*WORKLOADS, "w4_steps_raw", "w4_fanout_raw"):
        figure = figures[key]
        assert isinstance(figure, Figure), f"{key}: toolplex can do it, got {figure!r}"
        assert figure.runs == 1 and figure.low <= figure.median <= figure.high
        assert math.isfinite(figure.median) and figure.median > 0, key


def test_ratios_are_relative_to_the_ideal(figures: dict[str, object]) -> None:
    for key in ("w1", "w2", "w3", "w6"):
        figure = figures[key]
        assert isinstance(figure, Figure)
        assert figure.median >= 0.9, f"{key}: a run cannot beat its critical path"


def test_the_report_names_versions_and_no_wrapper(figures: dict[str, object]) -> None:
    assert figures["framework"] == "toolplex"
    assert str(figures["versions"]).startswith("toolplex ")
    assert figures["notes"] == {}, "toolplex needs no code around it for any workload"


def test_table_has_a_row_per_workload_and_shows_cannot() -> None:
    sizes = Sizes.tiny()
    figure = {"median": 1.0, "low": 1.0, "high": 1.1, "runs": 5}
    ours = {"framework": "toolplex", "versions": "toolplex 0", "notes": {},
            **dict.fromkeys(WORKLOADS, figure)}
    theirs = {**ours, "versions": "langgraph 0", "notes": {"w7": "wrapper: a retry loop"},
              "w5": {"cannot": "no short-circuit", "figure": 5000.0}}
    rss = {"toolplex": {"rss_before_mib": 50.0, "rss_peak_mib": 80.0, "wall_ratio": 1.2}}
    text = table(sizes, {"toolplex": ours, "langgraph": theirs}, rss)
    rows = [line for line in text.splitlines() if line.startswith("| W")]
    assert len(rows) == len(WORKLOADS), text
    assert "cannot: no short-circuit (5,000)" in text
    assert "\u2020 wrapper" in text and "a retry loop" in text, "wrapper code must be disclosed"
    assert "80 MiB" in text


def test_flaky_check_rejects_retries_without_backoff() -> None:
    flaky = Flaky(2)
    for now in (0.0, 0.0001, 0.0002):
        try:
            flaky.attempt(now)
        except Exception:
            pass
    with pytest.raises(Cannot, match="no backoff"):
        flaky.check(0.01)


def test_every_workload_runs_through_the_openai_endpoint_on_uvicorn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Table (b): toolplex's OpenAIModel against the scripted model served by uvicorn."""
    import asyncio

    from bench._serve import scripted_endpoint
    from bench.workloads import ENDPOINT_ENV

    with scripted_endpoint() as url:
        monkeypatch.setenv(ENDPOINT_ENV, url)
        through = asyncio.run(_harness.measure("toolplex", Sizes.tiny(), runs=1))
    for key in WORKLOADS:
        assert isinstance(through[key], Figure), f"{key}: {through[key]!r}"
    assert through["w3"].median >= 0.9  # type: ignore[union-attr]
