"""The mocked Consul on its own: clock-driven expiry, fault injection, the reaper, index resets.

What real Consul does in real time (session TTL after 2 x TTL, check TTLs) is pinned here on
the ManualClock; the shapes these tests rely on are pinned against Consul in tests/contract.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import pytest
import requests

from voltha_gevent.consul_api import ConsulException, NotFound
from voltha_gevent.testing.fake_consul import FakeConsul, ManualClock, parse_duration


def blocked_get(client: Any, key: str, index: str, wait: str = "30s") -> gevent.Greenlet:
    greenlet = gevent.spawn(client.kv.get, key, index=index, wait=wait)
    gevent.sleep(0.01)
    assert not greenlet.ready()
    return greenlet


# --------------------------------------------------------------------------- clock-driven expiry


def test_session_ttl_expires_after_twice_the_ttl(fake: FakeConsul, fake_client: Any) -> None:
    clock = fake.clock
    assert isinstance(clock, ManualClock)
    sid = fake_client.session.create(ttl=10, lock_delay=0)
    clock.advance(19.9)
    assert fake_client.session.info(sid)[1] is not None
    fake_client.session.renew(sid)  # restarts the 2 x TTL timer
    clock.advance(19.9)
    assert sid in fake.sessions()
    clock.advance(0.2)
    assert sid not in fake.sessions()
    with pytest.raises(NotFound):
        fake_client.session.renew(sid)


def test_ttl_expiry_releases_wakes_and_starts_lock_delay(fake: FakeConsul, fake_client: Any) -> None:
    sid = fake_client.session.create(ttl=10, lock_delay=15)
    fake_client.kv.put("lock", "v", acquire=sid)
    index, _ = fake_client.kv.get("lock")
    waiter = blocked_get(fake_client, "lock", index)
    fake.clock.advance(20)  # ManualClock
    new_index, entry = waiter.get(timeout=1)
    assert int(new_index) > int(index) and "Session" not in entry
    other = fake_client.session.create(ttl=10, lock_delay=0)
    assert fake_client.kv.put("lock", "w", acquire=other) is False
    fake.clock.advance(14.9)
    assert fake_client.kv.put("lock", "w", acquire=other) is False
    fake.clock.advance(0.2)
    assert fake_client.kv.put("lock", "w", acquire=other) is True


def test_lock_delay_zero_disables_it(fake: FakeConsul, fake_client: Any) -> None:
    sid = fake_client.session.create(ttl=10, lock_delay=0)
    fake_client.kv.put("lock", "v", acquire=sid)
    fake_client.session.destroy(sid)
    assert fake_client.kv.put("lock", "v", acquire=fake_client.session.create(ttl=10)) is True


def test_service_ttl_check_going_critical_invalidates_sessions(fake: FakeConsul, fake_client: Any) -> None:
    c = fake_client
    c.agent.service.register("svc", service_id="svc-1", check={"TTL": "2s"})
    assert fake.checks()["service:svc-1"]["Status"] == "critical"
    c.agent.check.ttl_pass("service:svc-1")
    sid = c.session.create(checks=["serfHealth", "service:svc-1"], lock_delay=0, behavior="delete")
    c.kv.put("eph", "v", acquire=sid)
    fake.clock.advance(1.5)
    c.agent.check.ttl_pass("service:svc-1")  # resets the check's timer
    fake.clock.advance(1.5)
    assert sid in fake.sessions()
    fake.clock.advance(0.6)
    assert sid not in fake.sessions()
    assert fake.dump() == {}
    assert fake.checks()["service:svc-1"]["Status"] == "critical"


def test_deregister_critical_service_after(fake: FakeConsul, fake_client: Any) -> None:
    fake_client.agent.service.register(
        "svc", service_id="svc-1", check={"TTL": "2s", "DeregisterCriticalServiceAfter": "1m"}
    )
    fake.clock.advance(59)
    assert "service:svc-1" in fake.checks()
    fake.clock.advance(2)
    assert fake.checks() == {}


def test_failing_node_invalidates_its_sessions_only(fake: FakeConsul) -> None:
    a, b = fake.client("a"), fake.client("b")
    sa, sb = a.session.create(ttl=10), b.session.create(ttl=10)
    ttl_only = a.session.create(ttl=10, checks=[])
    fake.set_node_health("a", False)
    assert set(fake.sessions()) == {sb, ttl_only}
    with pytest.raises(ConsulException, match="serfHealth"):
        a.session.create(ttl=10)
    assert sa not in fake.sessions()


def test_expire_session_and_drop_key(fake: FakeConsul, fake_client: Any) -> None:
    sid = fake_client.session.create(ttl=10, lock_delay=0)
    fake_client.kv.put("lock", "v", acquire=sid)
    fake_client.kv.put("other", "x")
    assert fake.expire_session(sid) is True and fake.expire_session(sid) is False
    assert fake.dump() == {"lock": (b"v", None), "other": (b"x", None)}
    before = int(fake.request_count)
    assert fake.drop_key("other") is True and fake.drop_key("other") is False
    assert int(fake.request_count) == before
    assert fake.dump("o") == {}


# --------------------------------------------------------------------------- indexes


def test_index_only_grows_and_every_write_bumps_it(fake: FakeConsul, fake_client: Any) -> None:
    seen = [fake.index]
    fake_client.kv.put("a", "1")
    seen.append(fake.index)
    fake_client.kv.put("a", "1")  # identical: the key keeps its ModifyIndex, Raft moves on
    seen.append(fake.index)
    fake_client.kv.put("a", "2", cas=0)  # failed cas still goes through Raft
    seen.append(fake.index)
    assert seen == sorted(set(seen))
    assert fake_client.kv.get("a")[1]["ModifyIndex"] == seen[1]


def test_reset_index_makes_higher_index_block_then_return_lower(fake: FakeConsul, fake_client: Any) -> None:
    for i in range(5):
        fake_client.kv.put(f"k{i}", "v")
    old, _ = fake_client.kv.get("k4")
    fake.reset_index(2)
    start = time.monotonic()
    index, entry = fake_client.kv.get("k4", index=old, wait="200ms")
    assert time.monotonic() - start >= 0.19
    assert int(index) <= 2 < int(old) and entry["Value"] == b"v"
    fake_client.kv.put("k4", "w")
    assert fake_client.kv.get("k4")[1]["ModifyIndex"] == 3


def test_reset_index_wakes_blocked_queries_only_when_data_passes_their_index(
    fake: FakeConsul, fake_client: Any
) -> None:
    fake_client.kv.put("a", "1")
    index, _ = fake_client.kv.get("a")
    waiter = blocked_get(fake_client, "a", index, wait="300ms")
    fake.reset_index(1)
    got, _ = waiter.get(timeout=2)
    assert int(got) == 1


def test_missing_key_query_wakes_on_any_kv_change(fake: FakeConsul, fake_client: Any) -> None:
    index, _ = fake_client.kv.get("svc/leader")
    waiter = blocked_get(fake_client, "svc/leader", index)
    fake_client.kv.put("svc/members/a", "x")
    new_index, entry = waiter.get(timeout=1)
    assert entry is None and int(new_index) > int(index)


def test_reaped_tombstones_move_a_prefix_index_back(fake: FakeConsul, fake_client: Any) -> None:
    fake_client.kv.put("p/a", "1")
    fake_client.kv.put("p/b", "2")
    fake_client.kv.delete("p/b")
    with_tombstone, _ = fake_client.kv.get("p/", recurse=True)
    fake.reap_tombstones()
    without, _ = fake_client.kv.get("p/", recurse=True)
    assert int(without) < int(with_tombstone)


# --------------------------------------------------------------------------- fault injection


def test_outage_fails_calls_and_blocked_queries(fake: FakeConsul, fake_client: Any) -> None:
    fake_client.kv.put("a", "1")
    index, _ = fake_client.kv.get("a")
    waiter = blocked_get(fake_client, "a", index)
    with fake.outage():
        with pytest.raises(requests.exceptions.ConnectionError):
            waiter.get(timeout=1)
        with pytest.raises(requests.exceptions.ConnectionError):
            fake_client.kv.put("a", "2")
    assert fake_client.kv.put("a", "2") is True


def test_set_down_and_sessions_keep_expiring(fake: FakeConsul, fake_client: Any) -> None:
    sid = fake_client.session.create(ttl=10)
    fake.set_down(True)
    fake.clock.advance(25)
    with pytest.raises(requests.exceptions.ConnectionError):
        fake_client.session.renew(sid)
    fake.set_down(False)
    with pytest.raises(NotFound):
        fake_client.session.renew(sid)


def test_fail_next(fake: FakeConsul, fake_client: Any) -> None:
    fake.fail_next(2)
    for _ in range(2):
        with pytest.raises(ConsulException, match="^500 No cluster leader$"):
            fake_client.kv.get("a")
    assert fake_client.kv.get("a")[1] is None
    fake.fail_next(1, lambda: requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(requests.exceptions.ReadTimeout):
        fake_client.session.create(ttl=10)


def test_latency(fake: FakeConsul, fake_client: Any) -> None:
    fake.set_latency(0.1)
    start = time.monotonic()
    fake_client.kv.get("a")
    assert time.monotonic() - start >= 0.09
    fake.set_latency(0)


def test_client_timeout_raises_read_timeout(fake: FakeConsul) -> None:
    client = fake.client(timeout=0.2)
    index, _ = client.kv.get("a")
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.kv.get("a", index=index, wait="5s")


def test_request_counts(fake: FakeConsul, fake_client: Any) -> None:
    fake_client.kv.get("a")
    fake_client.kv.get("b")
    fake_client.session.create(ttl=10)
    count = fake.request_count
    assert count == 3 and count["kv.get"] == 2 and count["session.create"] == 1 and count["txn.put"] == 0
    fake.reset_request_count()
    assert fake.request_count == 0


# --------------------------------------------------------------------------- real clock and reaper


class OffsetClock:
    """Real time plus an offset a test can bump, to reach long TTLs quickly."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self.offset


