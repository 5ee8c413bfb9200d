"""The session lock recipe: waiting for a holder, taking over, lock-delay, a dead session.

Layer: unit (one SessionLock on the mocked Consul, no node).
"""

from __future__ import annotations

from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.lock import LockSession, LockState, SessionLock
from voltha_gevent.testing.nodes import wait_until
from voltha_gevent.watch import WatchFactory


def test_lock_waits_for_the_holder_and_takes_over_on_release(api):
    first = api.create_session(name="a", ttl=10, behavior="release", lock_delay=0)
    second = api.create_session(name="b", ttl=10, behavior="release", lock_delay=0)
    assert api.acquire("L", "a", first)
    holders, acquired = [], []
    lock = SessionLock(LockSession(api, WatchFactory(api, 2), second, 0), "L", "b", name="t",
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
    session = LockSession(api, WatchFactory(api, 2), session_id, 0, on_session_invalid=invalid.append)
    lock = SessionLock(session, "L2", "a", name="t").start()
    try:
        assert wait_until(lambda: invalid)
        assert lock.state is LockState.STOPPED
    finally:
        lock.stop()


# -- stepped on the fake's ManualClock (the ``fake`` fixture): ordering, not real durations --


def counting_acquires(api: ConsulAPI) -> list[bool]:
    """Record the answer of every acquire call the lock makes through ``api``."""
    answers: list[bool] = []
    real = api.acquire

    def acquire(key, value, session_id):
        answers.append(real(key, value, session_id))
        return answers[-1]

    api.acquire = acquire
    return answers


def test_lock_delay_refuses_a_free_key_until_the_clock_passes_it_then_the_waiter_takes_it(fake):
    api = ConsulAPI(fake.client())
    gone = api.create_session(name="a", ttl=10, behavior="release", lock_delay=15)
    assert api.acquire("L", "a", gone)
    api.destroy_session(gone)  # clock 0: lock-delay on L until 15
    mine = api.create_session(name="b", ttl=60, behavior="release", lock_delay=0)
    lock_api = ConsulAPI(fake.client())
    answers = counting_acquires(lock_api)
    acquired = []
    lock = SessionLock(LockSession(lock_api, WatchFactory(api, 2), mine, 0), "L", "b", name="t",
                       on_acquired=acquired.append).start()
    try:
        assert wait_until(lambda: len(answers) >= 2)  # retried: the key is free but refused
        fake.clock.advance(14.9)
        tries = len(answers)
        assert wait_until(lambda: len(answers) >= tries + 2)
        assert not any(answers) and lock.state is LockState.WAITING and not acquired
        fake.clock.advance(0.2)
        assert wait_until(lambda: lock.held)
        assert answers[-1] is True and answers.count(True) == 1
        assert [entry.lock_index for entry in acquired] == [2]
    finally:
        lock.stop(release=True)


def test_the_holders_ttl_expiring_on_the_clock_hands_the_lock_to_the_waiter(fake):
    api = ConsulAPI(fake.client())
    holder = api.create_session(name="a", ttl=10, behavior="release", lock_delay=0)  # expires at 20
    waiter = api.create_session(name="b", ttl=30, behavior="release", lock_delay=0)  # expires at 60
    assert api.acquire("L", "a", holder)
    holders = []
    lock = SessionLock(LockSession(api, WatchFactory(api, 2), waiter, 0), "L", "b", name="t",
                       on_holder=holders.append).start()
    try:
        assert wait_until(lambda: holders)
        assert holders[-1].session == holder and lock.state is LockState.WAITING
        fake.clock.advance(19.9)
        assert holder in fake.sessions() and lock.state is LockState.WAITING
        fake.clock.advance(0.2)
        assert holder not in fake.sessions()
        assert wait_until(lambda: lock.held)
        assert api.get("L")[1].session == waiter and api.get("L")[1].lock_index == 2
    finally:
        lock.stop(release=True)


def test_a_held_lock_whose_session_expires_on_the_clock_is_lost_before_the_session_is_reported_invalid(fake):
    api = ConsulAPI(fake.client())
    session_id = api.create_session(name="a", ttl=10, behavior="release", lock_delay=0)
    events = []
    session = LockSession(api, WatchFactory(api, 2), session_id, 0,
                          on_session_invalid=lambda why: events.append("session-invalid"))
    lock = SessionLock(session, "L", "a", name="t", on_acquired=lambda entry: events.append("acquired"),
                       on_lost=lambda: events.append("lost")).start()
    try:
        assert wait_until(lambda: lock.held)
        fake.clock.advance(19.9)
        assert lock.held and events == ["acquired"]
        fake.clock.advance(0.2)
        assert wait_until(lambda: lock.state is LockState.STOPPED)
        assert events == ["acquired", "lost", "session-invalid"]
        assert api.get("L")[1].session is None
    finally:
        lock.stop()
