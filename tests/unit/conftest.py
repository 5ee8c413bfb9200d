"""Fixtures of the unit tests: the mocked Consul on the real clock, and a client of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.testing.fake_consul import FakeConsul


@pytest.fixture
def live_fake() -> Iterator[FakeConsul]:
    """A FakeConsul whose clock runs (sessions and lock-delay expire in real time)."""
    with FakeConsul() as fake:
        yield fake


@pytest.fixture
def api(live_fake: FakeConsul) -> ConsulAPI:
    return ConsulAPI(live_fake.client())
