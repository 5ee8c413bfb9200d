"""Coordinator, leader and worker together on the mocked Consul (in one process).

Layer: integration (timed FakeCluster runs: whole nodes on one FakeConsul, in real time).
"""

from __future__ import annotations

import json
import time

import gevent
import pytest

from voltha_gevent.assignment import desired_assignment
from voltha_gevent.assignment_docs import bucket_of, doc_key, encode
from voltha_gevent.keys import Keys
from voltha_gevent.testing.auditor import published_once
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"item{i:03d}" for i in range(60)]
KEYS = Keys("service/voltha")


@pytest.fixture
def cluster():
    with FakeCluster(FakeConsul()) as c:
        c.add_items(*ITEMS)
        yield c


def assignment_matches_pure_function(c: FakeCluster) -> bool:
    """The published assignment is what the pure function gives for the live members."""
    published = published_once(c.fake)
    members = {name: 1.0 for name in c.nodes}
    return published == desired_assignment(members, ITEMS, published)


def test_three_nodes_elect_exactly_one_leader_and_share_all_items(cluster):
    for name in ("a", "b", "c"):
        cluster.add_node(name)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    assert len(cluster.leaders()) == 1
    leader_id = cluster.leader().instance_id
    assert {n.leader_id for n in cluster.nodes.values()} == {leader_id}
    assert assignment_matches_pure_function(cluster)
    assert all(15 <= len(n.owned()) <= 25 for n in cluster.nodes.values())
    assert cluster.ledger.violations == []


def test_leader_crash_hands_leadership_over_with_a_higher_epoch(cluster):
    for name in ("a", "b", "c"):
        cluster.add_node(name)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    old = cluster.leader()
    old_epoch = old.epoch
    cluster.crash(old.instance_id)
    assert cluster.wait_until(lambda: cluster.leader() is not None and cluster.converged(set(ITEMS)))
    new = cluster.leader()
    assert new.instance_id != old.instance_id
    assert new.epoch > old_epoch
    assert assignment_matches_pure_function(cluster)
    assert cluster.ledger.violations == []


def test_graceful_stop_and_join_move_items_without_two_owners(cluster):
    for name in ("a", "b", "c"):
        cluster.add_node(name)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    follower = next(n for n in cluster.nodes.values() if not n.is_leader)
    cluster.stop(follower.instance_id)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    cluster.add_node("d")
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)) and len(cluster.nodes["d"].owned()) > 10)
    assert assignment_matches_pure_function(cluster)
    assert cluster.ledger.violations == []


def test_a_graceful_stop_logs_lost_leadership_at_info_with_reason_shutdown(cluster):
    import structlog

    cluster.add_node("a")
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    with structlog.testing.capture_logs() as logs:
        cluster.stop("a")
    lost = [e for e in logs if e["event"] == "lost-leadership"]
    assert [(e["log_level"], e["reason"]) for e in lost] == [("info", "shutdown")]


def test_a_duplicate_instance_id_answers_health_503_naming_the_other_process(cluster):
    from voltha_gevent.http import HttpEndpoint
    from voltha_gevent.node import Node
    from voltha_gevent.testing.nodes import RecordingHandler

    first = cluster.add_node("a")
    assert cluster.wait_until(lambda: first.healthy)
    second = Node(cluster.settings_config("a"), handler=RecordingHandler(cluster.ledger, "a"),
                  client_factory=cluster.client_factory("a-twin"))
    second.start()
    try:
        holder = first.coordinator.session.session_id
        expected = f"instance id a is in use by another process (session {holder}); waiting for it to go"
        assert cluster.wait_until(lambda: second.unhealthy_reason() == expected), second.unhealthy_reason()
        status, _, body = HttpEndpoint(second, "127.0.0.1", 0)._health({})
        assert status == 503 and json.loads(body)["reason"] == expected
    finally:
        second.stop()


def test_session_loss_fences_work_at_once_then_rejoins(cluster):
    for name in ("a", "b"):
        cluster.add_node(name)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    victim = next(n for n in cluster.nodes.values() if not n.is_leader)
    owned_before = victim.owned()
    assert owned_before
    old_session = victim.coordinator.session.session_id
    cluster.fake.expire_session(old_session)
    # the worker's work stops as soon as the node notices (its locks' watches fire)
    assert cluster.wait_until(lambda: victim.worker.stats.fenced >= len(owned_before), timeout=5)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    assert victim.coordinator.session.session_id != old_session
    assert victim.coordinator.session.losses == 1
    assert cluster.ledger.violations == []


def test_consul_outage_then_recovery_reconverges(cluster):
    for name in ("a", "b", "c"):
        cluster.add_node(name)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    with cluster.fake.outage():
        gevent.sleep(1.5)
        assert all(not n.coordinator.stopping for n in cluster.nodes.values())
    cluster.add_items("late-item")
    assert cluster.wait_until(lambda: cluster.converged({*ITEMS, "late-item"}), timeout=15)
    assert len(cluster.leaders()) == 1
    assert cluster.ledger.violations == []


