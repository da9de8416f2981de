"""The model idle timeout: no chunk within it ends the run ``run.error model_timeout``."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anyio
import httpx2
import pytest

from recorded import Endpoint, chunk
from toolplex import Agent, OpenAIModel
from toolplex.exceptions import ModelTimeout
from toolplex.model import TextChunk
from toolplex.testing import check_protocol, collect, of_type


class _Stalls(Endpoint):
    """Sends its frames, then holds the stream open without a byte more."""

    async def _serve(self, frames):  # type: ignore[no-untyped-def]
        async for part in super()._serve(frames):
            yield part
        await anyio.sleep_forever()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def test_an_endpoint_that_accepts_and_never_answers_ends_the_run_model_timeout(
        silent_port: int) -> None:
    model = OpenAIModel("m", base_url=f"http://127.0.0.1:{silent_port}/v1", api_key="k",
                        idle_timeout=0.2)
    events = await collect(Agent(model=model), "hello?")
    await model.aclose()
    check_protocol(events)
    assert events[-1]["type"] == "run.error"
    assert events[-1]["error"] == {"code": "model_timeout",
                                   "message": "no chunk from the model within 0.2 s"}


async def test_a_stream_that_stalls_mid_response_ends_the_run_model_timeout() -> None:
    endpoint = _Stalls([chunk({"role": "assistant", "content": "Thinking about"})], done=False)
    model = OpenAIModel("m", base_url="http://stall.test/v1", api_key="k",
                        http_client=httpx2.AsyncClient(transport=endpoint, timeout=None),
                        idle_timeout=0.05)
    events = await collect(Agent(model=model), "go")
    check_protocol(events)
    assert [e["delta"] for e in of_type(events, "text.delta")] == ["Thinking about"]
    assert events[-1]["error"]["code"] == "model_timeout"
    assert len(endpoint.requests) == 1, "a timeout is not retried: it would double the wait"


def test_the_idle_timeout_defaults_to_60_seconds_and_is_the_models_to_set() -> None:
    assert OpenAIModel("m", api_key="k").idle_timeout == 60.0
    assert OpenAIModel("m", api_key="k", idle_timeout=5).idle_timeout == 5
    assert isinstance(ModelTimeout(3), TimeoutError)


async def test_any_model_with_an_idle_timeout_gets_it_enforced_by_the_runner() -> None:
    class Hangs:
        idle_timeout = 0.05

        async def stream(self, messages: list[dict], tools: list[dict]):  # type: ignore[no-untyped-def]
            yield TextChunk("one chunk, ")
            await anyio.sleep_forever()
            yield TextChunk("never")

    events = await collect(Agent(model=Hangs()), "go")
    check_protocol(events)
    assert [e["delta"] for e in of_type(events, "text.delta")] == ["one chunk, "]
    assert events[-1]["error"]["code"] == "model_timeout"
