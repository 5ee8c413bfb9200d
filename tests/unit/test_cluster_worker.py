"""The worker on the mocked Consul: owner locks, fencing tokens, ownership, and fencing.

Layer: integration (timed FakeCluster runs: whole nodes on one FakeConsul, in real time).
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.event

import voltha_gevent
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"item{i:02d}" for i in range(20)]
#: A check TTL that satisfies the fencing budget with the fast settings: lease 1.0 s.
CHECKED = {"check_ttl": 1.5, "lock_delay": 2.0, "stop_timeout": 1.0}


def owner_tokens(cluster: FakeCluster) -> dict[str, tuple[int, str | None]]:
    out = {}
    for key, (_, session) in cluster.fake.dump("service/voltha/owners/").items():
        out[key.rsplit("/", 1)[1]] = session
    return out


def test_owner_locks_are_taken_and_read_in_a_few_shared_transactions() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS, value="v1")
        node = cluster.add_node("a", start=False)
        cluster.fake.reset_request_count()
        node.start()
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        counts = cluster.fake.request_counts
        assert counts.get("txn.put", 0) <= 6, counts  # 20 items: 1-2 lock batches + the leader's writes
        assert counts.get("kv.put", 0) <= 3, counts  # membership and leader locks only: no per-item acquire
        ownerships = [node.ownership(item) for item in ITEMS]
        assert all(o is not None and o.valid() for o in ownerships)
        assert all(o.value == b"v1" for o in ownerships if o is not None)
        assert all(o.token > 0 for o in ownerships if o is not None)


def test_the_fencing_token_grows_every_time_an_item_changes_owner() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items("x")
        first = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged({"x"}), 10)
        tokens = [first.ownership("x").token]  # type: ignore[union-attr]
        for name in ("b", "c"):
            node = cluster.add_node(name)
            cluster.stop([n for n in cluster.nodes if n != name][0])
            assert cluster.wait_until(lambda n=node: n.ownership("x") is not None, 10)
            tokens.append(node.ownership("x").token)  # type: ignore[union-attr]
        assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_the_work_sees_its_ownership_and_it_turns_invalid_when_revoked() -> None:
    seen: dict[str, Any] = {}

    def assigned(item: str, value: bytes | None) -> None:
        own = voltha_gevent.current_ownership()
        seen[item] = own
        while own is not None and own.wait(0.02):  # the "run it here" pattern
            pass
        seen[item + ":ended-valid"] = own.valid() if own else None

    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items("x")
        node = voltha_gevent.Node(cluster.settings_config("a"), on_assigned=assigned,
                                  client_factory=cluster.client_factory("a")).start()
        try:
            assert cluster.wait_until(lambda: node.ownership("x") is not None, 10)
            assert seen["x"] is node.ownership("x")
            cluster.remove_items("x")
            assert cluster.wait_until(lambda: "x:ended-valid" in seen, 10)
            assert seen["x:ended-valid"] is False
            assert node.ownership("x") is None
            assert node.worker.revocations.stats.killed == 0  # it stopped itself: no work-killed
        finally:
            node.stop()


def test_node_fences_its_work_within_the_lease_when_its_agent_is_gone() -> None:
    with FakeCluster(FakeConsul(), **CHECKED) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        last = min(node.coordinator.session.confirmed.values())
        cluster.fake.set_down(True)
        try:
            assert cluster.wait_until(lambda: not cluster.ledger.owners(), 3), cluster.ledger.owners()
            assert time.monotonic() - last <= 1.0 + 1.0 + 0.5  # lease + stop_timeout + margin
            assert node.coordinator.session.losses == 1
        finally:
            cluster.fake.set_down(False)
        gevent.sleep(0)


def test_node_fences_its_work_when_its_agent_is_cut_off_from_the_servers() -> None:
    with FakeCluster(FakeConsul(), **CHECKED) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        cluster.fake.set_servers_cut(True)
        try:
            assert cluster.wait_until(lambda: not cluster.ledger.owners(), 3), cluster.ledger.owners()
            assert "lease ran out" in (node.coordinator.session.last_loss_reason or "")
        finally:
            cluster.fake.set_servers_cut(False)
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 15)


def test_node_re_owns_its_items_after_a_loss_consul_did_not_see() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        session = node.coordinator.session
        session.mark_lost(session.session_id, "test: the lease ran out")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 5), sorted(node.pending())


def test_the_fence_completes_when_an_acquirer_is_the_first_to_see_the_session_invalid() -> None:
    """The acquirer that meets "invalid session" must not be the greenlet that runs the fence:
    the fence kills acquirers, and the items stayed assigned but never ran again."""
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        session_id = node.coordinator.session.session_id
        cluster.fake.set_latency(0.05)
        more = [f"more{i}" for i in range(5)]
        cluster.add_items(*more)  # acquirers will meet the dead session first
        gevent.sleep(0.3)
        client = cluster.fake.client(node="agent-a")
        client.session.destroy(session_id)
        cluster.fake.set_latency(0)
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS) | set(more)), 15), (
            sorted(node.pending()), node.coordinator.session.state)
        assert node.coordinator.session.session_id != session_id


def test_stopping_a_node_with_stuck_work_keeps_that_items_lock() -> None:
    """Destroying the session at stop would hand a stuck item to another node while its
    work still runs here (found by the dispatcher's quiesce tests)."""
    release = gevent.event.Event()

    def stubborn(item: str, value: bytes | None) -> None:
        while not release.is_set():
            try:
                gevent.sleep(0.05)
            except gevent.GreenletExit:
                continue  # ignores every kill

    with FakeCluster(FakeConsul(), stop_timeout=0.3) as cluster:
        cluster.add_items("x")
        node = voltha_gevent.Node(cluster.settings_config("a"), on_assigned=stubborn,
                                  client_factory=cluster.client_factory("a")).start()
        try:
            assert cluster.wait_until(lambda: node.ownership("x") is not None, 10)
            session_id = node.coordinator.session.session_id
            node.stop()
            assert node.stuck() == {"x"}
            assert cluster.fake.dump("service/voltha/owners/")["service/voltha/owners/x"][1] == session_id
            assert session_id in cluster.fake.sessions()
        finally:
            release.set()


def test_a_graceful_stop_releases_its_locks_in_a_few_transactions_before_lock_delay_matters() -> None:
    """Releasing explicitly lets the next owner take the lock at once; leaving it to the
    session's destroy would make it wait out lock-delay (a graceful leave took 2.3 s, not 1)."""
    items = [f"item{i:03d}" for i in range(100)]
    with FakeCluster(FakeConsul(), lock_delay=3.0) as cluster:
        cluster.add_items(*items)
        cluster.add_node("a")
        cluster.add_node("b")
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        cluster.fake.reset_request_count()
        started = time.monotonic()
        cluster.stop("b")
        releases = cluster.fake.request_counts.get("txn.put", 0)
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        assert time.monotonic() - started < 3.0  # before b's lock-delay would have run out
        assert releases <= 3, cluster.fake.request_counts  # ~50 unlocks: one transaction