def test_reaper_expires_sessions_without_api_calls() -> None:
    clock = OffsetClock()
    with FakeConsul(clock=clock) as fake:
        client = fake.client()
        sid = client.session.create(ttl=10, lock_delay=0)
        client.kv.put("lock", "v", acquire=sid)
        calls = int(fake.request_count)
        clock.offset = 21.0
        deadline = time.monotonic() + 2.0
        while sid in fake.sessions() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert sid not in fake.sessions()
        assert fake.dump() == {"lock": (b"v", None)}
        assert int(fake.request_count) == calls


def test_reaper_runs_check_ttls_on_real_time() -> None:
    with FakeConsul() as fake:
        client = fake.client()
        client.agent.service.register("svc", service_id="s", check={"TTL": "200ms"})
        client.agent.check.ttl_pass("service:s")
        sid = client.session.create(checks=["service:s"], lock_delay=0)
        index, _ = client.kv.get("k")
        start = time.monotonic()
        gevent.sleep(0.5)
        assert sid not in fake.sessions()
        assert time.monotonic() - start < 1.0
    assert fake._reaper is None  # close() stopped it


def test_parse_duration() -> None:
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("0") == 0.0
    for bad in ["5", "abc", "", "1x"]:
        with pytest.raises(ValueError):
            parse_duration(bad)
