"""The leader: one soak per change, its own writes never taken for another writer's, an idle loop.

Layer: integration (timed FakeCluster runs: whole nodes on one FakeConsul, in real time).
"""

from __future__ import annotations

import time

import gevent
import pytest
import structlog.testing

from voltha_gevent.assignment_docs import bucket_of, decode, doc_key, encode
from voltha_gevent.errors import NotLeader
from voltha_gevent.keys import Keys
from voltha_gevent.testing.auditor import published_once
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster
from voltha_gevent.txn import TxnOp

ITEMS = [f"item{i:03d}" for i in range(30)]
KEYS = Keys("service/voltha")
FOLDER = KEYS.assignments


def test_idle_leader_loop_waits_instead_of_spinning():
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS)
        for name in ("a", "b"):
            cluster.add_node(name)
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
        leader = cluster.leader().coordinator.leader
        gevent.sleep(0.3)  # the last owners/ change after the grants has been delivered
        assert not leader.pending_since
        calls = []
        real = leader._complete_handovers
        leader._complete_handovers = lambda: calls.append(1) or real()
        leader._owners_changed.set()  # an owners/ change while nothing is pending
        gevent.sleep(0.5)
        assert len(calls) <= 3, f"leader loop ran {len(calls)} times in 0.5 s while idle"


def test_a_join_costs_one_soak_even_when_a_snapshot_of_its_own_batches_arrives_mid_write():
    items = [f"dg{i:04d}" for i in range(400)]
    with FakeCluster(FakeConsul(), soak=0.3, max_soak_delay=3.0) as cluster:
        cluster.add_items(*items)
        cluster.add_node("a")
        cluster.add_node("b")
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 15)
        leader = cluster.leader().coordinator.leader
        before = leader.stats.reassignments
        watch = next(w for w in leader.watches if w.name == "leader-assignments")
        deliver = watch.on_change
        # a big listing takes a while to travel and parse: a snapshot read between two of the
        # leader's batches reaches it after the write phase has ended
        watch.on_change = lambda names: gevent.spawn_later(0.15, deliver, names)
        cluster.fake.set_latency(0.01)  # spread the leader's batches: the watch sees them one by one
        with structlog.testing.capture_logs() as logs:
            cluster.add_node("c")
            assert cluster.wait_until(lambda: cluster.converged(set(items)), 20)
            gevent.sleep(1.0)  # any late snapshot of the leader's own writes has arrived
        cluster.fake.set_latency(0)
        assert [e for e in logs if e["event"] == "assignments-changed-elsewhere"] == []
        assert leader.stats.reassignments - before == 1
        assert leader.stats.owner_reads > 0  # items moved between live members: their locks read
        reads = leader.stats.owner_reads
        gevent.sleep(0.5)
        assert leader.stats.owner_reads == reads  # and no longer once every handover is done


def settled_two_node_cluster(cluster: FakeCluster, items: list[str]):
    cluster.add_items(*items)
    cluster.add_node("a")
    cluster.add_node("b")
    assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
    gevent.sleep(0.3)
    return cluster.leader().coordinator.leader


def test_a_cold_start_never_reads_owners():
    items = [f"dg{i:03d}" for i in range(100)]
    with FakeCluster(FakeConsul()) as cluster:
        leader = settled_two_node_cluster(cluster, items)
        assert leader.stats.owner_reads == 0


def test_another_writers_edit_is_still_detected_and_corrected():
    items = [f"dg{i:03d}" for i in range(20)]
    with FakeCluster(FakeConsul()) as cluster:
        leader = settled_two_node_cluster(cluster, items)
        published = cluster.fake.dump(FOLDER)
        before = leader.stats.reassignments
        client = cluster.fake.client()
        victim = sorted(published)[0]  # a whole document deleted by hand
        with structlog.testing.capture_logs() as logs:
            client.kv.delete(victim)
            assert cluster.wait_until(lambda: leader.stats.reassignments > before, 10)
            assert cluster.wait_until(lambda: cluster.fake.dump(FOLDER) == published, 10)
        assert [e["missing"] for e in logs if e["event"] == "assignments-changed-elsewhere"] == [1]
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)


