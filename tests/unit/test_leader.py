"""An idle leader sleeps: its loop does not spin once the cluster has converged."""

from __future__ import annotations

import gevent

from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"item{i:03d}" for i in range(30)]


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
