"""Regressions found by the chaos suite: a node must fence as soon as Consul may have dropped it."""

from __future__ import annotations

import time

import gevent

from voltha_gevent.consul_api import ConsulAPI, Retrying
from voltha_gevent.session import SessionKeeper
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"item{i:02d}" for i in range(20)]


def test_session_lost_once_no_check_pass_succeeded_for_a_check_ttl() -> None:
    """The agent's check (or serfHealth of a dead agent) can invalidate the session after
    ``check_ttl``; waiting for a whole session TTL to declare it lost lets another node take
    over the items while this one still runs them (seen when a node's Consul server died)."""
    with FakeConsul() as fake:
        keeper = SessionKeeper(ConsulAPI(fake.client(timeout=2.0)), Retrying(), name="t", ttl=10,
                               lock_delay=0, check_ttl=1.0)
        keeper.create()
        try:
            assert not keeper.lost.wait(1.5), "lost while the check was being passed"
            fake.set_down(True)
            started = time.monotonic()
            assert keeper.lost.wait(2.0), "not lost within the check TTL of the last pass"
            assert time.monotonic() - started <= 1.2
        finally:
            fake.set_down(False)
            keeper.destroy()


def test_node_fences_its_work_within_the_check_ttl_when_its_agent_is_gone() -> None:
    with FakeCluster(FakeConsul(), check_ttl=1.0) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        cluster.fake.set_down(True)
        try:
            started = time.monotonic()
            assert cluster.wait_until(lambda: not cluster.ledger.owners(), 2.5), cluster.ledger.owners()
            assert time.monotonic() - started < 2.0
            assert node.coordinator.session.losses == 1
        finally:
            cluster.fake.set_down(False)
        gevent.sleep(0)


def test_a_lost_session_is_destroyed_before_the_next_one_is_created() -> None:
    """After an outage Consul may still count the lost session alive (its TTL timers restart
    with a new Raft leader), and its owners/ locks held up the fenced items for up to 2 x TTL."""
    with FakeConsul() as fake:
        api = ConsulAPI(fake.client(timeout=2.0))
        keeper = SessionKeeper(api, Retrying(), name="t", ttl=10, lock_delay=0)
        first = keeper.create()
        keeper.mark_lost(first, "test")
        second = keeper.create()
        try:
            sessions = fake.sessions()
            assert first not in sessions
            assert second in sessions
        finally:
            keeper.destroy()


def test_node_re_owns_its_items_at_once_after_a_loss_consul_did_not_see() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
        session = node.coordinator.session
        session.mark_lost(session.session_id, "test: renewals failed for a whole TTL")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 5), sorted(node.pending())