@pytest.mark.parametrize("edit", ["same-bucket", "other-bucket"])
def test_an_item_added_to_another_members_document_is_taken_out_again(edit):
    """The item of a also listed by b (in b's document of its bucket, or of another bucket):
    the leader sees the edit, keeps the item on a and restores what it had published."""
    items = [f"dg{i:03d}" for i in range(20)]
    with FakeCluster(FakeConsul()) as cluster:
        leader = settled_two_node_cluster(cluster, items)
        published = cluster.fake.dump(FOLDER)
        owners = published_once(cluster.fake)
        item = next(i for i in items if owners[i] == "a")  # a sorts first: the leader keeps it on a
        if edit == "same-bucket":
            bucket = bucket_of(item)
        else:
            bucket = next(b for b in (f"{n:02x}" for n in range(64))
                          if b != bucket_of(item) and doc_key(KEYS, "b", b) not in published)
        key = doc_key(KEYS, "b", bucket)
        listed = decode(published[key][0]) if key in published else []
        before = leader.stats.reassignments
        with structlog.testing.capture_logs() as logs:
            cluster.fake.client().kv.put(key, encode(leader.epoch, [*listed, item]))
            assert cluster.wait_until(lambda: leader.stats.reassignments > before, 10)
            assert cluster.wait_until(lambda: cluster.fake.dump(FOLDER) == published, 10), \
                sorted(set(cluster.fake.dump(FOLDER).items()) ^ set(published.items()))
        assert [e["event"] for e in logs].count("assignments-changed-elsewhere") == 1
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        assert published_once(cluster.fake) == owners
        assert cluster.ledger.violations == []


def test_a_document_rewritten_with_the_same_items_is_noticed_once_and_keeps_them():
    items = [f"dg{i:03d}" for i in range(20)]
    with FakeCluster(FakeConsul()) as cluster:
        leader = settled_two_node_cluster(cluster, items)
        published = cluster.fake.dump(FOLDER)
        owners = published_once(cluster.fake)
        victim = sorted(published)[0]
        before = leader.stats.reassignments
        with structlog.testing.capture_logs() as logs:
            cluster.fake.client().kv.put(victim, encode(leader.epoch + 7, decode(published[victim][0])))
            assert cluster.wait_until(lambda: leader.stats.reassignments > before, 10)
            gevent.sleep(0.5)
        assert [e["event"] for e in logs].count("assignments-changed-elsewhere") == 1
        assert leader.stats.reassignments == before + 1  # once: no loop on bytes it did not write
        assert published_once(cluster.fake) == owners
        assert cluster.converged(set(items))


def test_a_new_leaders_first_soak_counts_from_the_departure_it_saw_during_lock_delay():
    """A dead leader's key sits in lock-delay while its departure is already known: soaking a
    whole soak again after taking the key made a leader crash cost lock-delay + soak."""
    items = [f"dg{i:03d}" for i in range(30)]
    with FakeCluster(FakeConsul(), soak=1.0, lock_delay=1.5) as cluster:
        cluster.add_items(*items)
        first = cluster.add_node("a")
        assert cluster.wait_until(lambda: first.is_leader, 5)
        cluster.add_node("b")
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        started = time.monotonic()
        cluster.crash("a")
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        took = time.monotonic() - started
        assert took < 1.5 + 1.0, f"{took:.2f}s: lock-delay and a whole soak again"


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
        key = doc_key(KEYS, "a", bucket_of("x"))
        with pytest.raises(NotLeader):
            leader._write([TxnOp.set(key, encode(leader.epoch, ["x"]))])
        assert key not in cluster.fake.dump(FOLDER)
