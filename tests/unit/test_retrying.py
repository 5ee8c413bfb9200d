"""The retry helper: backoff then success, stopping on request, giving up at the deadline.

Layer: unit (calls on the mocked Consul, no node).
"""

from __future__ import annotations

import pytest

from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.errors import ConsulUnavailable, Stopped
from voltha_gevent.retrying import Retrying
from voltha_gevent.testing.fake_consul import FakeConsul


@pytest.fixture
def live_fake():
    with FakeConsul() as fake:
        yield fake


@pytest.fixture
def api(live_fake):
    return ConsulAPI(live_fake.client())


def test_retrying_backs_off_then_succeeds_and_stops_on_request(live_fake, api):
    live_fake.fail_next(3)
    retry = Retrying(schedule=(0.01,))
    assert retry.call(lambda: api.put("k", "v"), what="put") is True
    assert retry.stats.retries == 3
    retry.stop.set()
    with pytest.raises(Stopped):
        retry.call(lambda: api.put("k", "v"), what="put")


def test_retrying_gives_up_at_the_deadline(live_fake, api):
    import time

    live_fake.set_down(True)
    retry = Retrying(schedule=(0.05,))
    with pytest.raises(ConsulUnavailable):
        retry.call(lambda: api.get("k"), what="get", deadline=time.monotonic() + 0.2)
