from __future__ import annotations

import pytest

from toolplex import Clock


@pytest.fixture
def fast() -> Clock:
    """A clock 1000x faster: 10 s timeouts take 10 ms, the 1/2/4 s backoff 1/2/4 ms."""
    return Clock(scale=0.001)
