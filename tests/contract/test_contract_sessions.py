"""Contract: sessions, locks, lock-delay and blocking queries, on the fake and on Consul 1.8.7.

Timings that differ by design (a session TTL expires after 2 x TTL of *real* time on Consul, of
the ManualClock on the fake) are pinned in ``tests/unit/test_fake_consul.py`` on the fake
only; here the only real-time waits are blocking queries of 1-2 s, and one ``slow`` test of a
2 s service check on the real agent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from voltha_gevent.consul_api import ConsulException, NotFound
from voltha_gevent.testing.beside import later, timed

#: Slack for timing assertions on a busy test machine.
SLACK = 0.75



# --------------------------------------------------------------------------- sessions


def test_session_shape_and_listing(contract_client: Any) -> None:
    c = contract_client
    sid = c.session.create(name="shape", ttl=10, lock_delay=0)
    index, info = c.session.info(sid)
    assert isinstance(index, str)
    assert info["ID"] == sid and info["Name"] == "shape" and info["TTL"] == "10s"
    assert info["LockDelay"] == 0 and info["Behavior"] == "release"
    assert info["NodeChecks"] == ["serfHealth"] and "Checks" not in info
    assert sid in {s["ID"] for s in c.session.list()[1]}
    assert c.session.renew(sid)["ID"] == sid
    no_checks = c.session.create(checks=[], ttl=10, behavior="delete")
    info = c.session.info(no_checks)[1]
    assert info["NodeChecks"] == [] and info["LockDelay"] == 15 * 10**9 and info["Behavior"] == "delete"
    for s in (sid, no_checks):
        c.session.destroy(s)


def test_destroyed_session_renew_destroy_info(contract_client: Any) -> None:
    c = contract_client
    sid = c.session.create(ttl=10)
    assert c.session.destroy(sid) is True
    assert c.session.destroy(sid) is True  # idempotent
    with pytest.raises(NotFound, match=f"^Session id '{sid}' not found$"):
        c.session.renew(sid)
    index, info = c.session.info(sid)
    assert info is None and int(index) >= 1


def test_ttl_below_10s_is_refused_by_the_client(contract_client: Any) -> None:
    # python-consul2 asserts 10 <= ttl <= 86400 before sending; the server would answer 500
    # "Invalid Session TTL ..." (seen with a raw PUT), which the fake also raises when
    # Python runs with -O.
    with pytest.raises(AssertionError):
        contract_client.session.create(ttl=5)


def test_session_needs_registered_passing_checks(contract_client: Any) -> None:
    c = contract_client
    with pytest.raises(ConsulException, match="^500 Missing check 'service:no-such' registration$"):
        c.session.create(checks=["service:no-such"], ttl=10)
    sid = "contract-critical"
    assert c.agent.service.register("contract", service_id=sid, check={"TTL": "30s"}) is True
    try:
        with pytest.raises(ConsulException, match=f"^500 Check 'service:{sid}' is in critical state$"):
            c.session.create(checks=["serfHealth", f"service:{sid}"], ttl=10)
        assert c.agent.check.ttl_pass(f"service:{sid}") is True
        session = c.session.create(checks=["serfHealth", f"service:{sid}"], ttl=10)
        assert c.session.info(session)[1]["Checks"] == ["serfHealth", f"service:{sid}"]
        assert c.agent.service.deregister(sid) is True  # removing the check kills the session
        assert c.session.info(session)[1] is None
    finally:
        c.agent.service.deregister(sid)
    with pytest.raises(ConsulException, match='^500 CheckID "service:no-such" does not have associated TTL$'):
        c.agent.check.ttl_pass("service:no-such")


# --------------------------------------------------------------------------- locks


def test_acquire_release_and_lock_index(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    key = kv_prefix + "lock"
    s1 = c.session.create(ttl=10, lock_delay=0)
    s2 = c.session.create(ttl=10, lock_delay=0)
    assert c.kv.put(key, "one", acquire=s1) is True
    entry = c.kv.get(key)[1]
    assert entry["Session"] == s1 and entry["LockIndex"] == 1
    assert c.kv.put(key, "again", acquire=s1) is True  # re-acquire by the holder: same epoch
    assert c.kv.get(key)[1]["LockIndex"] == 1
    assert c.kv.put(key, "two", acquire=s2) is False
    assert c.kv.put(key, None, release=s2) is False  # not the holder
    assert c.kv.put(key, None, release=s1) is True
    entry = c.kv.get(key)[1]
    assert "Session" not in entry and entry["LockIndex"] == 1
    assert entry["Value"] is None  # release writes the (empty) body
    assert c.kv.put(key, "two", acquire=s2) is True
    assert c.kv.get(key)[1]["LockIndex"] == 2
    for s in (s1, s2):
        c.session.destroy(s)


def test_plain_write_to_held_key_keeps_session_and_zeroes_lock_index(
    contract_client: Any, kv_prefix: str
) -> None:
    c = contract_client
    sid = c.session.create(ttl=10, lock_delay=0)
    c.kv.put(kv_prefix + "lock", "held", acquire=sid)
    assert c.kv.put(kv_prefix + "lock", "plain") is True
    entry = c.kv.get(kv_prefix + "lock")[1]
    assert entry["Session"] == sid and entry["LockIndex"] == 0 and entry["Value"] == b"plain"
    c.session.destroy(sid)


def test_acquire_with_destroyed_session_is_invalid_session(contract_client: Any, kv_prefix: str) -> None:
    sid = contract_client.session.create(ttl=10, lock_delay=0)
    contract_client.session.destroy(sid)
    with pytest.raises(ConsulException) as info:
        contract_client.kv.put(kv_prefix + "lock", "v", acquire=sid)
    assert str(info.value) == f'500 invalid session "{sid}"'
    assert contract_client.kv.put(kv_prefix + "lock", None, release=sid) is False


@pytest.mark.parametrize("behavior", ["release", "delete"])
def test_invalidation_behavior(contract_client: Any, kv_prefix: str, behavior: str) -> None:
    c = contract_client
    sid = c.session.create(ttl=10, lock_delay=0, behavior=behavior)
    c.kv.put(kv_prefix + "lock", "v", acquire=sid)
    before = c.kv.get(kv_prefix + "lock")[1]
    c.session.destroy(sid)
    index, after = c.kv.get(kv_prefix + "lock")
    assert int(index) > before["ModifyIndex"]
    if behavior == "delete":
        assert after is None
    else:
        assert "Session" not in after and after["LockIndex"] == 1 and after["Value"] == b"v"
        assert after["ModifyIndex"] > before["ModifyIndex"]


def test_lock_delay_after_destroy_but_not_after_release(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    other = c.session.create(ttl=10, lock_delay=0)
    dying = c.session.create(ttl=10, lock_delay=5)
    c.kv.put(kv_prefix + "a", "v", acquire=dying)
    c.session.destroy(dying)
    assert c.kv.put(kv_prefix + "a", "v", acquire=other) is False  # lock-delay
    assert c.kv.put(kv_prefix + "a", "plain") is True  # plain writes are not delayed
    with pytest.raises(ConsulException) as info:
        c.txn.put([{"KV": {"Verb": "lock", "Key": kv_prefix + "a", "Session": other}}])
    assert f'failed to lock key \\"{kv_prefix}a\\" due to lock delay' in str(info.value)
    polite = c.session.create(ttl=10, lock_delay=5)
    c.kv.put(kv_prefix + "b", "v", acquire=polite)
    c.kv.put(kv_prefix + "b", None, release=polite)
    assert c.kv.put(kv_prefix + "b", "v", acquire=other) is True  # explicit release: no delay
    for s in (other, polite):
        c.session.destroy(s)


# --------------------------------------------------------------------------- blocking queries


def test_blocking_query_times_out_without_change(contract_client: Any, kv_prefix: str) -> None:
    contract_client.kv.put(kv_prefix + "k", "v")
    index, _ = contract_client.kv.get(kv_prefix + "k")
    took, (again, entry) = timed(lambda: contract_client.kv.get(kv_prefix + "k", index=index, wait="1s"))
    assert again == index and entry["Value"] == b"v"
    assert 0.95 <= took <= 1.0 + 1 / 16 + SLACK


def test_blocking_query_wakes_on_change(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    c.kv.put(kv_prefix + "k", "v1")
    index, _ = c.kv.get(kv_prefix + "k")
    join = later(c, 0.3, lambda: c.kv.put(kv_prefix + "k", "v2"))
    took, (new_index, entry) = timed(lambda: c.kv.get(kv_prefix + "k", index=index, wait="5s"))
    join()
    assert int(new_index) > int(index) and entry["Value"] == b"v2"
    assert 0.2 <= took < 0.3 + SLACK


def test_index_above_the_stores_blocks_the_whole_wait(contract_client: Any, kv_prefix: str) -> None:
    contract_client.kv.put(kv_prefix + "k", "v")
    index, _ = contract_client.kv.get(kv_prefix + "k")
    ahead = int(index) + 100000
    took, (got, _) = timed(lambda: contract_client.kv.get(kv_prefix + "k", index=ahead, wait="1s"))
    assert got == index and int(got) < ahead
    assert took >= 0.95


def test_delete_under_prefix_wakes_listing_with_higher_index(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    c.kv.put(kv_prefix + "d/1", "a")
    c.kv.put(kv_prefix + "d/2", "b")
    index, _ = c.kv.get(kv_prefix + "d/", recurse=True)
    join = later(c, 0.3, lambda: c.kv.delete(kv_prefix + "d/2"))
    took, (new_index, entries) = timed(
        lambda: c.kv.get(kv_prefix + "d/", recurse=True, index=index, wait="5s")
    )
    join()
    assert int(new_index) > int(index) and [e["Key"] for e in entries] == [kv_prefix + "d/1"]
    assert took < 0.3 + SLACK


def test_deleting_a_watched_key_wakes_with_none(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    c.kv.put(kv_prefix + "k", "v")
    index, _ = c.kv.get(kv_prefix + "k")
    join = later(c, 0.3, lambda: c.kv.delete(kv_prefix + "k"))
    new_index, entry = c.kv.get(kv_prefix + "k", index=index, wait="5s")
    join()
    assert entry is None and int(new_index) > int(index)


def test_session_invalidation_wakes_the_lock_watcher(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    sid = c.session.create(ttl=10, lock_delay=0)
    c.kv.put(kv_prefix + "lock", "v", acquire=sid)
    index, _ = c.kv.get(kv_prefix + "lock")
    join = later(c, 0.3, lambda: c.session.destroy(sid))
    took, (new_index, entry) = timed(lambda: c.kv.get(kv_prefix + "lock", index=index, wait="5s"))
    join()
    assert int(new_index) > int(index) and "Session" not in entry
    assert took < 0.3 + SLACK


@pytest.mark.consul
@pytest.mark.slow
def test_real_service_check_ttl_invalidates_session(real_client: Any, kv_prefix: str) -> None:
    """On the real agent only: a 2 s TTL check not passed kills its session in about 2 s.

    The fake's equivalent runs on the ManualClock in tests/unit/test_fake_consul.py.
    """
    c = real_client
    sid = "contract-ttl-check"
    c.agent.service.register("contract", service_id=sid, check={"TTL": "2s"})
    try:
        c.agent.check.ttl_pass(f"service:{sid}")
        session = c.session.create(checks=["serfHealth", f"service:{sid}"], lock_delay=0)
        c.kv.put(kv_prefix + "lock", "v", acquire=session)
        start = time.monotonic()
        while c.session.info(session)[1] is not None and time.monotonic() - start < 5:
            time.sleep(0.05)
        took = time.monotonic() - start
        assert 1.5 <= took <= 3.5
        assert "Session" not in c.kv.get(kv_prefix + "lock")[1]
    finally:
        c.agent.service.deregister(sid)