def test_duplicate_instance_id_waits_instead_of_stealing(cluster):
    first = cluster.add_node("a")
    assert cluster.wait_until(lambda: first.healthy)
    twin_cluster_node = cluster.add_node("a-twin", start=False)
    # same instance id as "a": rebuild its record under that id
    twin = twin_cluster_node
    twin.coordinator.instance_id = "a"
    twin.coordinator.record = first.coordinator.record
    twin.start()
    gevent.sleep(0.5)
    assert first.healthy and not twin.healthy
    entry = cluster.fake.dump("service/voltha/members/a")["service/voltha/members/a"]
    assert entry[1] == first.coordinator.session.session_id
    cluster.stop("a")
    assert cluster.wait_until(lambda: twin.healthy, timeout=5)


def test_workload_changes_are_soaked_into_one_reassignment():
    with FakeCluster(FakeConsul(), soak=0.5) as c:
        node = c.add_node("a")
        assert c.wait_until(lambda: node.is_leader and node.coordinator.leader is not None)
        leader = node.coordinator.leader
        assert c.wait_until(lambda: leader.state.value == "idle" or leader.stats.reassignments >= 1)
        before = leader.stats.reassignments
        for i in range(5):
            c.add_items(f"burst{i}")
            gevent.sleep(0.1)
        assert c.wait_until(lambda: c.converged({f"burst{i}" for i in range(5)}), timeout=5)
        gevent.sleep(0.7)
        assert leader.stats.reassignments == before + 1


def test_handler_failures_are_retried_and_counted(cluster):
    node = cluster.add_node("a", fail_times=2)
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), timeout=10)
    assert node.worker.stats.handler_failures == 2


def test_revoke_handler_that_hangs_is_bounded_by_stop_timeout():
    with FakeCluster(FakeConsul(), stop_timeout=0.3) as c:
        c.add_items("x")
        a = c.add_node("a", revoke_delay=30)
        assert c.wait_until(lambda: c.converged({"x"}))
        c.remove_items("x")
        assert c.wait_until(lambda: not a.owned() and not a.revoking(), timeout=3)
        # the lock is released only after the hung handler was cut off
        assert c.fake.dump("service/voltha/owners/x")["service/voltha/owners/x"][1] is None


def test_malformed_entries_are_skipped_and_counted(cluster):
    client = cluster.fake.client()
    client.kv.put("service/voltha/workload/nested/deeper", "x")
    client.kv.put("service/voltha/workload/bad name!", "x")
    ghost = doc_key(KEYS, "ghost", bucket_of("item000"))
    client.kv.put(ghost, encode(1, ["item000"]))
    client.kv.put("service/voltha/assignments/garbage", "{}")
    client.kv.put("service/voltha/workload/binary", b"\xff\xfe\x00")
    node = cluster.add_node("a")
    assert cluster.wait_until(lambda: cluster.converged({*ITEMS, "binary"}))
    leader = node.coordinator.leader
    assert leader.stats.skipped_entries >= 2
    assert cluster.handlers["a"].values["binary"] == b"\xff\xfe\x00"
    assert ghost not in cluster.fake.dump(KEYS.assignments)
    assert cluster.fake.dump("service/voltha/assignments/garbage")  # not a document: left alone
    assert cluster.fake.dump("service/voltha/workload/nested/deeper")  # never deleted


def test_a_change_during_reassignment_schedules_exactly_one_more_run(monkeypatch):
    from voltha_gevent.soak import PlanDraft  # a reassignment takes its plan from the draft

    real = PlanDraft.desired
    calls = []

    with FakeCluster(FakeConsul(), soak=0.2) as c:
        def slow_first_run(draft, inputs):
            calls.append(1)
            if len(calls) == 1:  # the workload changes while the first run computes
                c.add_items("during-1")
                c.add_items("during-2")
                gevent.sleep(0.3)
            return real(draft, inputs)

        monkeypatch.setattr(PlanDraft, "desired", slow_first_run)
        c.add_items("x")
        node = c.add_node("a")
        assert c.wait_until(lambda: c.converged({"x", "during-1", "during-2"}), timeout=5)
        gevent.sleep(0.6)  # two soaks: no third run may come
        assert node.coordinator.leader.stats.reassignments == 2
        assert len(calls) == 2


