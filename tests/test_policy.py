from __future__ import annotations

import httpx2
import openai
import pytest

from toolplex import Backoff, CircuitBreaker, Clock, ToolError
from toolplex.breaker import BreakerState
from toolplex.policy import classify, parse_retry_after


def _openai_status(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return openai.APIStatusError("upstream said no", response=response, body=None)


class TestClassify:
    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_transient(self, status: int) -> None:
        assert classify(ToolError("down", status=status)).transient

    def test_429_is_transient_and_keeps_retry_after(self) -> None:
        failure = classify(ToolError("slow down", status=429, retry_after=7))
        assert failure.transient
        assert failure.reason == "rate_limited"
        assert failure.retry_after == 7

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
    def test_other_4xx_is_permanent_upstream(self, status: int) -> None:
        failure = classify(ToolError("no", status=status))
        assert not failure.transient
        assert failure.to_error() == {"code": "upstream", "message": "no", "status": status}

    def test_timeouts_and_connection_errors_are_transient(self) -> None:
        assert classify(TimeoutError()).reason == "timeout"
        assert classify(ConnectionResetError("reset")).transient

    def test_httpx2_transport_error_is_transient(self) -> None:
        assert classify(httpx2.ConnectError("refused")).transient

    def test_openai_status_errors_follow_their_status(self) -> None:
        assert classify(_openai_status(503)).transient
        assert not classify(_openai_status(400)).transient
        limited = classify(_openai_status(429, {"retry-after": "3"}))
        assert limited.reason == "rate_limited"
        assert limited.retry_after == 3

    def test_openai_connection_error_is_transient(self) -> None:
        request = httpx2.Request("POST", "http://x")
        assert classify(openai.APIConnectionError(request=request)).transient

    def test_a_bug_is_permanent_internal(self) -> None:
        failure = classify(KeyError("email"))
        assert not failure.transient
        assert failure.code == "internal"
        assert "KeyError" in failure.message


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_backoff_is_1_2_4_seconds_unless_retry_after() -> None:
    backoff = Backoff()
    plain = classify(ToolError("x", status=503))
    assert [backoff.delay(n, plain) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff.delay(1, classify(ToolError("x", status=429, retry_after=9))) == 9


class TestCircuitBreaker:
    def test_opens_after_threshold_consecutive_failures_once(self) -> None:
        breaker = CircuitBreaker(3)
        assert [breaker.record_failure() for _ in range(4)] == [False, False, True, False]
        assert breaker.state is BreakerState.OPEN
        assert not breaker.allows_calls

    def test_success_resets_the_count(self) -> None:
        breaker = CircuitBreaker(3)
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
        assert not breaker.record_failure()
        assert breaker.allows_calls

    def test_cooldown_half_opens(self) -> None:
        breaker = CircuitBreaker(1, cooldown=0.0, clock=Clock())
        breaker.record_failure()
        assert breaker.state is BreakerState.HALF_OPEN
        assert breaker.allows_calls

    def test_zero_threshold_never_opens(self) -> None:
        breaker = CircuitBreaker(0)
        assert not any(breaker.record_failure() for _ in range(10))
