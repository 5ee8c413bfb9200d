"""The retry helper: backoff then success, stopping on request, giving up at the deadline.

Layer: unit (calls on the mocked Consul, no node).
"""

from __future__ import annotations

import pytest

from voltha_gevent.errors import ConsulUnavailable, Stopped
from voltha_gevent.retrying import Backoff, Retrying


def test_retrying_backs_off_then_succeeds_and_stops_on_request(live_fake, api):
    live_fake.fail_next(3)
    retry = Retrying(backoff=Backoff(schedule=(0.01,)))
    assert retry.call(lambda: api.put("k", "v"), what="put") is True
    assert retry.stats.retries == 3
    retry.stop.set()
    with pytest.raises(Stopped):
        retry.call(lambda: api.put("k", "v"), what="put")


def test_retrying_gives_up_at_the_deadline(live_fake, api):
    import time

    live_fake.set_down(True)
    retry = Retrying(backoff=Backoff(schedule=(0.05,)))
    with pytest.raises(ConsulUnavailable):
        retry.call(lambda: api.get("k"), what="get", deadline=time.monotonic() + 0.2)


def test_backoff_counts_failures_from_one_and_repeats_its_last_step():
    from voltha_gevent.item_task import LONG_WAIT, REFUSED_BACKOFF
    from voltha_gevent.retrying import BACKOFF, BACKOFF_SCHEDULE, backoff_step

    assert [BACKOFF.step(n) for n in range(1, 10)] == [*BACKOFF_SCHEDULE, 5.0, 5.0]
    assert BACKOFF.step(0) == 0.05 and backoff_step(3) == 0.2 and backoff_step(1, slowest=True) == 5.0
    # a refused owner lock: 0.05 s doubling up to 0.5 s, then the slow step after LONG_WAIT
    assert [REFUSED_BACKOFF.step(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert REFUSED_BACKOFF.step(3, slowest=LONG_WAIT >= LONG_WAIT) == 2.0
    jittered = Backoff(schedule=(1.0,), jitter=0.1)
    assert all(1.0 <= jittered.step(n) <= 1.1 for n in range(1, 20))
