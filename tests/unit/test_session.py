"""The session keeper: heartbeats, the lease they keep, and every way a session ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gevent
import pytest

from voltha_gevent.budget import FencingBudget
from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.retrying import Retrying
from voltha_gevent.session import SessionKeeper, SessionState
from voltha_gevent.testing.fake_consul import FakeConsul

#: trust 1.5 s -> lease 1.0 s, heartbeat 0.375 s
BUDGET = FencingBudget(session_ttl=10, check_ttl=1.5, lock_delay=2.0, stop_timeout=1.0)


@pytest.fixture
def fake() -> Iterator[FakeConsul]:
    with FakeConsul() as cluster:
        yield cluster


def keeper_for(fake: FakeConsul, budget: FencingBudget = BUDGET) -> SessionKeeper:
    api = ConsulAPI(fake.client(timeout=2.0))
    return SessionKeeper(api, Retrying(), name="t", budget=budget,
                         liveness_api=ConsulAPI(fake.client(timeout=budget.heartbeat)))


def test_renew_answered_404_declares_the_session_lost_at_once(fake: FakeConsul) -> None:
    keeper = keeper_for(fake)
    session_id = keeper.create()
    try:
        fake.expire_session(session_id)
        assert keeper.lost.wait(BUDGET.heartbeat + 0.5)
        assert keeper.state is SessionState.LOST
        assert "renew" in (keeper.last_loss_reason or "")
        assert not keeper.lease.valid()
    finally:
        keeper.destroy()


def test_lease_ends_when_the_servers_stop_answering_though_the_agent_passes_checks(fake: FakeConsul) -> None:
    """An agent cut off from its servers keeps accepting check passes; the servers drop the
    session (serfHealth). Only the renew tells the node: the lease must end on it alone."""
    keeper = keeper_for(fake)
    keeper.create()
    try:
        assert not keeper.lost.wait(3 * BUDGET.heartbeat), keeper.last_loss_reason
        passes = keeper.passes
        last_renew = keeper.confirmed["renew"]
        fake.set_servers_cut(True)
        assert keeper.lost.wait(BUDGET.lease + 1.0), "the lease outlived the servers"
        assert time.monotonic() - last_renew <= BUDGET.lease + 0.2
        assert keeper.passes > passes, "check passes kept succeeding: the agent was fine"
        assert "lease ran out" in (keeper.last_loss_reason or "")
    finally:
        fake.set_servers_cut(False)
        keeper.destroy()


def test_lease_ends_one_lease_after_the_last_confirmed_pass_when_the_agent_is_gone(fake: FakeConsul) -> None:
    keeper = keeper_for(fake)
    keeper.create()
    try:
        gevent.sleep(2 * BUDGET.heartbeat)
        fake.set_down(True)
        last = min(keeper.confirmed.values())
        assert keeper.lost.wait(BUDGET.lease + 1.0)
        ended = time.monotonic()
        assert last + BUDGET.lease <= ended <= last + BUDGET.lease + 0.2
        assert keeper.lease.deadline <= last + BUDGET.lease + 1e-6
    finally:
        fake.set_down(False)
        keeper.destroy()


def test_lease_counts_from_when_the_signal_was_sent_not_answered(fake: FakeConsul) -> None:
    """Consul resets its timers when a signal arrives, after it was sent: a slow answer must
    not stretch the lease past send time + lease."""
    keeper = keeper_for(fake)
    keeper.create()
    try:
        fake.set_latency(BUDGET.heartbeat * 0.8)
        gevent.sleep(3 * BUDGET.heartbeat)
        remaining = keeper.lease.deadline - time.monotonic()
        assert remaining <= BUDGET.lease - BUDGET.heartbeat * 0.8 + 0.05
    finally:
        fake.set_latency(0)
        keeper.destroy()


def test_durations_reach_consul_exactly(fake: FakeConsul) -> None:
    budget = FencingBudget(session_ttl=10, check_ttl=2.5, lock_delay=0.5, stop_timeout=0.5)
    keeper = keeper_for(fake, budget)
    session_id = keeper.create()
    try:
        assert fake.check_ttl(keeper.check_id or "") == 2.5
        assert fake.sessions()[session_id]["LockDelay"] == 500_000_000
    finally:
        keeper.destroy()


def test_marking_lost_never_halts_anything_in_the_calling_greenlet(fake: FakeConsul) -> None:
    keeper = keeper_for(fake)
    session_id = keeper.create()
    try:
        started = time.monotonic()
        keeper.mark_lost(session_id, "test")
        assert time.monotonic() - started < 0.01
        assert keeper.lost.is_set() and not keeper.lease.valid()
        keeper.mark_lost(session_id, "again")
        assert keeper.losses == 1
    finally:
        keeper.destroy()


def test_a_lost_session_is_destroyed_before_the_next_one_is_created(fake: FakeConsul) -> None:
    """After an outage Consul may still count the lost session alive (its TTL timers restart
    with a new Raft leader), and its owners/ locks held up the fenced items for up to 2 x TTL."""
    keeper = keeper_for(fake)
    first = keeper.create()
    keeper.mark_lost(first, "test")
    second = keeper.create()
    try:
        assert first not in fake.sessions()
        assert second in fake.sessions()
        assert keeper.lease.valid() and keeper.lease.generation == 2
    finally:
        keeper.destroy()
