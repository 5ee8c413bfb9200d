"""The heartbeat thread on a real agent: a busy event loop keeps its session, a wedged one does not.

The lease here is 2/3 s (check TTL 1 s). The main greenlet spins the CPU in pure Python
without yielding - exactly what parsing a huge listing or starting thousands of handlers does
to the loop - for several leases. With heartbeats as greenlets of that loop the session
would be lost; from their thread they go out on time. Past ``max_loop_stall`` the thread
stops signalling and the session ends, as for a frozen process.
"""

from __future__ import annotations

import time
import uuid

import gevent
import pytest

from voltha_gevent.budget import FencingBudget
from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.retrying import Retrying
from voltha_gevent.session import SessionKeeper

pytestmark = pytest.mark.consul

BUDGET = FencingBudget(session_ttl=10, check_ttl=1.0, lock_delay=1.0, stop_timeout=0.1)


def keeper_for(dev_agent, *, threaded: bool, max_loop_stall: float = 20.0) -> SessionKeeper:
    settings = ClientSettings(host=dev_agent.host, port=dev_agent.port)

    def liveness_api() -> ConsulAPI:
        return ConsulAPI(make_client(settings, BUDGET.lease))

    api = ConsulAPI(make_client(settings, 5.0))
    return SessionKeeper(api, Retrying(), name=f"hb-{uuid.uuid4().hex[:6]}", budget=BUDGET,
                         liveness_api=None if threaded else liveness_api(),
                         make_liveness_api=liveness_api if threaded else None, max_loop_stall=max_loop_stall)


def spin(seconds: float) -> None:
    """Hold the event loop (not the GIL for long): pure Python work that never yields."""
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(range(1000))


def settle(seconds: float) -> None:
    gevent.sleep(seconds)  # the loop runs: the lease timer and any loss get their turn


def test_a_busy_event_loop_keeps_its_session_when_heartbeats_have_their_thread(dev_agent) -> None:
    keeper = keeper_for(dev_agent, threaded=True)
    keeper.create()
    try:
        settle(1.0)
        renewals = keeper.renewals
        spin(4 * BUDGET.lease)
        assert keeper.renewals > renewals, "no renewal went out while the loop was busy"
        settle(1.0)
        assert keeper.losses == 0, keeper.last_loss_reason
        assert keeper.live and keeper.lease.valid()
        assert keeper.api.session_alive(keeper.session_id)
    finally:
        keeper.destroy()


def test_the_same_busy_loop_loses_the_session_when_heartbeats_are_greenlets(dev_agent) -> None:
    keeper = keeper_for(dev_agent, threaded=False)
    keeper.create()
    try:
        settle(1.0)
        spin(4 * BUDGET.lease)
        settle(0.5)
        assert keeper.losses == 1 and "stalled" in (keeper.last_loss_reason or ""), keeper.last_loss_reason
    finally:
        keeper.destroy()


def test_a_wedged_loop_gives_the_session_up_after_max_loop_stall(dev_agent) -> None:
    keeper = keeper_for(dev_agent, threaded=True, max_loop_stall=1.0)
    keeper.create()
    try:
        settle(1.0)
        spin(1.0 + 3 * BUDGET.lease)
        settle(0.5)
        reason = keeper.last_loss_reason or ""
        assert keeper.losses == 1 and "lease ran out" in reason, reason
        assert keeper.heartbeats is not None and keeper.heartbeats.stalled
    finally:
        keeper.destroy()


def test_destroy_ends_the_heartbeat_thread(dev_agent) -> None:
    keeper = keeper_for(dev_agent, threaded=True)
    keeper.create()
    heartbeats = keeper.heartbeats
    assert heartbeats is not None
    settle(0.5)
    keeper.destroy()
    assert heartbeats._done.is_set(), "the heartbeat thread outlived destroy()"
    renewals = keeper.renewals
    settle(3 * BUDGET.heartbeat)
    assert keeper.renewals == renewals