def test_a_refused_owner_lock_is_tried_again_with_backoff_not_hammered():
    with FakeCluster(FakeConsul(), handover_timeout=0.5) as cluster:
        cluster.add_items(*ITEMS)
        client = cluster.fake.client()
        squatter = client.session.create(ttl=10, lock_delay=0)
        assert client.kv.put("service/voltha/owners/item000", "old-owner", acquire=squatter)
        node = cluster.add_node("a")
        # a new item is granted at once (no live member had it); the worker waits for the lock
        assert cluster.wait_until(lambda: node.pending() == {"item000"})
        assert len(node.owned()) == len(ITEMS) - 1
        assert node.coordinator.leader.stats.handover_timeouts == 0
        assert node.coordinator.leader.stats.owner_reads == 0  # nothing moves between members
        gevent.sleep(1.0)  # past the first quick retries
        txns_before = cluster.fake.request_counts.get("txn.put", 0)
        gevent.sleep(2.0)
        # backoff: about every 0.5 s (4 tries in 2 s), not a tight loop and not never
        assert 2 <= cluster.fake.request_counts.get("txn.put", 0) - txns_before <= 6
        client.kv.put("service/voltha/owners/item000", None, release=squatter)
        released = time.monotonic()
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
        assert time.monotonic() - released < 1.5  # the next try takes it
        assert cluster.ledger.violations == []


def test_wait_settled_waits_for_the_first_assignment_not_an_empty_start(cluster):
    node = cluster.add_node("a")
    assert node.wait_settled(10)
    assert node.owned() == set(ITEMS)


def test_wait_settled_is_true_with_nothing_owned_when_the_workload_is_empty():
    with FakeCluster(FakeConsul()) as empty:
        node = empty.add_node("a")
        assert node.wait_settled(5)
        assert node.owned() == set()


def test_seed_workload_is_created_by_the_node_given_it_and_removed_items_stay_removed():
    with FakeCluster(FakeConsul()) as c:
        leader = c.add_node("a")
        assert c.wait_until(lambda: leader.is_leader)
        c.add_node("b", seed_workload=3)  # not the leader
        prefix = "service/voltha/workload/"
        names = {f"device_group_{i:04d}" for i in (1, 2, 3)}
        assert c.wait_until(lambda: {k.rsplit("/", 1)[1] for k in c.fake.dump(prefix)} == names)
        assert c.wait_until(lambda: c.converged(names))
        c.fake.client().kv.delete(prefix + "device_group_0002")
        c.crash("a")  # b becomes leader: it must not bring the removed item back
        assert c.wait_until(lambda: c.nodes["b"].is_leader and c.converged(names - {"device_group_0002"}))
        gevent.sleep(0.5)
        assert {k.rsplit("/", 1)[1] for k in c.fake.dump(prefix)} == names - {"device_group_0002"}


def test_coordinator_keeps_trying_when_consul_rejects_session_creation():
    from voltha_gevent.consul_api import BadRequest

    with FakeCluster(FakeConsul()) as cluster:
        cluster.fake.fail_next(1, lambda: BadRequest("400 Client sent an HTTP request to an HTTPS server"))
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.coordinator.retry.stats.last_error is not None, timeout=2)
        assert not node.healthy
        assert "HTTPS" in node.coordinator.retry.stats.last_error
        assert cluster.wait_until(lambda: node.healthy, timeout=10)  # the next try succeeds


class _RecordingDuty:
    """A SessionDuty that records the halting path's calls."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def session_started(self, session_id: str) -> None:
        self.calls.append("started")

    def session_ended(self, *, lost: bool) -> None:
        self.calls.append(f"ended lost={lost}")

    def abandon(self) -> None:
        self.calls.append("abandon")

    def keeps_locks(self) -> bool:
        return False


@pytest.mark.parametrize("how", ["shutdown", "lost", "abandon"])
def test_every_halt_goes_through_the_duties_session_duty_methods(how):
    from voltha_gevent.config import Config
    from voltha_gevent.coordinator import Coordinator

    with FakeConsul() as fake:
        config = Config.load(environ={}, flags={"instance_id": "n1", "prefix": "halt"})
        calls: list[str] = []
        coordinator = Coordinator(config, client_factory=lambda timeout: fake.client(),
                                  duties=(_RecordingDuty(calls),))
        coordinator.start()
        deadline = time.monotonic() + 5
        while not coordinator.healthy and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert coordinator.healthy and coordinator.is_leader and calls == ["started"]
        if how == "lost":
            coordinator.session.mark_lost(coordinator.session_id, "test")
            while calls[-1:] == ["started"] and time.monotonic() < deadline:
                gevent.sleep(0.02)
            assert calls[:2] == ["started", "ended lost=True"]  # then a new session starts it again
            coordinator.shutdown()
            assert calls[-1] == "ended lost=False"
        elif how == "shutdown":
            coordinator.shutdown()
            assert calls == ["started", "ended lost=False"]
        else:
            coordinator.abandon()
            assert calls == ["started", "abandon"]
        assert not coordinator.is_leader
