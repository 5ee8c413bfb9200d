"""The session lock recipe: waiting for a holder, taking over, lock-delay, a dead session.

Layer: unit (one SessionLock on the mocked Consul, no node).
"""

from __future__ import annotations

import gevent
import pytest

from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.lock import LockState, SessionLock
from voltha_gevent.testing.fake_consul import FakeConsul


@pytest.fixture
def live_fake():
    with FakeConsul() as fake:
        yield fake


@pytest.fixture
def api(live_fake):
    return ConsulAPI(live_fake.client())


def wait_until(predicate, timeout=5.0):
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(0.01)
    return predicate()


def test_lock_waits_for_the_holder_and_takes_over_on_release(api):
    first = api.create_session(name="a", ttl=10, behavior="release", lock_delay=0)
    second = api.create_session(name="b", ttl=10, behavior="release", lock_delay=0)
    assert api.acquire("L", "a", first)
    holders, acquired = [], []
    lock = SessionLock(api, api, "L", "b", second, lock_delay=0, wait=2, name="t",
                       on_holder=holders.append, on_acquired=acquired.append).start()
    try:
        assert wait_until(lambda: holders and holders[-1] is not None)
        assert lock.state is LockState.WAITING
        api.release("L", first)
        assert wait_until(lambda: lock.held)
        assert acquired[0].lock_index == 2
    finally:
        lock.stop(release=True)
    assert api.get("L")[1].session is None


def test_a_lock_on_a_dead_session_calls_on_session_invalid_and_stops(api):
    session_id = api.create_session(name="a", ttl=10, behavior="release", lock_delay=0)
    api.destroy_session(session_id)
    invalid = []
    lock = SessionLock(api, api, "L2", "a", session_id, lock_delay=0, wait=2, name="t",
                       on_session_invalid=invalid.append).start()
    try:
        assert wait_until(lambda: invalid)
        assert lock.state is LockState.STOPPED
    finally:
        lock.stop()
