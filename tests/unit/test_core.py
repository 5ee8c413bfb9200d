"""Units of the coordination core on the mocked Consul: api, retry, watch, lock, fencing."""

from __future__ import annotations

import json
import time

import gevent
import pytest
import requests

from voltha_gevent.consul_api import (
    ConsulAPI,
    ConsulException,
    Retrying,
    TxnOp,
    chunked,
    translate,
)
from voltha_gevent.errors import (
    ConsulRejected,
    ConsulUnavailable,
    NotLeader,
    PermissionDenied,
    SessionInvalid,
    Stopped,
    TransactionFailed,
)
from voltha_gevent.lock import LockState, SessionLock
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster
from voltha_gevent.watch import Watch, WatchKind


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


# -- consul_api ----------------------------------------------------------------------


def test_translate_maps_client_errors_to_project_errors():
    from voltha_gevent.consul_api import ACLPermissionDenied, ClientError, NotFound

    assert isinstance(translate(requests.exceptions.ConnectionError("refused")), ConsulUnavailable)
    assert isinstance(translate(ConsulException("500 No cluster leader")), ConsulUnavailable)
    assert isinstance(translate(ConsulException('500 invalid session "x"')), SessionInvalid)
    assert isinstance(translate(ACLPermissionDenied("denied")), PermissionDenied)
    assert isinstance(translate(NotFound("gone")), ConsulRejected)
    assert isinstance(translate(ValueError("not json")), ConsulUnavailable)
    body = json.dumps({"Results": None, "Errors": [{"OpIndex": 0, "What": "failed session check"}]}, indent=4)
    failed = translate(ClientError("409 " + body))
    assert isinstance(failed, TransactionFailed)
    assert failed.errors == [(0, "failed session check")]


def test_network_errors_are_logged_in_a_few_words_not_urllib3_reprs():
    import socket

    import structlog

    from voltha_gevent.consul_api import ClientSettings, Retrying, make_client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    api = ConsulAPI(make_client(ClientSettings(host="127.0.0.1", port=port), timeout=2.0))
    retrying = Retrying(schedule=(0.01,))
    with structlog.testing.capture_logs() as logs, pytest.raises(ConsulUnavailable) as info:
        retrying.call(lambda: api.get("k"), what="read", deadline=time.monotonic() + 0.05)
    gist = f"ConnectionRefused 127.0.0.1:{port}"
    assert str(info.value) == f"consul unavailable: {gist}"
    assert [e["error"] for e in logs if e["event"] == "consul-not-up"] == [f"consul unavailable: {gist}"]
    assert retrying.stats.last_error == f"consul unavailable: {gist}"


def test_chunked_leads_every_batch_with_the_guards():
    ops = [TxnOp.set(f"k{i}", "v") for i in range(130)]
    guard = [TxnOp.check_session("leader", "s")]
    batches = list(chunked(ops, guard))
    assert [len(b) for b in batches] == [64, 64, 5]
    assert all(b[0] is guard[0] for b in batches)
    assert [op for b in batches for op in b[1:]] == ops


def test_txn_rollback_raises_transaction_failed_and_writes_nothing(api):
    with pytest.raises(TransactionFailed) as failure:
        api.txn([TxnOp.set("a", "1"), TxnOp.check_not_exists("a"), TxnOp.set("b", "2")])
    assert failure.value.errors and failure.value.errors[0][0] == 1
    assert api.get("a")[1] is None and api.get("b")[1] is None


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


def test_acquire_with_a_dead_session_is_session_invalid(api):
    session_id = api.create_session(name="t", ttl=10, behavior="release", lock_delay=0)
    api.destroy_session(session_id)
    with pytest.raises(SessionInvalid):
        api.acquire("lock", "me", session_id)


# -- watch ---------------------------------------------------------------------------


def test_watch_delivers_only_real_changes(live_fake, api):
    seen = []
    watch = Watch(api, "w/", seen.append, kind=WatchKind.KEYS, wait=2).start()
    try:
        assert watch.wait_delivered(2)
        api.put("w/a", "1")
        assert wait_until(lambda: seen[-1] == ["w/a"])
        api.put("other", "x")  # a wake-up elsewhere is not a change here
        api.put("w/a", "2")  # a value change does not change the key list
        gevent.sleep(0.3)
        assert seen == [[], ["w/a"]] or seen == [None, ["w/a"]]
    finally:
        watch.stop()


def test_watch_resets_its_index_when_it_goes_backwards(live_fake, api):
    seen = []
    for i in range(10):
        api.put("r/a", str(i))
    watch = Watch(api, "r/", seen.append, kind=WatchKind.KEYS, wait=1).start()
    try:
        assert watch.wait_delivered(2)
        assert watch.index >= 10
        live_fake.reset_index(1)
        api.put("r/b", "1")
        assert wait_until(lambda: seen and seen[-1] == ["r/a", "r/b"], timeout=5)
        assert watch.stats.resets >= 1
    finally:
        watch.stop()


def test_watch_survives_a_failing_callback_and_consul_errors(live_fake, api):
    calls = []

    def explode(data):
        calls.append(data)
        raise RuntimeError("bad record")

    watch = Watch(api, "x/", explode, kind=WatchKind.TREE, wait=1).start()
    try:
        assert watch.wait_delivered(2)
        with live_fake.outage():
            gevent.sleep(0.3)
        api.put("x/1", "v")
        assert wait_until(lambda: len(calls) >= 2)
        assert watch.stats.callback_failures >= 2 and watch.stats.errors >= 1
        assert watch.running
    finally:
        watch.stop()


# -- lock ----------------------------------------------------------------------------


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


def test_lock_reports_a_dead_session(api):
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


# -- fencing -------------------------------------------------------------------------


def test_a_deposed_leaders_batch_is_rejected_by_consul():
    with FakeCluster(FakeConsul()) as cluster:
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.coordinator.leader is not None)
        leader = node.coordinator.leader
        client = cluster.fake.client()
        # the leader key passes to another session behind the leader's back
        client.kv.put("service/voltha/leader", None, release=node.coordinator.session.session_id)
        other = client.session.create(ttl=10, lock_delay=0)
        assert client.kv.put("service/voltha/leader", "usurper", acquire=other)
        with pytest.raises(NotLeader):
            leader._write([TxnOp.set("service/voltha/assignments/a/x", "{}")])
        assert "service/voltha/assignments/a/x" not in cluster.fake.dump("service/voltha/assignments/")


def test_coordinator_keeps_trying_when_consul_rejects_session_creation():
    from voltha_gevent.consul_api import BadRequest

    with FakeCluster(FakeConsul()) as cluster:
        cluster.fake.fail_next(1, lambda: BadRequest("400 Client sent an HTTP request to an HTTPS server"))
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.coordinator.retry.stats.last_error is not None, timeout=2)
        assert not node.healthy
        assert "HTTPS" in node.coordinator.retry.stats.last_error
        assert cluster.wait_until(lambda: node.healthy, timeout=10)  # the next try succeeds
